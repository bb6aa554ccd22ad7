"""A user's photo folder as splits: layouts, groups held out whole, bad photos skipped and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetune.errors import UsageError
from edgetune.export.data.images import load_image_splits


def _photo(path: Path, value: int) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((12, 16, 3), value, np.uint8))


def test_groups_named_in_file_names_never_straddle_splits(tmp_path):
    for label in ("ant", "bee"):
        for who in range(8):
            for k in range(3):
                _photo(tmp_path / label / f"{label}{who}__{k}.png", 10 * who + k)
    splits = load_image_splits(tmp_path, seed=1)
    groups = {s: set(splits.sets[s].groups) for s in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert sum(len(splits.sets[s]) for s in groups) == 48
    assert splits.description["groups"] == "file names (<group>__...)"
    assert all(len(splits.sets[s]) > 0 for s in groups)


def test_a_groups_csv_takes_precedence_and_must_cover_every_photo(tmp_path):
    rows = ["file,group"]
    for label in ("cat", "dog"):
        for i in range(9):
            _photo(tmp_path / label / f"{i}.png", i)
            rows.append(f"{label}/{i}.png,{label}-owner{i // 3}")
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    splits = load_image_splits(tmp_path)
    assert splits.description["groups"] == "groups.csv"
    train = set(splits.sets["train"].groups)
    assert not train & (set(splits.sets["val"].groups) | set(splits.sets["test"].groups))
    (tmp_path / "groups.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(UsageError, match=r"groups.csv has no group for 1 photos \(first: dog/8.png\)"):
        load_image_splits(tmp_path)


def test_split_folders_are_respected_and_a_corrupt_photo_is_skipped_and_named(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("a", "b"):
            for i in range(n):
                _photo(tmp_path / split / label / f"{i}.png", i)
    (tmp_path / "train" / "a" / "bad.jpg").write_bytes(b"not a photo")
    splits = load_image_splits(tmp_path)
    assert [len(splits.sets[s]) for s in ("train", "val", "test")] == [8, 4, 4]
    assert splits.label_names == ("a", "b")
    assert [Path(s["path"]).name for s in splits.description["skipped"]] == ["bad.jpg"]


def test_a_label_with_one_photo_is_refused_with_the_folder_named(tmp_path):
    for i in range(4):
        _photo(tmp_path / "a" / f"{i}.png", i)
    _photo(tmp_path / "b" / "0.png", 0)
    with pytest.raises(UsageError, match=r"label 'b' has 1 usable photo\(s\) in .*b; a label needs at least 2"):
        load_image_splits(tmp_path)
