"""Choosing the head's L2 by grouped cross-validation (``edge.head_select``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.edge import head_select
from edgetune.edge.head import fit_head, predict_proba
from edgetune.edge.head_select import grouped_folds, select_l2

GRID = (1e-5, 0.1, 100.0)  # too small, right, too large for the problem below


def _problem(n: int, seed: int, noise_dims: int = 60, flip: float = 0.1) -> tuple[np.ndarray, list[str]]:
    """Two classes, more dimensions than samples (so the fit data is linearly separable).

    Column 0 is the class signal (+-1) buried in a large nuisance that column 1 carries alone:
    only the difference of the two separates the classes well, and a heavily penalised head,
    whose weights point along the class-mean difference (column 0 alone), cannot use it
    (underfits). ``noise_dims`` small noise columns and ``flip`` of the labels flipped let a
    barely penalised head fit the noise (overfits).
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    nuisance = 4.0 * rng.standard_normal(n)
    signal = np.where(y == 1, 1.0, -1.0) + nuisance + 0.4 * rng.standard_normal(n)
    noise = 0.2 * rng.standard_normal((n, noise_dims))
    if flip:
        flipped = rng.random(n) < flip
        y = np.where(flipped, 1 - y, y)
    x = np.column_stack([signal, nuisance, noise]).astype(np.float32)
    return x, [("a", "b")[v] for v in y]


def _accuracy(x, y, xt, yt, l2):
    w, b, labels = fit_head(x, y, l2=l2)
    return float(np.mean(np.asarray(labels)[predict_proba(xt, w, b).argmax(axis=1)] == np.asarray(yt)))


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_chooses_the_middle_l2_where_small_overfits_and_large_underfits(seed):
    x, y = _problem(60, seed)
    xt, yt = _problem(4000, 100 + seed, flip=0.0)
    held_out = [_accuracy(x, y, xt, yt, l2) for l2 in GRID]
    # the premise: on fresh data the middle value is clearly the best
    assert held_out[1] > held_out[0] + 0.05 and held_out[1] > held_out[2] + 0.05, held_out

    sel = select_l2(x, y, np.arange(60), grid=GRID, folds=5, seed=0)
    assert sel.l2 == 0.1
    rows = {r.l2: r for r in sel.rows}
    assert [r.l2 for r in sel.rows] == list(GRID)
    assert rows[0.1].accuracy > rows[1e-5].accuracy and rows[0.1].accuracy > rows[100.0].accuracy
    assert sel.folds == 5 and sel.validated == 60
    assert all(len(r.fold_accuracy) == 5 for r in sel.rows)
    assert "<- chosen" in sel.table()


def test_grouping_keeps_near_copies_out_of_their_own_validation():
    # Each sample and two near-copies of it (what augmentation makes): grouped by source, CV
    # still sees the overfitting; split sample by sample, a copy validates its own original and
    # the barely penalised head looks best.
    x, y = _problem(60, 0)
    rng = np.random.default_rng(5)
    copies = [x + 0.01 * rng.standard_normal(x.shape).astype(np.float32) for _ in range(2)]
    xa = np.concatenate([x, *copies])
    ya = y * 3
    groups = np.tile(np.arange(60), 3)
    assert select_l2(xa, ya, groups, grid=GRID).l2 == 0.1
    assert select_l2(xa, ya, np.arange(180), grid=GRID).l2 == 1e-5


def test_never_validates_on_a_group_it_fitted(monkeypatch):
    # column 0 carries the group id; record what each fit saw and what was scored after it
    rng = np.random.default_rng(0)
    n_groups, per = 12, 3
    groups = np.repeat(np.arange(n_groups), per)
    labels = [("x", "y", "z")[g % 3] for g in groups]
    x = np.column_stack([groups.astype(np.float32), rng.standard_normal((groups.size, 4)).astype(np.float32)])
    events = []
    real_fit, real_proba = head_select.fit_head, head_select.predict_proba

    def fit(emb, labs, **kw):
        events.append(("fit", set(np.asarray(emb)[:, 0].astype(int).tolist())))
        return real_fit(emb, labs, **kw)

    def proba(emb, w, b):
        events.append(("score", set(np.asarray(emb)[:, 0].astype(int).tolist())))
        return real_proba(emb, w, b)

    monkeypatch.setattr(head_select, "fit_head", fit)
    monkeypatch.setattr(head_select, "predict_proba", proba)
    sel = select_l2(x, labels, groups, grid=(0.01, 1.0), folds=4)
    fitted: set = set()
    scored_all: set = set()
    for kind, seen in events:
        if kind == "fit":
            fitted = seen
        else:
            assert seen and not (seen & fitted), (seen, fitted)
            assert seen | fitted == set(range(n_groups))
            scored_all |= seen
    assert scored_all == set(range(n_groups))  # every group validated once per grid value
    assert sum(k == "fit" for k, _ in events) == 4 * 2
    assert sel.validated == groups.size


def test_validate_mask_scores_only_the_originals(monkeypatch):
    x, y = _problem(30, 3, noise_dims=5, flip=0.0)
    xa = np.concatenate([x, x + 0.05])
    ya = y * 2
    groups = np.tile(np.arange(30), 2)
    original = np.arange(60) < 30
    sel = select_l2(xa, ya, groups, grid=(0.01, 1.0), validate=original)
    assert sel.validated == 30
    assert select_l2(xa, ya, groups, grid=(0.01, 1.0)).validated == 60


def test_score_on_another_representation():
    # fit on two "windows" per clip, score the clips' means, folds by clip
    x, y = _problem(40, 4, noise_dims=5, flip=0.0)
    windows = np.concatenate([x - 0.1, x + 0.1])
    wy = y * 2
    wg = np.tile(np.arange(40), 2)
    sel = select_l2(windows, wy, wg, grid=(0.01, 1.0), score_on=(x, y, np.arange(40)))
    assert sel.validated == 40
    with pytest.raises(ValueError, match="not among"):
        select_l2(windows, wy, wg, grid=(0.01, 1.0), score_on=(x, y, np.arange(40) + 1000))
    with pytest.raises(TypeError, match="not both"):
        select_l2(windows, wy, wg, grid=(0.01,), score_on=(x, y, np.arange(40)), validate=np.ones(80, bool))


def test_grouped_folds_are_stratified_whole_groups_and_seeded():
    groups = np.repeat(np.arange(20), 3)  # 20 source clips, 3 rows each
    labels = [("a", "b", "c", "d")[g % 4] for g in groups]
    fold = grouped_folds(labels, groups, folds=5, seed=1)
    assert fold.dtype == np.int64 and set(fold.tolist()) == set(range(5))
    for g in range(20):  # a group is never split
        assert len(set(fold[groups == g].tolist())) == 1
    for name in "abcd":  # 5 groups per label, 5 folds: each label once in every fold
        per_fold = [len(set(groups[(fold == f) & (np.asarray(labels) == name)].tolist())) for f in range(5)]
        assert per_fold == [1] * 5
    np.testing.assert_array_equal(fold, grouped_folds(labels, groups, folds=5, seed=1))
    assert not np.array_equal(fold, grouped_folds(labels, groups, folds=5, seed=2))
    assert set(grouped_folds(labels[:9], groups[:9], folds=5).tolist()) == {0, 1, 2}  # 3 groups: 3 folds


def test_grouped_folds_with_groups_of_several_labels():
    speakers = np.repeat(np.arange(4), 6)
    labels = [("a", "b", "c")[i % 3] for i in range(24)]
    fold = grouped_folds(labels, speakers, folds=5)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3]  # one speaker per fold
    for s in range(4):
        assert len(set(fold[speakers == s].tolist())) == 1
    sel = select_l2(np.random.default_rng(0).standard_normal((24, 3)), labels, speakers, grid=(0.1, 1.0))
    assert sel.folds == 4


def test_passes_fit_arguments_through():
    x, y = _problem(40, 6, noise_dims=5, flip=0.0)
    replay = (np.random.default_rng(1).standard_normal((10, x.shape[1])).astype(np.float32), ["old"] * 10)
    sel = select_l2(x, y, np.arange(40), grid=(0.01, 1.0), replay=replay)
    assert sel.l2 in (0.01, 1.0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(grid=()), ValueError, "grid"),
    (dict(grid=(0.1, 0.1)), ValueError, "grid"),
    (dict(grid=(-1.0,)), ValueError, "grid"),
    (dict(folds=1), ValueError, "folds"),
    (dict(l2=0.1), TypeError, "grid="),
    (dict(validate=np.zeros(40, bool)), ValueError, "validate"),
])
def test_bad_arguments(kwargs, error, message):
    x, y = _problem(40, 7, noise_dims=3, flip=0.0)
    with pytest.raises(error, match=message):
        select_l2(x, y, np.arange(40), **kwargs)


def test_a_label_with_one_source_clip_is_refused():
    x = np.random.default_rng(0).standard_normal((7, 3))
    labels = ["a", "a", "a", "b", "b", "b", "c"]
    groups = np.array([0, 1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match=r"\['c'\]"):
        select_l2(x, labels, groups)
    with pytest.raises(ValueError, match="groups"):
        select_l2(x, labels, groups[:5])
