"""On-device augmentation of enrolment clips: gain, additive noise, time shift, speed change.

When a device enrols a new word from a handful of clips, each clip is turned into ``copies``
perturbed copies before its embeddings go to the head fit, so the head sees a little of the
variation that other takes, rooms and microphones bring. NumPy only (it runs on the device) and
deterministic: copy ``k`` of clip ``i`` depends only on ``(seed, k, i)`` and the clip, so asking
for more copies keeps the first ones, and a refit from the same clips gives the same head.

The ranges below are moderate, set before the study; ``benchmarks/study_enrollment.py`` then
measured each kind alone and together (espeak-ng voices as a stand-in for speakers, the
``speech_embedding`` backbone, 5 clips per word from one voice): speed change helps most, then
noise; gain and shift little; all four with 4 copies per clip add about 2 points over none, 8
copies a little more. Noise hurt where the enrolment audio was already noisy and the target
audio clean (scenario C there), so :func:`augment_clips` takes the kinds to apply. Each kind, on
every copy, in this order:

- speed: the clip is read back at ``rate`` times its speed, ``rate`` uniform in
  :data:`SPEED_RANGE` (tape-style: duration and pitch change together), by linear interpolation;
- time shift: uniform in +/- :data:`SHIFT_MAX_MS`, among the shifts that keep the clip's active
  part (its 10 ms frames within :data:`ACTIVE_FLOOR_DB` of the loudest) inside the clip;
- gain: uniform in :data:`GAIN_DB_RANGE` dB, then clipped to [-1, 1];
- noise: white or pink Gaussian noise at an SNR drawn from :data:`NOISE_SNR_DB` (against the
  RMS of the clip's active part, so leading and trailing silence do not dilute it).

Speed and shift move the active part around its centre; where the copy would read from beyond
the clip's ends, it reads the clip's quiet part (the samples before and after the active part)
in a loop, so the copy keeps the clip's length and background instead of getting a stretch of
digital zeros or a piece of the word. The active part itself never wraps: where a slowed-down
active part would run past an end, it is moved inward just enough (even beyond
:data:`SHIFT_MAX_MS`, or with shift off).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

#: The augmentations :func:`augment_clips` knows, in the order they are applied.
KINDS = ("speed", "shift", "gain", "noise")
#: Playback rate of the speed change (1.0 = unchanged; 1.1 = 10 % faster and higher).
SPEED_RANGE = (0.88, 1.12)
#: Largest time shift, milliseconds, either way.
SHIFT_MAX_MS = 150.0
#: Gain range, dB.
GAIN_DB_RANGE = (-10.0, 6.0)
#: Signal-to-noise ratios of the additive noise, dB (one drawn per copy).
NOISE_SNR_DB = (10.0, 20.0, 30.0)
#: Noise colours: spectral slope of the power spectrum, dB per octave.
NOISE_COLOURS = {"white": 0.0, "pink": -3.0}
#: A 10 ms frame belongs to the clip's active part if within this many dB of the loudest frame.
ACTIVE_FLOOR_DB = -35.0
#: Frame length for finding the active part, milliseconds.
FRAME_MS = 10.0


def augment_clips(clips: np.ndarray, rate_hz: int, copies: int, seed: int,
                  kinds: Iterable[str] = KINDS) -> tuple[np.ndarray, np.ndarray]:
    """The clips and ``copies`` augmented copies of each.

    Args:
        clips: float32 [N, S] mono PCM in [-1, 1], all of one length.
        rate_hz: their sample rate (to turn the millisecond ranges into samples).
        copies: augmented copies per clip, >= 0.
        seed: copy ``k`` of clip ``i`` is a function of ``(seed, k, i)`` and the clip alone.
        kinds: which augmentations to apply, a subset of :data:`KINDS` (default: all).

    Returns:
        (audio float32 [N * (1 + copies), S], groups int64 [N * (1 + copies)]): rows ``0..N-1``
        are the clips unchanged, then the first copy of every clip, then the second, ...;
        ``groups[r]`` is the index of the clip row ``r`` came from (``tile(arange(N), 1 + copies)``),
        for cross-validation that keeps a clip and its copies on one side.
    """
    x = np.asarray(clips)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"clips have shape {x.shape}; expected [N, S] with N >= 1 and S >= 1")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"clips have dtype {x.dtype}; expected float PCM in [-1, 1]")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("clips contain NaN or Inf")
    if not (isinstance(copies, (int, np.integer)) and copies >= 0):
        raise ValueError(f"copies is {copies!r}; expected an integer >= 0")
    if not (isinstance(rate_hz, (int, np.integer)) and rate_hz > 0):
        raise ValueError(f"rate_hz is {rate_hz!r}; expected a positive integer")
    chosen = tuple(kinds)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ValueError(f"augmentation kinds {unknown} unknown; expected some of {list(KINDS)}")
    n, s = x.shape
    out = np.empty((n * (1 + copies), s), dtype=np.float32)
    out[:n] = x
    spans = [_active_span(clip, rate_hz) for clip in x]
    for k in range(1, copies + 1):
        for i in range(n):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k, i])
            out[k * n + i] = _augment_one(x[i], spans[i], rate_hz, chosen, rng)
    groups = np.tile(np.arange(n, dtype=np.int64), 1 + copies)
    return out, groups


def _active_span(clip: np.ndarray, rate_hz: int) -> tuple[int, int, float]:
    """(start, stop, rms): the samples from the first to the last active frame, and their RMS."""
    frame = max(1, int(round(rate_hz * FRAME_MS / 1000.0)))
    n_frames = max(1, clip.size // frame)
    energy = np.square(clip[: n_frames * frame].astype(np.float64)).reshape(n_frames, -1).mean(axis=1)
    peak = float(energy.max())
    if peak <= 0.0:  # silence: nothing is active; the whole clip may move
        return 0, 0, 0.0
    active = energy >= peak * 10.0 ** (ACTIVE_FLOOR_DB / 10.0)
    idx = np.flatnonzero(active)
    start, stop = int(idx[0]) * frame, min(clip.size, (int(idx[-1]) + 1) * frame)
    level = float(np.sqrt(energy[active].mean()))
    return start, stop, level


def _augment_one(clip: np.ndarray, span: tuple[int, int, float], rate_hz: int, kinds: tuple[str, ...],
                 rng: np.random.Generator) -> np.ndarray:
    s = clip.size
    start, stop, level = span
    # Draw every parameter whether or not its kind is on, so that turning one kind off leaves the
    # others' draws unchanged (an ablation compares like with like).
    rate = rng.uniform(*SPEED_RANGE)
    shift_frac = rng.uniform(-1.0, 1.0)
    gain_db = rng.uniform(*GAIN_DB_RANGE)
    snr_db = float(NOISE_SNR_DB[rng.integers(len(NOISE_SNR_DB))])
    colour = list(NOISE_COLOURS)[rng.integers(len(NOISE_COLOURS))]
    noise = rng.standard_normal(s)

    y = clip.astype(np.float64)
    use_speed, use_shift = "speed" in kinds, "shift" in kinds
    if use_speed or use_shift:
        length = stop - start
        r = rate if use_speed else 1.0
        r = max(r, length / max(s - 1, 1))  # slowed down, the active part must still fit the clip
        centre = 0.5 * (start + stop) if stop > start else 0.5 * s
        half = 0.5 * length / r  # half the active part's length after the speed change
        # shifts that keep [centre + shift - half, centre + shift + half] inside the clip
        need_lo, need_hi = half - centre, (s - 1) - centre - half
        shift = min(max(0.0, need_lo), need_hi)  # no shift, or just enough to stay inside
        if use_shift:
            limit = SHIFT_MAX_MS * rate_hz / 1000.0
            lo, hi = max(-limit, need_lo), min(limit, need_hi)
            if lo <= hi:
                shift = lo + (shift_frac + 1.0) * 0.5 * (hi - lo)
        # output sample j reads the input at centre + (j - centre - shift) * r (linear interpolation)
        pos = centre + (np.arange(s) - centre - shift) * r
        inside = (pos >= 0.0) & (pos <= s - 1)
        p_in = pos[inside]
        left = np.minimum(np.floor(p_in).astype(np.int64), s - 2) if s > 1 else np.zeros(p_in.size, np.int64)
        frac = p_in - left
        out = np.empty(s)
        out[inside] = y[left] * (1.0 - frac) + y[np.minimum(left + 1, s - 1)] * frac
        # positions outside the clip read its quiet part (before and after the active part) in a loop
        quiet = np.concatenate([y[:start], y[stop:]]) if stop > start else y
        n_out = s - int(inside.sum())
        out[~inside] = quiet[np.arange(n_out) % quiet.size] if quiet.size else 0.0
        y = out
    if "gain" in kinds:
        g = 10.0 ** (gain_db / 20.0)
        y = y * g
        level *= g
    if "noise" in kinds and level > 0.0:
        if NOISE_COLOURS[colour] != 0.0:
            spectrum = np.fft.rfft(noise)
            freqs = np.fft.rfftfreq(s)
            freqs[0] = freqs[1] if s > 2 else 1.0
            spectrum *= freqs ** (NOISE_COLOURS[colour] / (20.0 * np.log10(2.0)))
            noise = np.fft.irfft(spectrum, n=s)
        noise_rms = float(np.sqrt(np.mean(noise ** 2)))
        if noise_rms > 0.0:
            y = y + noise * (level * 10.0 ** (-snr_db / 20.0) / noise_rms)
    return np.clip(y, -1.0, 1.0).astype(np.float32)
