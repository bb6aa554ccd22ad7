"""Embeddings of a folder of labelled audio files: the input of enrolment and evaluation.

Every file is read as one clip (:func:`~edgetune.edge.audio.io.load_clip`) and embedded with the
bundle's front-end and embedder on the whole clip, in batches. A file that cannot be used is
skipped and reported by name; it never stops the rest.

Memory is bounded on any folder: a file longer than
:data:`~edgetune.edge.audio.io.MAX_CLIP_FILE_S` seconds is skipped from its header, without
being decoded; :func:`embed_folder` holds one batch of clips at a time (and the embeddings);
:func:`read_folder`, which holds every clip for enrolment, takes at most
:data:`MAX_ENROLL_FILES` files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edgetune.errors import UsageError

from .audio.io import AudioFileError, LabelledFiles, SkippedFile, iter_labelled_folder, load_clip
from .audio.models import DEFAULT_BATCH, AudioModels

log = logging.getLogger(__name__)

#: The most files :func:`read_folder` reads (enrolment: a few clips per label; each clip is
#: held in memory, with its augmented copies). About 130 MB of one-second 16 kHz clips.
MAX_ENROLL_FILES = 2000


@dataclass(frozen=True, eq=False)
class FolderEmbeddings:
    """``embeddings`` float32 [N, D] of the readable files, their ``labels`` and ``paths`` (N
    each), and the files ``skipped`` with the reason."""

    embeddings: np.ndarray
    labels: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class FolderClips:
    """``clips`` float32 [N, clip_samples] of the readable files, their ``labels`` and ``paths``
    (N each), and the files ``skipped`` with the reason."""

    clips: np.ndarray
    labels: tuple[str, ...]
    paths: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]

    def __len__(self) -> int:
        return len(self.labels)


def _readable(data_dir: str | os.PathLike[str], rate_hz: int, clip_samples: int,
              skipped: list[SkippedFile], listing: LabelledFiles | None = None
              ) -> Iterator[tuple[str, str, np.ndarray]]:
    """(label, path, clip float32 [clip_samples]) of each readable file; the others go to ``skipped``.

    Raises :class:`UsageError` at the end when no file at all could be read.
    """
    listing = listing if listing is not None else iter_labelled_folder(data_dir)
    skipped.extend(listing.skipped)
    n_read = 0
    for label, path in listing:
        try:
            clip = load_clip(path, rate_hz, clip_samples)
        except AudioFileError as exc:
            log.warning("skipping %s", exc)
            skipped.append(SkippedFile(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        n_read += 1
        yield label, str(path), clip
    if not n_read:
        first = next(s for s in skipped if s.path in {str(p) for _, p in listing})
        raise UsageError(f"data folder {listing.root}: none of its {len(listing)} audio files could be read; "
                         f"the first: {first.path}: {first.reason}")


def read_folder(data_dir: str | os.PathLike[str], rate_hz: int, clip_samples: int, *,
                max_files: int = MAX_ENROLL_FILES) -> FolderClips:
    """Every audio file under ``data_dir/<label>/`` as one clip at ``rate_hz``, all in memory
    (enrolment folders: a few clips per label). A folder of more than ``max_files`` audio files
    is refused with :class:`UsageError` before any is read."""
    listing = iter_labelled_folder(data_dir)
    if len(listing) > max_files:
        raise UsageError(f"data folder {data_dir} holds {len(listing)} audio files; enrolment reads at most "
                         f"{max_files} (every clip is held in memory; a few per label are enough): enrol from a "
                         "smaller folder")
    skipped: list[SkippedFile] = []
    rows = list(_readable(data_dir, rate_hz, clip_samples, skipped, listing))
    return FolderClips(np.stack([c for _, _, c in rows]), tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                       tuple(skipped))


def embed_folder(models: AudioModels, data_dir: str | os.PathLike[str], *,
                 batch_size: int = DEFAULT_BATCH) -> FolderEmbeddings:
    """Embed every audio file under ``data_dir/<label>/``, ``batch_size`` clips in memory at a time.

    Raises :class:`UsageError` when the folder holds no readable audio file at all.
    """
    skipped: list[SkippedFile] = []
    parts: list[np.ndarray] = []
    labels: list[str] = []
    paths: list[str] = []
    clips: list[np.ndarray] = []
    for label, path, clip in _readable(data_dir, models.rate_hz, models.clip_samples, skipped):
        clips.append(clip)
        labels.append(label)
        paths.append(path)
        if len(clips) >= batch_size:
            parts.append(models.embed_clips(np.stack(clips), batch_size=batch_size))
            clips.clear()
    if clips:
        parts.append(models.embed_clips(np.stack(clips), batch_size=batch_size))
    return FolderEmbeddings(np.concatenate(parts), tuple(labels), tuple(paths), tuple(skipped))
