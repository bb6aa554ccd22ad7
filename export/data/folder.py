"""A folder-per-label dataset (a user's real data) as arrays, with a report of what was skipped.

Layout: ``DIR/<label>/<file>`` (WAV, FLAC, OGG, ... anything libsndfile reads; subfolders of a
label folder are searched too). Reading, mono mixdown, resampling (soxr) and fitting to the clip
length are the device's own (:mod:`edgetune.edge.audio.io`), so the workstation trains on clips
exactly as the device will cut them: a short recording is centred in zeros, a long one gives
its ``clip_samples`` window with the most energy.

Files that cannot be used (unreadable, truncated, empty, NaN samples, not audio) are skipped,
counted and listed by name in :attr:`FolderDataset.skipped`; loading never stops on one bad file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgetune.edge.audio.io import AudioFileError, SkippedFile, iter_labelled_folder, load_clip
from edgetune.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderDataset:
    """Clips of a labelled folder.

    ``audio`` float32 ``[n, clip_samples]`` in [-1, 1]; ``labels`` int64 ``[n]`` indexing
    ``label_names``; ``paths[i]`` the file of clip ``i``; ``skipped`` the files left out and why.
    """

    audio: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def report(self) -> str:
        """One line per skipped file after a summary line, for a person to read."""
        lines = [f"{len(self)} clips in {len(self.label_names)} labels; {len(self.skipped)} files skipped"]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def load_labelled_folder(data_dir: Path, *, sample_rate_hz: int, clip_samples: int,
                         label_names: Sequence[str] | None = None) -> FolderDataset:
    """Read every audio file under ``data_dir/<label>/`` as one clip.

    ``label_names`` fixes the label order (e.g. a bundle head's labels); a folder whose label is
    not among them is skipped with a reason. Without it, the labels found are used, sorted.
    Raises :class:`UsageError` when the folder is missing or no file could be used.
    """
    files = iter_labelled_folder(data_dir)
    names = tuple(label_names) if label_names is not None else files.labels
    index = {name: i for i, name in enumerate(names)}
    audio, labels, paths = [], [], []
    skipped = list(files.skipped)
    for label, path in files:
        if label not in index:
            skipped.append(SkippedFile(str(path), f"label {label!r} is not one of {list(names)}"))
            continue
        try:
            clip = load_clip(path, sample_rate_hz, clip_samples)
        except AudioFileError as exc:
            skipped.append(SkippedFile(str(path), str(exc).replace(f"{path}: ", "", 1)))
            continue
        audio.append(clip)
        labels.append(index[label])
        paths.append(str(path))
    for s in skipped[len(files.skipped):]:
        log.warning("skipping %s: %s", s.path, s.reason)
    if not audio:
        raise UsageError(f"no usable audio in {data_dir}: {len(skipped)} files skipped "
                         f"(first: {skipped[0].path}: {skipped[0].reason})" if skipped else f"no audio in {data_dir}")
    return FolderDataset(audio=np.stack(audio).astype(np.float32), labels=np.asarray(labels, dtype=np.int64),
                         label_names=names, paths=tuple(paths), skipped=tuple(skipped))
