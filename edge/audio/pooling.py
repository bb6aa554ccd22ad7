"""Pooling of a clip's embedding sequence into the head's input vector.

The ``speech_embedding`` backbone gives one 96-d vector per 76-frame window, the window stepped
by 8 frames (80 ms), so a clip is a sequence ``[E, D]``. The head is linear on one vector per
clip; :func:`pool` makes it. Kinds (``D`` the embedding size, ``E`` the sequence length):

- ``mean``: the mean over time, ``[D]``; blind to order and to where the word is in the clip.
- ``max``: the per-dimension maximum over time, ``[D]``.
- ``mean_max``: mean and maximum side by side, ``[2D]``.
- ``mean_std``: mean and standard deviation side by side, ``[2D]``.
- ``seg2``, ``seg3``: the sequence cut into 2 or 3 consecutive parts of (nearly) equal length,
  each averaged, side by side, ``[2D]`` / ``[3D]``: coarse time order, some tolerance to shifts.
- ``flat``: the whole sequence, flattened, ``[E*D]``: full time order, no tolerance to shifts.

``benchmarks/study_enrollment.py`` compares them for enrolment from a few clips (espeak-ng
voices as a stand-in for speakers, clips of 1.5 s, E = 9): max and mean_max beat mean by about 4
points on single words; segments and flat lose 5 to 15 points (the word's place in the clip
varies, so time order is noise to a head fitted on a few clips). Better than any of them on
single words: fit on the windows (:func:`window_samples`) and infer with ``mean``. On two-word
phrases longer than one window (0.76 s), windows see only one of the words, and plain ``mean``
(or ``seg2``) was best.
"""

from __future__ import annotations

import numpy as np

#: The pooling kinds :func:`pool` accepts.
KINDS = ("mean", "max", "mean_max", "mean_std", "seg2", "seg3", "flat")
_SEGMENTS = {"seg2": 2, "seg3": 3}


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a ValueError naming the allowed ones."""
    if kind not in KINDS:
        raise ValueError(f"pooling kind is {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def pooled_size(kind: str, sequence_length: int, embedding_size: int) -> int:
    """The width of :func:`pool`'s output for sequences ``[E, D]``."""
    check_kind(kind)
    e, d = int(sequence_length), int(embedding_size)
    if kind in ("mean", "max"):
        return d
    if kind in ("mean_max", "mean_std"):
        return 2 * d
    if kind in _SEGMENTS:
        return _SEGMENTS[kind] * d
    return e * d


def pool(sequence: np.ndarray, kind: str) -> np.ndarray:
    """Pool embedding sequences: float [B, E, D] -> float32 [B, D'] (see the module's kinds).

    A single sequence [E, D] gives [D'].
    """
    check_kind(kind)
    x = np.asarray(sequence, dtype=np.float32)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"embedding sequence has shape {np.shape(sequence)}; expected [B, E, D] or [E, D] "
                         "with E >= 1 and D >= 1")
    b, e, d = x.shape
    if kind == "mean":
        out = x.mean(axis=1)
    elif kind == "max":
        out = x.max(axis=1)
    elif kind == "mean_max":
        out = np.concatenate([x.mean(axis=1), x.max(axis=1)], axis=1)
    elif kind == "mean_std":
        out = np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)
    elif kind in _SEGMENTS:
        k = _SEGMENTS[kind]
        if e < k:
            raise ValueError(f"pooling {kind!r} needs sequences of at least {k} embeddings; these have {e}")
        out = np.concatenate([part.mean(axis=1) for part in np.array_split(x, k, axis=1)], axis=1)
    else:  # flat
        out = x.reshape(b, e * d)
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out[0] if single else out


def window_samples(sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every window of every clip as a fit sample: [B, E, D] -> (float32 [B*E, D], source int64 [B*E]).

    ``source[r]`` is the clip row ``r`` came from (its label and group are the clip's). A head
    fitted on these and applied to ``pool(sequence, "mean")`` scores a clip by the mean of its
    windows' logits (for a linear head the two are the same), so the device's inference is plain
    mean pooling; the fit sees E times the samples, each window a slightly different view of the
    word. In ``benchmarks/study_enrollment.py`` this beat fitting on the clips' means.
    """
    x = np.asarray(sequence, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"embedding sequence has shape {x.shape}; expected [B, E, D] with B, E, D >= 1")
    b, e, d = x.shape
    return np.ascontiguousarray(x.reshape(b * e, d)), np.repeat(np.arange(b, dtype=np.int64), e)
