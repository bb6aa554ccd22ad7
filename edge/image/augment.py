"""Augmented copies of enrolment photos, on the device, in NumPy.

A few photos of a new object are a few viewpoints; copies that a camera could also have given
widen them: a mirror image, a tighter crop (the object nearer), a crop off-centre, a darker and
a brighter exposure. Copy ``k`` of a photo is always the same transform (deterministic in
``seed``), and the sizes may change: the embedder graph resizes whatever it gets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The transforms, in the order copies use them.
KINDS = ("mirror", "crop", "crop_mirror", "exposure")


def _crop(frame: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    h, w = frame.shape[:2]
    ch, cw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return frame[top:top + ch, left:left + cw]


def augment_photo(frame: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One transformed copy of a uint8 [H, W, 3] photo."""
    if kind == "mirror":
        return np.ascontiguousarray(frame[:, ::-1])
    if kind == "crop":
        return np.ascontiguousarray(_crop(frame, float(rng.uniform(0.75, 0.9)), rng))
    if kind == "crop_mirror":
        return np.ascontiguousarray(_crop(frame, float(rng.uniform(0.75, 0.9)), rng)[:, ::-1])
    if kind == "exposure":
        gain = float(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.15, 1.4)]))
        return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    raise ValueError(f"augmentation kind {kind!r}; expected one of {list(KINDS)}")


def augment_photos(frames: Sequence[np.ndarray], copies: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The photos, then ``copies`` transformed copies of each: (photos, group [N * (1 + copies)])
    where ``group[i]`` is the index of the photo row ``i`` came from. The originals come first."""
    rng = np.random.default_rng(seed)
    out = list(frames)
    groups = list(range(len(frames)))
    for k in range(copies):
        kind = KINDS[k % len(KINDS)]
        for i, frame in enumerate(frames):
            out.append(augment_photo(frame, kind, rng))
            groups.append(i)
    return out, np.asarray(groups, dtype=np.int64)
