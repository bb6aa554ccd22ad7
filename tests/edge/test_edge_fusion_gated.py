"""The device's gated fused head (edge/fusion/gated.py) against the contract's formula."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.contract import tensors
from edgetune.edge.fusion import GatedHead, load_fused_head
from edgetune.edge.head import Head

SPLITS = (5, 7)
LABELS = ("a", "b", "c")


def _arrays(seed: int = 0, splits: tuple[int, ...] = SPLITS, n_classes: int = len(LABELS)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, m = sum(splits), len(splits)
    return {tensors.HEAD_WEIGHT: rng.standard_normal((n_classes, d)).astype(np.float32),
            tensors.HEAD_BIAS: rng.standard_normal(n_classes).astype(np.float32),
            tensors.GATE_WEIGHT: rng.standard_normal((m, d)).astype(np.float32),
            tensors.GATE_BIAS: rng.standard_normal(m).astype(np.float32),
            tensors.INPUT_MEAN: rng.standard_normal(d).astype(np.float32),
            tensors.INPUT_SCALE: rng.uniform(0.5, 3.0, d).astype(np.float32)}


def _head(arrays: dict[str, np.ndarray], splits: tuple[int, ...] = SPLITS) -> GatedHead:
    return GatedHead(**arrays, labels=LABELS[: arrays[tensors.HEAD_WEIGHT].shape[0]], splits=splits)


def test_gated_head_matches_the_contract_formula_in_torch():
    torch = pytest.importorskip("torch")
    # Prepare: random arrays and inputs; the formula of contract/tensors.py written out in torch, float64.
    arrays = _arrays(1)
    x = np.random.default_rng(2).standard_normal((16, sum(SPLITS))).astype(np.float32) * 3.0
    t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in arrays.items()}
    z = (torch.from_numpy(x.astype(np.float64)) - t[tensors.INPUT_MEAN]) / t[tensors.INPUT_SCALE]
    g = torch.softmax(z @ t[tensors.GATE_WEIGHT].T + t[tensors.GATE_BIAS], dim=1)
    parts = torch.split(z, list(SPLITS), dim=1)
    fused = torch.cat([len(SPLITS) * g[:, m:m + 1] * part for m, part in enumerate(parts)], dim=1)
    want_p = torch.softmax(fused @ t[tensors.HEAD_WEIGHT].T + t[tensors.HEAD_BIAS], dim=1).numpy()

    # Execute
    head = _head(arrays)
    got_p, got_g = head.predict_proba(x), head.gates(x)

    # Assert
    assert got_p.dtype == np.float32 and got_p.shape == (16, len(LABELS))
    np.testing.assert_allclose(got_p, want_p, atol=1e-5)
    np.testing.assert_allclose(got_g, g.numpy(), atol=1e-5)
    np.testing.assert_allclose(got_g.sum(axis=1), 1.0, atol=1e-6)


def test_equal_gates_reduce_to_the_linear_head_on_z():
    arrays = _arrays(3)
    arrays[tensors.GATE_WEIGHT] = np.zeros_like(arrays[tensors.GATE_WEIGHT])
    arrays[tensors.GATE_BIAS] = np.full(len(SPLITS), 0.7, np.float32)  # equal logits: equal gates
    x = np.random.default_rng(4).standard_normal((9, sum(SPLITS))).astype(np.float32)
    z = (x - arrays[tensors.INPUT_MEAN]) / arrays[tensors.INPUT_SCALE]

    gated = _head(arrays)
    linear = Head(arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS], LABELS)

    np.testing.assert_allclose(gated.gates(x), 1.0 / len(SPLITS), atol=1e-7)
    np.testing.assert_allclose(gated.predict_proba(x), linear.predict_proba(z), atol=1e-6)
    assert gated.predict(x) == linear.predict(z)


def test_one_embedding_gives_one_row():
    head = _head(_arrays(5))
    x = np.random.default_rng(6).standard_normal(sum(SPLITS)).astype(np.float32)
    assert head.predict_proba(x).shape == (len(LABELS),)
    assert head.gates(x).shape == (len(SPLITS),)
    np.testing.assert_allclose(head.predict_proba(x), head.predict_proba(x[None])[0])
    assert head.embedding_size == sum(SPLITS) and head.n_inputs == len(SPLITS)


@pytest.mark.parametrize(("change", "message"), [
    ({"splits": (5, 6)}, r"splits \[5, 6\].*summing to the weight's width 12"),
    ({"splits": (12,)}, r"two or more positive widths"),
    ({tensors.GATE_WEIGHT: np.zeros((3, 12), np.float32)}, r"gate_weight has shape \[3, 12\]; expected \[2, 12\]"),
    ({tensors.GATE_BIAS: np.zeros(3, np.float32)}, r"gate_bias has shape \[3\]; expected \[2\]"),
    ({tensors.INPUT_MEAN: np.zeros(11, np.float32)}, r"input_mean has shape \[11\]; expected \[12\]"),
    ({tensors.INPUT_SCALE: np.r_[np.zeros(1), np.ones(11)].astype(np.float32)}, r"input_scale has 1 values <= 0"),
    ({tensors.HEAD_BIAS: np.zeros(2, np.float32)}, r"head bias has shape"),
    ({tensors.GATE_BIAS: np.array([np.nan, 0.0], np.float32)}, r"gate_bias contains NaN"),
])
def test_bad_arrays_are_refused_with_a_clear_message(change, message):
    arrays = _arrays(7)
    splits = change.pop("splits", SPLITS)
    arrays.update(change)
    with pytest.raises(ValueError, match=message):
        _head(arrays, splits)


def test_an_input_of_the_wrong_width_is_refused():
    head = _head(_arrays(8))
    with pytest.raises(ValueError, match=r"fused embeddings have shape \[4, 11\]; expected \[B, 12\].*\[5, 7\]"):
        head.predict_proba(np.zeros((4, 11), np.float32))
    with pytest.raises(ValueError, match=r"expected \[B, 12\]"):
        head.gates(np.zeros((2, 3, 12), np.float32))


def test_load_fused_head_builds_either_kind():
    arrays = _arrays(9)
    gated = load_fused_head(arrays, "gated", LABELS, SPLITS)
    concat = load_fused_head({k: arrays[k] for k in (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS)}, "concat", LABELS,
                             SPLITS)
    assert isinstance(gated, GatedHead) and gated.splits == SPLITS and gated.labels == LABELS
    assert isinstance(concat, Head) and concat.embedding_size == sum(SPLITS)


@pytest.mark.parametrize(("fusion", "keys", "splits", "message"), [
    ("gated", (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS), SPLITS, r"missing \['gate_weight'"),
    ("concat", tensors.GATED_HEAD_ARRAYS, SPLITS, r"unexpected \['gate_bias'"),
    ("sum", (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS), SPLITS,
     r"fusion is 'sum'; expected one of \['concat', 'gated'\]"),
    ("concat", (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS), (4, 7), r"concat head splits \[4, 7\]"),
])
def test_load_fused_head_refuses_what_does_not_fit(fusion, keys, splits, message):
    arrays = _arrays(10)
    with pytest.raises(ValueError, match=message):
        load_fused_head({k: arrays[k] for k in keys}, fusion, LABELS, splits)
