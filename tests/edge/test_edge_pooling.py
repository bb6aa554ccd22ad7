"""Pooling of the embedding sequence into the head's input (``edge.audio.pooling``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.edge.audio.pooling import KINDS, pool, pooled_size, window_samples


def _seq(b: int = 3, e: int = 5, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, e, d)).astype(np.float32)


def test_mean_max_and_mean_std_values():
    x = _seq()
    np.testing.assert_allclose(pool(x, "mean"), x.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(pool(x, "max"), x.max(axis=1))
    mm = pool(x, "mean_max")
    np.testing.assert_allclose(mm[:, :4], x.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(mm[:, 4:], x.max(axis=1))
    ms = pool(x, "mean_std")
    np.testing.assert_allclose(ms[:, 4:], x.std(axis=1), rtol=1e-5)


def test_segments_average_consecutive_parts():
    x = np.arange(5, dtype=np.float32)[None, :, None] * np.ones((1, 1, 2), np.float32)  # E=5, value = time
    np.testing.assert_allclose(pool(x, "seg2"), [[1.0, 1.0, 3.5, 3.5]])  # [0,1,2] and [3,4]
    np.testing.assert_allclose(pool(x, "seg3"), [[0.5, 0.5, 2.5, 2.5, 4.0, 4.0]])  # [0,1] [2,3] [4]


def test_flat_keeps_time_order_and_mean_does_not():
    x = _seq(b=1)
    rev = x[:, ::-1]
    np.testing.assert_allclose(pool(x, "mean"), pool(rev, "mean"), rtol=1e-6)
    assert not np.allclose(pool(x, "flat"), pool(rev, "flat"))
    np.testing.assert_array_equal(pool(x, "flat"), x.reshape(1, -1))
    assert not np.allclose(pool(x, "seg2"), pool(rev, "seg2"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_shape_dtype_and_single_sequence(kind):
    x = _seq(b=2, e=9, d=96)
    out = pool(x, kind)
    assert out.dtype == np.float32 and out.shape == (2, pooled_size(kind, 9, 96))
    assert out.flags.c_contiguous
    np.testing.assert_allclose(pool(x[1], kind), out[1], rtol=1e-6)  # [E, D] -> [D']


def test_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        pool(_seq(), "attention")
    for kind in KINDS:
        assert kind in str(err.value)
    assert "'attention'" in str(err.value)
    with pytest.raises(ValueError, match="mean_max"):
        pooled_size("avg", 9, 96)


def test_bad_shapes_and_short_sequences():
    with pytest.raises(ValueError, match=r"\[B, E, D\]"):
        pool(np.zeros(5, np.float32), "mean")
    with pytest.raises(ValueError, match=r"\[B, E, D\]"):
        pool(np.zeros((2, 0, 4), np.float32), "mean")
    with pytest.raises(ValueError, match="at least 3"):
        pool(_seq(e=2), "seg3")


def test_window_samples_and_mean_inference_agree_for_a_linear_head():
    x = _seq(b=3, e=4, d=6)
    rows, source = window_samples(x)
    assert rows.shape == (12, 6) and rows.dtype == np.float32
    np.testing.assert_array_equal(source, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(rows[5], x[1, 1])
    w = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    b = np.array([0.1, -0.2, 0.3], np.float32)
    window_logits = (rows @ w.T + b).reshape(3, 4, 3).mean(axis=1)
    np.testing.assert_allclose(pool(x, "mean") @ w.T + b, window_logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="B, E, D"):
        window_samples(x[0])
