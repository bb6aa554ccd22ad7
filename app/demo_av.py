"""The demo's second modality and its fusion: handwritten digits seen while spoken digits are heard.

- *Photos*: scikit-learn's handwritten digits (real, 13 writers; contiguous index blocks stand
  in for held-out writers, ``export/fusion/pairs.py``) as a folder per label, the layout of a
  user's photos, with ``_background_`` photos of blank paper; ``export train --modality image``
  trains the image bundle on them.
- *Pairs*: each spoken digit of the audio bundle's own data (its voices, its splits) with a
  handwritten one of the same class; a non-digit word or background clip with blank paper is
  ``_background_``. The fused heads (concat and gated, ``export/fusion``) are fitted on them and
  the report compares them with each modality alone, clean and with one modality corrupted.
- *Camera*: a folder of frames that shows the handwritten digit while it is spoken in the demo
  stream, and blank paper otherwise: the device's camera source (``images:DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgetune.contract.tensors import BACKGROUND_LABEL

#: Photos per label and split written for the image bundle (the digits are ~1800 in all).
PHOTOS_PER_LABEL = {"train": 80, "val": 15, "test": 10}
#: Frames per second of the demo camera, and how long a digit stays in view after it is spoken.
CAMERA_FPS = 5.0
SHOW_S = 1.8
#: The camera's detection threshold: the image head's L2 (chosen by the one-standard-error rule
#: on held-out writers) keeps its posteriors soft, a median top score of about 0.4 on new writers.
CAMERA_THRESHOLD = 0.4
FUSED_LABELS_NOTE = "the ten digits and _background_"


@dataclass(frozen=True)
class PhotoSet:
    frames: list[np.ndarray]
    labels: list[str]


def blank_paper(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A photo of blank paper: near white, a little noise (the camera with nothing to read)."""
    grey = np.clip(rng.normal(245, 6, size=(size, size, 1)), 0, 255)
    return np.repeat(grey, 3, axis=2).astype(np.uint8)


def digit_photos(seed: int = 0, per_label: dict[str, int] = PHOTOS_PER_LABEL) -> dict[str, PhotoSet]:
    """Handwritten digits per split (writer blocks of their own), ``per_label`` of each digit,
    as many blank-paper photos as ``_background_``."""
    from edgetune.export.data.speech import DIGITS
    from edgetune.export.fusion.pairs import PairConfig, load_digit_frames

    rng = np.random.default_rng([seed, 5])
    out = {}
    for split, (frames, labels, _) in load_digit_frames(PairConfig(seed=seed)).items():
        chosen_frames, chosen_labels = [], []
        for d, word in enumerate(DIGITS):
            idx = rng.permutation(np.flatnonzero(labels == d))[:per_label[split]]
            chosen_frames += [frames[i] for i in idx]
            chosen_labels += [word] * idx.size
        for _ in range(per_label[split]):
            chosen_frames.append(blank_paper(rng))
            chosen_labels.append(BACKGROUND_LABEL)
        out[split] = PhotoSet(chosen_frames, chosen_labels)
    return out


def write_photo_folder(root: Path, sets: dict[str, PhotoSet]) -> Path:
    """``root/<split>/<label>/<n>.png``: the layout ``export train --modality image --data`` reads."""
    import cv2

    for split, s in sets.items():
        for n, (frame, label) in enumerate(zip(s.frames, s.labels)):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{n:04d}.png"), frame[:, :, ::-1])
    return root


def fusion_pairs(clipsets: dict[str, Any], photos: dict[str, PhotoSet], seed: int = 0,
                 background_clips: int = 40) -> dict[str, Any]:
    """Same-class pairs per split: a digit clip with a handwritten digit; a non-digit clip (another
    word, noise) with blank paper as ``_background_`` (``background_clips`` of them per split)."""
    from edgetune.export.data.speech import DIGITS
    from edgetune.export.fusion.pairs import PairSet, pair_indices

    names = DIGITS + (BACKGROUND_LABEL,)
    out = {}
    for index, split in enumerate(("train", "val", "test")):
        rng = np.random.default_rng([seed, index, 17])
        clips = clipsets[split]
        words = [clips.label_names[i] for i in clips.labels]
        digit = np.array([w in DIGITS for w in words])
        other = rng.permutation(np.flatnonzero(~digit))[:background_clips]
        keep = np.concatenate([np.flatnonzero(digit), other])
        a_lab = np.array([names.index(words[i]) if digit[i] else len(DIGITS) for i in keep], dtype=np.int64)
        p = photos[split]
        i_lab = np.array([names.index(label) for label in p.labels], dtype=np.int64)
        ai, ii, y = pair_indices(a_lab, i_lab, rng)
        voices = tuple(clips.voices[i] if clips.voices else "" for i in keep)
        out[split] = PairSet(source_clips=clips.audio[keep], source_voices=voices, source_frames=np.stack(p.frames),
                             source_blocks=np.zeros(len(p.frames), np.int64), audio_index=ai, image_index=ii,
                             labels=y, label_names=names)
    return out


def write_camera(truth: Sequence[Any], photos: PhotoSet, out_dir: Path, stream_s: float, *, seed: int = 0,
                 fps: float = CAMERA_FPS, show_s: float = SHOW_S) -> list[Any]:
    """Frames at ``fps`` over ``stream_s`` seconds: for ``show_s`` after each spoken digit starts,
    a held-out handwritten photo of it; blank paper otherwise. Returns the digits shown (the
    truth for the camera and the fused heads)."""
    import cv2

    from edgetune.export.data.speech import DIGITS

    rng = np.random.default_rng([seed, 23])
    by_label: dict[str, list[np.ndarray]] = {}
    for frame, label in zip(photos.frames, photos.labels):
        by_label.setdefault(label, []).append(frame)
    shown = [t for t in truth if t.label in DIGITS]
    chosen = {i: by_label[t.label][int(rng.integers(len(by_label[t.label])))] for i, t in enumerate(shown)}
    out_dir.mkdir(parents=True, exist_ok=True)
    for n in range(int(stream_s * fps) + 1):
        t = n / fps
        frame = next((chosen[i] for i, s in enumerate(shown) if s.start_s <= t < s.start_s + show_s), None)
        cv2.imwrite(str(out_dir / f"{n:05d}.png"), (frame if frame is not None else blank_paper(rng))[:, :, ::-1])
    return shown


def train_fused_heads(pairs: dict[str, Any], audio_embed, image_embed, seed: int = 0):
    """The fusion study on the pairs (``export/fusion/report.py``): every head fitted on train with
    L2 on val, scored on test clean and with one modality corrupted. Returns the study."""
    from edgetune.export.fusion.heads import FusionFitConfig
    from edgetune.export.fusion.report import run_fusion_study

    return run_fusion_study(pairs, audio_embed, image_embed, config=FusionFitConfig(seed=seed))
