"""On-device augmentation of enrolment clips (``edge.audio.augment``): real behaviour of each kind."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.edge.audio import augment
from edgetune.edge.audio.augment import augment_clips

RATE = 16000


def _burst(n_samples: int, start_s: float, stop_s: float, freq_hz: float = 440.0, amp: float = 0.5,
           noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A tone burst in silence (or in faint noise), float32 [n_samples]."""
    t = np.arange(n_samples) / RATE
    x = np.where((t >= start_s) & (t < stop_s), amp * np.sin(2 * np.pi * freq_hz * t), 0.0)
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(n_samples)
    return x.astype(np.float32)


def _clips() -> np.ndarray:
    return np.stack([_burst(RATE, 0.3, 0.6, 440.0), _burst(RATE, 0.4, 0.8, 660.0, 0.3),
                     _burst(RATE, 0.2, 0.5, 300.0, 0.8)])


def _active(x: np.ndarray, floor_db: float = -30.0) -> tuple[int, int]:
    """First and last 10 ms frame index within floor_db of the loudest frame."""
    e = np.square(x[: x.size // 160 * 160].astype(np.float64)).reshape(-1, 160).mean(axis=1)
    idx = np.flatnonzero(e >= e.max() * 10 ** (floor_db / 10))
    return int(idx[0]), int(idx[-1])


def test_shapes_dtype_groups_and_originals_first():
    clips = _clips()
    out, groups = augment_clips(clips, RATE, copies=3, seed=1)
    assert out.shape == (4 * 3, RATE) and out.dtype == np.float32
    assert groups.dtype == np.int64
    np.testing.assert_array_equal(groups, [0, 1, 2] * 4)
    np.testing.assert_array_equal(out[:3], clips)  # the originals, unchanged, come first
    for r in range(3, out.shape[0]):  # every copy differs from its own original
        original = clips[groups[r]]
        assert not np.allclose(out[r], original, atol=1e-3), r
        assert np.max(np.abs(out[r])) <= 1.0
    assert np.isfinite(out).all()


def test_deterministic_in_seed_and_prefix_stable():
    clips = _clips()
    a, _ = augment_clips(clips, RATE, copies=2, seed=7)
    b, _ = augment_clips(clips, RATE, copies=2, seed=7)
    c, _ = augment_clips(clips, RATE, copies=2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[3:], c[3:], atol=1e-3)
    more, _ = augment_clips(clips, RATE, copies=5, seed=7)  # more copies keep the first ones
    np.testing.assert_array_equal(more[: a.shape[0]], a)
    alone, _ = augment_clips(clips[1:2], RATE, copies=2, seed=7)  # a copy depends on its own clip only...
    assert not np.array_equal(alone[1], a[4])  # ...and its index (clip 1 here is row 0)


def test_no_copies_returns_the_clips():
    clips = _clips()
    out, groups = augment_clips(clips, RATE, copies=0, seed=0)
    np.testing.assert_array_equal(out, clips)
    np.testing.assert_array_equal(groups, [0, 1, 2])


def test_gain_alone_scales_by_a_gain_in_range():
    clips = _clips() * 0.5  # headroom: +6 dB must not clip
    out, groups = augment_clips(clips, RATE, copies=6, seed=3, kinds=("gain",))
    lo, hi = augment.GAIN_DB_RANGE
    gains = []
    for r in range(3, out.shape[0]):
        x = clips[groups[r]]
        g = float(out[r] @ x / (x @ x))
        np.testing.assert_allclose(out[r], g * x, atol=1e-6)  # a pure scaling
        gains.append(20 * np.log10(g))
    assert lo - 1e-6 <= min(gains) and max(gains) <= hi + 1e-6
    assert np.ptp(gains) > 1.0  # not one fixed gain


def test_noise_alone_is_additive_at_the_documented_snrs():
    clips = _clips()
    out, groups = augment_clips(clips, RATE, copies=8, seed=4, kinds=("noise",))
    snrs = set()
    for r in range(3, out.shape[0]):
        x = clips[groups[r]]
        residual = out[r].astype(np.float64) - x
        start, stop = _active(x)
        word = x[start * 160:(stop + 1) * 160]
        snr = 20 * np.log10(np.sqrt(np.mean(word.astype(np.float64) ** 2)) / np.sqrt(np.mean(residual ** 2)))
        nearest = min(augment.NOISE_SNR_DB, key=lambda v: abs(v - snr))
        assert abs(snr - nearest) < 1.0, snr  # the SNR against the active part, as documented
        snrs.add(nearest)
        assert np.std(residual[: 2000]) > 0  # noise also fills the silence
    assert len(snrs) >= 2


def test_shift_alone_moves_the_clip_in_range():
    clips = _clips()
    out, groups = augment_clips(clips, RATE, copies=8, seed=5, kinds=("shift",))
    limit = augment.SHIFT_MAX_MS * RATE / 1000
    lags = []
    for r in range(3, out.shape[0]):
        x = clips[groups[r]].astype(np.float64)
        corr = np.fft.irfft(np.fft.rfft(out[r]) * np.conj(np.fft.rfft(x)), n=x.size)
        lag = int(np.argmax(corr))
        lag = lag - x.size if lag > x.size // 2 else lag
        assert abs(lag) <= limit + 1
        lags.append(lag)
        # the same burst, moved: energy and peak kept (linear interpolation smooths a little)
        assert np.isclose(np.sum(out[r].astype(np.float64) ** 2), np.sum(x ** 2), rtol=0.05)
    assert len(set(lags)) > 3 and max(abs(v) for v in lags) > limit / 4


def test_speed_alone_changes_the_duration_in_range():
    clips = _clips()
    out, groups = augment_clips(clips, RATE, copies=8, seed=6, kinds=("speed",))
    lo, hi = augment.SPEED_RANGE
    ratios = []
    for r in range(3, out.shape[0]):
        a0, a1 = _active(clips[groups[r]])
        b0, b1 = _active(out[r])
        ratio = (a1 - a0 + 1) / (b1 - b0 + 1)  # playback rate ~ old duration / new duration
        assert lo - 0.08 <= ratio <= hi + 0.08, ratio
        ratios.append(ratio)
        # pitch moves with speed: the dominant frequency scales by the same rate
        f_in = np.argmax(np.abs(np.fft.rfft(clips[groups[r]])))
        f_out = np.argmax(np.abs(np.fft.rfft(out[r])))
        assert f_out / f_in == pytest.approx(ratio, rel=0.1)
    assert max(ratios) - min(ratios) > 0.05


def test_active_part_never_wraps_around():
    # a burst close to the end: speed and shift must not carry any of it round to the start
    clip = _burst(RATE, 0.80, 0.97, 500.0, 0.6)[None]
    out, _ = augment_clips(clip, RATE, copies=20, seed=9, kinds=("speed", "shift"))
    for r in range(1, out.shape[0]):
        assert np.max(np.abs(out[r, : int(0.5 * RATE)])) < 1e-6, r
        assert np.max(np.abs(out[r])) > 0.5


def test_all_kinds_clip_to_range_and_keep_length():
    loud = np.clip(_burst(8000, 0.1, 0.4, 200.0, 0.99, noise=0.01), -1, 1)[None]
    out, _ = augment_clips(loud, 8000, copies=10, seed=2)
    assert out.shape == (11, 8000)
    assert np.max(np.abs(out)) <= 1.0


def test_silent_clip_is_handled():
    out, _ = augment_clips(np.zeros((1, 4000), dtype=np.float32), RATE, copies=2, seed=0)
    assert out.shape == (3, 4000) and np.isfinite(out).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(kinds=("gain", "reverb")), "reverb"),
    (dict(copies=-1), "copies"),
    (dict(copies=1.5), "copies"),
    (dict(rate_hz=0), "rate_hz"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(clips=_clips(), rate_hz=RATE, copies=1, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        augment_clips(**args)


def test_bad_clips_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        augment_clips(np.zeros(100, dtype=np.float32), RATE, 1, 0)
    with pytest.raises(ValueError, match="dtype"):
        augment_clips(np.zeros((2, 100), dtype=np.int16), RATE, 1, 0)
    bad = _clips()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        augment_clips(bad, RATE, 1, 0)
