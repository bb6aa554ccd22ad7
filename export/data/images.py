"""A user's folder of labelled photos as train / val / test splits that hold out whole groups.

Layout: ``DIR/<label>/<photo>`` or ``DIR/{train,val,test}/<label>/<photo>`` (split folders are
respected; a missing ``val`` or ``test`` is carved from ``train``). Photos are decoded by the
device's own reader (:mod:`edgetune.edge.image.io`), so the workstation trains on the pixels the
device will see.

Photos of one object, person or session look alike; a split that puts some in train and some in
test measures memory, not transfer. So when the data says who or what made each photo, whole
groups are held out:

- ``DIR/groups.csv`` with columns ``file,group`` (``file`` relative to ``DIR``), or else
- file names of the form ``<group>__<anything>.jpg`` (two underscores), when every photo has one.

Without groups, each label's photos are split 70/15/15 with a seeded RNG, as for audio.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.edge.audio.io import SkippedFile
from edgetune.edge.image.io import decode_photos, iter_image_folder
from edgetune.errors import UsageError

from .folder import SPLIT_FRACTIONS, SPLITS, order_labels

log = logging.getLogger(__name__)

GROUPS_CSV = "groups.csv"
GROUP_SEPARATOR = "__"


@dataclass(frozen=True)
class ImageSet:
    """Photos of one split: ``frames`` uint8 RGB, ``labels`` int64 [n] into the label names,
    ``paths``, ``groups`` (who or what made each photo; the path when unknown)."""

    frames: tuple[np.ndarray, ...]
    labels: np.ndarray
    paths: tuple[str, ...]
    groups: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def subset(self, idx: np.ndarray) -> "ImageSet":
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        return ImageSet(tuple(self.frames[i] for i in idx), self.labels[idx], tuple(self.paths[i] for i in idx),
                        tuple(self.groups[i] for i in idx))


@dataclass(frozen=True)
class ImageSplits:
    """train / val / test photos with the same ``label_names``, and how they were made (JSON-ready)."""

    sets: dict[str, ImageSet]
    label_names: tuple[str, ...]
    description: dict[str, Any]


def _read_groups_csv(root: Path) -> dict[str, str]:
    path = root / GROUPS_CSV
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"file", "group"} <= set(reader.fieldnames):
            raise UsageError(f"{path}: columns {reader.fieldnames}; expected a header with 'file' and 'group'")
        for n, row in enumerate(reader, start=2):
            if not row["file"] or not row["group"]:
                raise UsageError(f"{path} line {n}: file {row['file']!r}, group {row['group']!r}; expected both")
            out[Path(row["file"]).as_posix()] = row["group"]
    return out


def _groups(root: Path, paths: list[Path]) -> tuple[list[str], str]:
    """Each photo's group and where the groups came from."""
    table = _read_groups_csv(root)
    if table:
        rel = [p.relative_to(root).as_posix() for p in paths]
        missing = [r for r in rel if r not in table]
        if missing:
            raise UsageError(f"{root / GROUPS_CSV} has no group for {len(missing)} photos (first: {missing[0]}); "
                             "expected one row per photo")
        return [table[r] for r in rel], GROUPS_CSV
    if paths and all(GROUP_SEPARATOR in p.stem for p in paths):
        return [p.stem.split(GROUP_SEPARATOR, 1)[0] for p in paths], "file names (<group>__...)"
    return [str(p) for p in paths], "none (each photo its own group)"


def _carve_groups(labels: np.ndarray, groups: list[str], carved: list[str],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices per split with whole groups in one split; groups are shuffled and dealt so each
    split gets about its share of photos (train keeps at least one group of every label)."""
    total = SPLIT_FRACTIONS["train"] + sum(SPLIT_FRACTIONS[s] for s in carved)
    order = list(dict.fromkeys(groups[i] for i in rng.permutation(len(groups))))
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out: dict[str, list[int]] = {s: [] for s in ("train", *carved)}
    target = {s: SPLIT_FRACTIONS[s] / total * len(groups) for s in carved}
    for g in order:
        need = [s for s in sorted(carved, key=lambda s: s != "test") if len(out[s]) < target[s]]
        labels_in_train = set(labels[out["train"]].tolist())
        new_label = bool(set(labels[members[g]].tolist()) - labels_in_train)
        split = need[0] if need and not new_label else "train"
        out[split].extend(members[g])
    return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}


def load_image_splits(data_dir: Path, *, seed: int = 0) -> ImageSplits:
    """Read ``data_dir`` as train / val / test photos (see the module's docstring for layouts and groups).

    Raises :class:`UsageError` naming the folder when a label has no usable training photo, a
    label of a flat folder has fewer than 2 photos, or no val or test photo is left.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist or is not a folder; expected DIR/<label>/<photo>.jpg "
                         "or DIR/{train,val,test}/<label>/<photo>.jpg")
    explicit = (root / "train").is_dir()
    present = [s for s in SPLITS if (root / s).is_dir()] if explicit else []
    folders = {s: root / s for s in present} if explicit else {"": root}
    listed = {key: iter_image_folder(folder) for key, folder in folders.items()}
    names = order_labels(label for found in listed.values() for label in found.labels)
    index = {n: i for i, n in enumerate(names)}
    skipped: list[SkippedFile] = []
    loaded: dict[str, ImageSet] = {}
    group_source = ""
    for key, found in listed.items():
        photos = decode_photos(found)  # the device's own decoder
        skipped += photos.skipped
        labels = [index[label] for label in photos.labels]
        paths = [Path(p) for p in photos.paths]
        frames = photos.frames
        groups, group_source = _groups(root, paths)
        loaded[key] = ImageSet(tuple(frames), np.asarray(labels, dtype=np.int64), tuple(map(str, paths)),
                               tuple(groups))
    source = loaded["train" if explicit else ""]
    counts = np.bincount(source.labels, minlength=len(names))
    lacking = [names[i] for i in range(len(names)) if counts[i] < (1 if explicit else 2)]
    if lacking:
        raise UsageError(f"label {lacking[0]!r} has {int(counts[index[lacking[0]]])} usable photo(s) in "
                         f"{(root / 'train' if explicit else root) / lacking[0]}; a label needs at least "
                         f"{1 if explicit else 2} there" + (f"; so do {lacking[1:]}" if lacking[1:] else ""))
    carved = [s for s in ("val", "test") if s not in present]
    sets = {s: loaded[s] for s in present}
    note: dict[str, Any] = {}
    if carved:
        parts = _carve_groups(source.labels, list(source.groups), carved, np.random.default_rng(seed))
        sets.update({s: source.subset(idx) for s, idx in parts.items()})
        note = {"made_here": carved, "seed": seed, "fractions": dict(SPLIT_FRACTIONS), "groups": group_source,
                "files": {s: [str(Path(p).relative_to(root)) for p in sets[s].paths] for s in carved}}
    for split in ("val", "test"):
        if not len(sets[split]):
            raise UsageError(f"no {split} photos could be held out of {root}: too few photos or groups; add photos "
                             f"or give DIR/{split}/<label>/ folders")
    shared = set(sets["train"].groups) & (set(sets["val"].groups) | set(sets["test"].groups))
    if shared and group_source != "none (each photo its own group)":
        log.warning("groups %s appear in train and in a held-out split (the split folders say so)", sorted(shared)[:5])
    description = {
        "source": "labelled photo folder", "path": str(root.resolve()),
        "layout": "split folders (DIR/<split>/<label>/)" if explicit else "one folder per label (DIR/<label>/)",
        "labels": list(names), "groups": group_source,
        "counts": {s: {n: int(np.sum(sets[s].labels == i)) for i, n in enumerate(names)} for s in SPLITS},
        "skipped": [s.to_json() for s in skipped],
    }
    if note:
        description["split"] = note
    return ImageSplits(sets={s: sets[s] for s in SPLITS}, label_names=names, description=description)
