"""A folder-per-label dataset (a user's real data) as arrays, with a report of what was skipped.

Layout: ``DIR/<label>/<file>`` (WAV, FLAC, OGG, ... anything libsndfile reads; subfolders of a
label folder are searched too). Reading, mono mixdown, resampling (soxr) and fitting to the clip
length are the device's own (:mod:`edgetune.edge.audio.io`), so the workstation trains on clips
exactly as the device will cut them: a short recording is centred in zeros, a long one gives
its ``clip_samples`` window with the most energy.

Files that cannot be used (unreadable, truncated, empty, NaN samples, not audio) are skipped,
counted and listed by name in :attr:`FolderDataset.skipped`; loading never stops on one bad file.

:func:`load_folder_splits` turns such a folder (or ``DIR/{train,val,test}/<label>/``) into the
train / val / test splits a training run needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from edgetune.edge.audio.io import AudioFileError, SkippedFile, iter_labelled_folder, load_clip
from edgetune.contract import tensors
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


#: The split folders ``edgetune export prepare-data`` writes (``DIR/<split>/<label>/``).
SPLITS = ("train", "val", "test")
#: Shares of each label's files when a flat folder is split here (stratified per label).
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


def order_labels(names: Iterable[str]) -> tuple[str, ...]:
    """Labels sorted, with ``_background_`` first when present (the head's background label)."""
    names = set(names)
    first = (tensors.BACKGROUND_LABEL,) if tensors.BACKGROUND_LABEL in names else ()
    return first + tuple(sorted(names - set(first)))


@dataclass(frozen=True)
class FolderSplits:
    """A folder's train / val / test clips (``splits``, same ``label_names`` in each) and how they were made.

    ``description`` is JSON-ready for a bundle's provenance: the folder, its layout, the clip
    count per split and label, the files skipped and why, and for a split made here its seed and
    the held-out (val and test) files.
    """

    splits: dict[str, FolderDataset]
    label_names: tuple[str, ...]
    description: dict[str, Any]


def _label_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _subset(dataset: FolderDataset, idx: np.ndarray) -> FolderDataset:
    idx = np.sort(idx)
    return FolderDataset(audio=dataset.audio[idx], labels=dataset.labels[idx], label_names=dataset.label_names,
                         paths=tuple(dataset.paths[i] for i in idx), skipped=())


def _carve(labels: np.ndarray, n_labels: int, carved: Sequence[str],
           rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices per split (``train`` and each of ``carved``), stratified per label.

    Each label keeps at least one training file; when it has enough files, every carved split
    gets at least one (``test`` before ``val`` when there are too few for both).
    """
    total = SPLIT_FRACTIONS["train"] + sum(SPLIT_FRACTIONS[s] for s in carved)
    out: dict[str, list[np.ndarray]] = {s: [] for s in ("train", *carved)}
    for c in range(n_labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        budget, start = len(idx) - 1, 0
        for split in sorted(carved, key=lambda s: s != "test"):
            count = min(max(int(round(SPLIT_FRACTIONS[split] / total * len(idx))), 1), budget)
            out[split].append(idx[start:start + count])
            budget, start = budget - count, start + count
        out["train"].append(idx[start:])
    return {s: np.concatenate(parts).astype(np.int64) for s, parts in out.items()}


def load_folder_splits(data_dir: Path, *, sample_rate_hz: int, clip_samples: int, seed: int = 0) -> FolderSplits:
    """Read a user's labelled folder as train / val / test clips.

    - ``DIR/train/<label>/`` (and optionally ``val/``, ``test/``; the layout ``prepare-data``
      writes): those folders are the splits; a missing ``val`` or ``test`` is carved from
      ``train`` as below.
    - otherwise ``DIR/<label>/``: each label's files are split 70/15/15 with a seeded RNG
      (``seed``); a label with at least 3 files gets at least one val and one test file, and a
      label needs at least 2 files (one to train on, one to test on).

    Labels are the label folders found in any split, sorted, ``_background_`` first.
    Raises :class:`UsageError` naming the folder when a label folder holds no usable audio, when
    a label has no training files or (flat layout) fewer than 2 files, or when no val or test
    clip is left.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist or is not a folder; expected DIR/<label>/<file>.wav "
                         "or DIR/{train,val,test}/<label>/<file>.wav")
    load = dict(sample_rate_hz=sample_rate_hz, clip_samples=clip_samples)
    explicit = (root / "train").is_dir()
    present = [s for s in SPLITS if (root / s).is_dir()] if explicit else []
    folders = {s: root / s for s in present} if explicit else {"": root}
    label_dirs = {key: _label_dirs(folder) for key, folder in folders.items()}
    names = order_labels(name for found in label_dirs.values() for name in found)
    loaded = {key: load_labelled_folder(folder, label_names=names, **load) for key, folder in folders.items()}

    for key, dataset in loaded.items():
        counts = np.bincount(dataset.labels, minlength=len(names))
        empty = [str(folders[key] / name) for i, name in enumerate(names)
                 if name in label_dirs[key] and not counts[i]]
        if empty:
            raise UsageError(f"label folder {empty[0]} holds no usable audio files"
                             + (f" (nor do {', '.join(empty[1:])})" if empty[1:] else "")
                             + "; add audio files or remove the folder")
    if explicit:
        missing = [names[i] for i in range(len(names)) if not np.any(loaded["train"].labels == i)]
        if missing:
            raise UsageError(f"labels {missing} have no training files; expected audio in "
                             + ", ".join(str(root / "train" / m) for m in missing))
        source = loaded["train"]
    else:
        source = loaded[""]
        counts = np.bincount(source.labels, minlength=len(names))
        few = [names[i] for i in range(len(names)) if counts[i] < 2]
        if few:
            raise UsageError(f"label {few[0]!r} has {int(counts[names.index(few[0])])} usable file(s) in "
                             f"{root / few[0]}; a label needs at least 2 (one to train on, one to test on)"
                             + (f"; so do {few[1:]}" if few[1:] else ""))

    carved = [s for s in ("val", "test") if s not in present]
    splits = {s: loaded[s] for s in present}
    split_note: dict[str, Any] = {}
    if carved:
        parts = _carve(source.labels, len(names), carved, np.random.default_rng(seed))
        splits.update({s: _subset(source, idx) for s, idx in parts.items()})
        split_note = {"made_here": carved, "from": "train" if explicit else ".", "seed": seed,
                      "fractions": dict(SPLIT_FRACTIONS), "stratified": "per label",
                      "files": {s: [str(Path(p).relative_to(root)) for p in splits[s].paths] for s in carved}}
    for split in ("val", "test"):
        if not len(splits[split]):
            raise UsageError(f"no {split} clips could be held out of {root}: every label has fewer than 3 files; "
                             f"add files or give DIR/{split}/<label>/ folders")
    skipped = [s for dataset in loaded.values() for s in dataset.skipped]
    description = {
        "source": "labelled folder",
        "path": str(root.resolve()),
        "layout": "split folders (DIR/<split>/<label>/)" if explicit else "one folder per label (DIR/<label>/)",
        "labels": list(names),
        "counts": {s: {name: int(np.sum(splits[s].labels == i)) for i, name in enumerate(names)} for s in SPLITS},
        "skipped": [s.to_json() for s in skipped],
        "sample_rate_hz": sample_rate_hz,
        "clip_samples": clip_samples,
    }
    if split_note:
        description["split"] = split_note
    return FolderSplits(splits={s: splits[s] for s in SPLITS}, label_names=names, description=description)
