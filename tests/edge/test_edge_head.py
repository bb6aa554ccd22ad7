"""The NumPy head: posteriors, and the refit that learns, keeps old classes and adds new ones."""

import numpy as np
import pytest

from edgetune.edge.head import Head, fit_head, predict_proba

D = 32


def _blobs(n_per_class, labels, seed, spread=1.0, centres=None):
    rng = np.random.default_rng(seed)
    centres = centres if centres is not None else {lab: rng.normal(0, 3, D) for lab in labels}
    x = np.concatenate([centres[lab] + spread * rng.standard_normal((n_per_class, D)) for lab in labels])
    y = [lab for lab in labels for _ in range(n_per_class)]
    return x.astype(np.float32), y, centres


def _accuracy(w, b, labels, x, y):
    pred = np.argmax(predict_proba(x, w, b), axis=1)
    return float(np.mean([labels[i] == t for i, t in zip(pred, y)]))


def test_predict_proba_rows_are_distributions():
    rng = np.random.default_rng(0)
    head = Head(rng.standard_normal((3, D)), rng.standard_normal(3), ("a", "b", "c"))
    p = head.predict_proba(rng.standard_normal((5, D)).astype(np.float32))
    assert p.shape == (5, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_fit_learns_separable_classes_from_scratch():
    x, y, centres = _blobs(30, ("a", "b", "c"), seed=0)
    w, b, labels = fit_head(x, y)
    test_x, test_y, _ = _blobs(20, ("a", "b", "c"), seed=1, centres=centres)
    assert labels == ("a", "b", "c") and w.shape == (3, D) and w.dtype == np.float32
    assert _accuracy(w, b, labels, test_x, test_y) == 1.0


def test_fit_is_deterministic():
    x, y, _ = _blobs(10, ("a", "b"), seed=2)
    first = fit_head(x, y)
    second = fit_head(x, y)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_new_label_is_added_after_the_old_ones_and_replay_keeps_old_classes():
    # Prepare: a head fitted on a, b, c; then samples of a new class only, plus replay.
    old_x, old_y, centres = _blobs(30, ("a", "b", "c"), seed=3)
    w0, b0, labels0 = fit_head(old_x, old_y)
    new_x, new_y, new_centres = _blobs(12, ("d",), seed=4)
    replay = (old_x[::5], old_y[::5])
    # Execute
    w, b, labels = fit_head(new_x, new_y, init_weight=w0, init_bias=b0, init_labels=labels0, replay=replay)
    # Assert: old classes still recognised on fresh samples, the new one too.
    test_x, test_y, _ = _blobs(20, ("a", "b", "c"), seed=5, centres=centres)
    new_test_x, new_test_y, _ = _blobs(20, ("d",), seed=6, centres=new_centres)
    assert labels == ("a", "b", "c", "d")
    assert _accuracy(w, b, labels, test_x, test_y) >= 0.95
    assert _accuracy(w, b, labels, new_test_x, new_test_y) == 1.0


def test_replay_is_what_keeps_an_old_class_next_to_a_new_one():
    # Prepare: a new class 'd' close to the old class 'a'; fit on 'd' samples only.
    old_x, old_y, centres = _blobs(30, ("a", "b", "c"), seed=3)
    w0, b0, labels0 = fit_head(old_x, old_y)
    direction = np.random.default_rng(8).standard_normal(D)
    centres["d"] = centres["a"] + 4.0 * direction / np.linalg.norm(direction)
    new_x, new_y, _ = _blobs(12, ("d",), seed=4, centres=centres)
    test_a, test_a_y, _ = _blobs(20, ("a",), seed=5, centres=centres)
    init = {"init_weight": w0, "init_bias": b0, "init_labels": labels0}
    # Execute
    forgetful = fit_head(new_x, new_y, **init)
    kept = fit_head(new_x, new_y, replay=(old_x[::3], old_y[::3]), **init)
    # Assert: without replay 'a' is swallowed by 'd'; with it, 'a' is mostly kept.
    assert _accuracy(*forgetful, test_a, test_a_y) < 0.2
    assert _accuracy(*kept, test_a, test_a_y) >= 0.8


def test_balancing_lets_a_few_new_samples_count_against_a_large_replay_set():
    # Prepare: a new class 'd' near 'a' with 4 samples, against 60 replayed samples per old class.
    old_x, old_y, centres = _blobs(60, ("a", "b", "c"), seed=3)
    w0, b0, labels0 = fit_head(old_x, old_y)
    direction = np.random.default_rng(9).standard_normal(D)
    centres["d"] = centres["a"] + 4.0 * direction / np.linalg.norm(direction)
    new_x, new_y, _ = _blobs(4, ("d",), seed=10, centres=centres)
    test_d, test_d_y, _ = _blobs(40, ("d",), seed=11, centres=centres)
    test_a, test_a_y, _ = _blobs(40, ("a",), seed=12, centres=centres)
    init = {"init_weight": w0, "init_bias": b0, "init_labels": labels0, "replay": (old_x, old_y)}
    # Execute
    drowned = fit_head(new_x, new_y, balance=False, **init)
    balanced = fit_head(new_x, new_y, **init)
    # Assert: weighting each class equally recognises more of the new class (0.825 vs 0.675 when
    # written), and the old neighbour is kept all the same.
    assert _accuracy(*balanced, test_d, test_d_y) >= _accuracy(*drowned, test_d, test_d_y) + 0.1
    assert _accuracy(*balanced, test_a, test_a_y) >= 0.95


def test_fit_refuses_mismatched_shapes():
    x, y, _ = _blobs(5, ("a", "b"), seed=7)
    with pytest.raises(ValueError, match="labels"):
        fit_head(x, y[:-1])
    with pytest.raises(ValueError, match="init head"):
        fit_head(x, y, init_weight=np.zeros((2, D + 1)), init_labels=("a", "b"))


def test_an_anchored_refit_keeps_what_the_head_knew_where_the_new_samples_are_few():
    # Prepare: a head fitted on many samples of a, b, c; then a refit on 3 samples of a new
    # class and a small replay set (2 per class), as on a device.
    x, y, centres = _blobs(100, ("a", "b", "c"), seed=0, spread=3.0)
    w0, b0, labels0 = fit_head(x, y, l2=1e-2)
    new_x, new_y, _ = _blobs(3, ("d",), seed=1, spread=3.0)
    rx, ry, _ = _blobs(2, ("a", "b", "c"), seed=2, spread=3.0, centres=centres)
    test_x, test_y, _ = _blobs(200, ("a", "b", "c"), seed=3, spread=3.0, centres=centres)
    kwargs = dict(init_weight=w0, init_bias=b0, init_labels=labels0, replay=(rx, ry), l2=1e-2)
    # Execute
    free = fit_head(new_x, new_y, **kwargs)
    anchored = fit_head(new_x, new_y, anchor=True, **kwargs)
    # Assert: the anchored rows stay nearer the old ones, and the old classes are kept better.
    drift = [np.linalg.norm(w[:3] - w0) for w, _, _ in (free, anchored)]
    assert drift[1] < 0.5 * drift[0]
    acc = [_accuracy(w, b, lab, test_x, test_y) for w, b, lab in (free, anchored)]
    assert acc[1] > acc[0]
    assert _accuracy(w0, b0, labels0, test_x, test_y) - acc[1] < 0.02
