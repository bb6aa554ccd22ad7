"""Corruptions of the raw inputs: what a failing microphone or camera gives the device.

They act on the raw inputs -- PCM clips and uint8 frames -- before any embedding, so the fused
heads are trained and tested on what the backbones make of a broken sensor, not on a guess of it
in embedding space.

- audio ``noise``: white Gaussian noise at the clip's own RMS (a loud hiss where the word was);
  ``silence``: all zeros (a muted or unplugged microphone).
- image ``blank``: every pixel one grey (a covered lens, a dead feed); ``noise``: uniform random
  pixels (a broken sensor or a garbled stream).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

AUDIO_CORRUPTIONS = ("noise", "silence")
IMAGE_CORRUPTIONS = ("blank", "noise")
#: Grey level of a blank frame (uint8).
BLANK_GREY = 128
_MIN_RMS = 1e-4  # a clip quieter than this gets noise at this RMS, so "noise" never becomes silence


def _check_kind(kind: str, allowed: tuple[str, ...], what: str) -> None:
    if kind not in allowed:
        raise ValueError(f"{what} corruption is {kind!r}; expected one of {list(allowed)}")


def corrupt_audio(clips: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Clips float32 [N, samples] -> corrupted copies, float32 [N, samples] (``kind``: module docstring)."""
    _check_kind(kind, AUDIO_CORRUPTIONS, "audio")
    x = np.asarray(clips, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"clips have shape {list(x.shape)}; expected float32 [N, samples]")
    if kind == "silence":
        return np.zeros_like(x)
    rms = np.maximum(np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True)), _MIN_RMS)
    noise = rng.standard_normal(x.shape) * rms
    return np.clip(noise, -1.0, 1.0).astype(np.float32)


def corrupt_frames(frames: Sequence[np.ndarray], kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames (uint8 [H, W, 3] each) -> corrupted copies of the same shapes (``kind``: module docstring)."""
    _check_kind(kind, IMAGE_CORRUPTIONS, "image")
    out = []
    for i, frame in enumerate(frames):
        f = np.asarray(frame)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frame {i} is {f.dtype} {list(f.shape)}; expected uint8 [H, W, 3]")
        if kind == "blank":
            out.append(np.full(f.shape, BLANK_GREY, dtype=np.uint8))
        else:
            out.append(rng.integers(0, 256, size=f.shape, dtype=np.uint8))
    return out
