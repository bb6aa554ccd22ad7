"""Choosing the head's L2 strength by cross-validation on the fit data, grouped by source clip.

A head fitted to a few enrolment clips (and their augmented copies) has one free setting that
matters, the ridge penalty ``l2`` of :func:`edge.head.fit_head`. :func:`select_l2` fits the head
on all folds but one, for each ``l2`` of a grid, and scores it on the fold left out; the folds
are made of whole *groups* (a source clip with all its augmented copies, see
:func:`edge.audio.augment.augment_clips`), so an augmented copy never validates its own original,
and each fold holds the groups of every label in turn (stratified), so no label is missing from
a fit. The grid is walked from the largest ``l2`` down, each fit warm-started from the previous
one, which cuts the L-BFGS steps (not for an anchored fit, whose starting head is its anchor).

The choice: the highest cross-validated accuracy; among grid values within :data:`ACCURACY_TIE`
of it, the lowest cross-validated log-loss (the accuracy of a few clips moves in coarse steps
and often ties; the log-loss tells apart a head that is right and sure from one that is right by
luck). Replay samples and a warm start (``replay``, ``init_*`` of :func:`fit_head`) are passed
through to every fit; only the fit data is ever validated on.

What ``benchmarks/study_enrollment.py`` found with the ``speech_embedding`` backbone: a constant
``l2`` of about 1 (the embeddings have a spread of about 16 per dimension) did as well as or
better than any choice by cross-validation. With one speaker's clips, CV folds by clip see no
other speaker and choose too small an ``l2`` (5 points worse on other voices); with four
speakers, folds by speaker tie with the constant; a head trained on synthetic voices, folded by
voice, again chose too small an ``l2`` for real speech. So this is a tool for a new backbone or
feature scale, where no constant has been measured, best used with groups = speakers.

NumPy only: this runs on the device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .head import fit_head, predict_proba

log = logging.getLogger(__name__)

#: The L2 strengths tried by default (``fit_head``'s ``l2``: per-sample mean loss + l2/2 ||W||^2).
DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0)
#: Folds by default (fewer when a label has fewer source clips).
DEFAULT_FOLDS = 5
#: Cross-validated accuracies this close to the best count as tied (then the log-loss decides).
ACCURACY_TIE = 1e-9
_EPS = 1e-12


@dataclass(frozen=True)
class CvRow:
    """One grid value's cross-validated scores, over every validated sample of every fold."""

    l2: float
    accuracy: float
    log_loss: float
    fold_accuracy: tuple[float, ...]


@dataclass(frozen=True)
class L2Selection:
    """The chosen ``l2`` and the table it was chosen from (one row per grid value, grid order)."""

    l2: float
    rows: tuple[CvRow, ...]
    folds: int
    validated: int

    def table(self) -> str:
        """The CV table as text, the chosen row marked."""
        lines = [f"{'l2':>10}  {'cv acc':>7}  {'cv log-loss':>11}  folds ({self.folds}, {self.validated} samples)"]
        for row in self.rows:
            mark = "  <- chosen" if row.l2 == self.l2 else ""
            folds = " ".join(f"{a:.2f}" for a in row.fold_accuracy)
            lines.append(f"{row.l2:>10.3g}  {row.accuracy:>7.3f}  {row.log_loss:>11.4f}  {folds}{mark}")
        return "\n".join(lines)


def grouped_folds(labels: Sequence[str], groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of every sample, int64 [N] in ``0..k-1``: whole groups, stratified by label.

    ``k`` is ``folds``, or the number of groups when there are fewer. When each group carries one
    label (a source clip and its copies), the groups of each label are shuffled (``seed``) and
    dealt to the folds in turn, each label starting where the last one stopped: folds are about
    the same size, and a label's groups are spread over as many folds as it has groups. When a
    group carries several labels (e.g. a group per speaker), the groups are shuffled and dealt in
    turn, without stratification.
    """
    names = [str(v) for v in labels]
    g = np.asarray(groups)
    if g.shape != (len(names),):
        raise ValueError(f"groups have shape {g.shape} for {len(names)} labels; expected [{len(names)}]")
    if folds < 2:
        raise ValueError(f"folds is {folds!r}; expected >= 2")
    labels_of: dict[Any, set] = {}
    for name, group in zip(names, g.tolist()):
        labels_of.setdefault(group, set()).add(name)
    k = min(folds, len(labels_of))
    rng = np.random.default_rng(seed)
    members_by_stratum: dict[str, list] = {}
    single = all(len(v) == 1 for v in labels_of.values())
    for group, names_in in labels_of.items():
        members_by_stratum.setdefault(min(names_in) if single else "", []).append(group)
    fold_of: dict[Any, int] = {}
    nxt = 0
    for stratum in sorted(members_by_stratum):
        members = sorted(members_by_stratum[stratum], key=repr)
        for j in rng.permutation(len(members)):
            fold_of[members[int(j)]] = nxt % k
            nxt += 1
    return np.array([fold_of[group] for group in g.tolist()], dtype=np.int64)


def select_l2(embeddings: np.ndarray, labels: Sequence[str], groups: np.ndarray, *,
              grid: Sequence[float] = DEFAULT_L2_GRID, folds: int = DEFAULT_FOLDS, seed: int = 0,
              validate: np.ndarray | None = None,
              score_on: tuple[np.ndarray, Sequence[str], np.ndarray] | None = None,
              **fit_kwargs: Any) -> L2Selection:
    """Choose ``fit_head``'s ``l2`` by grouped, stratified k-fold cross-validation.

    Args:
        embeddings: float [N, D], the fit data (e.g. pooled embeddings of clips and their copies).
        labels: N label names.
        groups: int [N], the source clip of each sample (``augment_clips``' groups); samples of one
            group are always on the same side of a split. Every label needs two groups or more.
        grid: the L2 strengths to try (>= 0, distinct).
        folds: the number of folds (fewer if there are fewer groups).
        seed: the fold assignment's seed.
        validate: optional bool [N]: which samples are scored when their fold is held out (e.g.
            only the original clips, not their augmented copies); default all. Samples not scored
            are still left out of the fit of their own fold.
        score_on: optional (embeddings [M, D], M labels, groups [M]): score these instead of the
            fit data, each in the fold of its group (every group must be one of ``groups``). For a
            head fitted on one thing and used on another, e.g. fitted on single windows and used
            on the clip's mean (:func:`edge.audio.pooling.window_samples`).
        **fit_kwargs: passed to every :func:`fit_head` call (``replay``, ``replay_weight``,
            ``init_weight``/``init_bias``/``init_labels``, ``balance``, ``steps``); not ``l2``.

    Returns:
        :class:`L2Selection`: the chosen ``l2`` and the CV table.
    """
    if "l2" in fit_kwargs:
        raise TypeError("select_l2 chooses l2 itself; pass the candidates as grid=")
    x, names, g = _check_set(embeddings, labels, groups, "embeddings")
    values = [float(v) for v in grid]
    if not values or any(not np.isfinite(v) or v < 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"grid is {list(grid)!r}; expected distinct finite values >= 0")
    per_label: dict[str, set] = {}
    for name, group in zip(names, g.tolist()):
        per_label.setdefault(name, set()).add(group)
    short = sorted(name for name, gs in per_label.items() if len(gs) < 2)
    if short:
        raise ValueError(f"labels {short} have fewer than two source clips (groups); cross-validation "
                         "needs at least two per label")
    fold = grouped_folds(names, g, folds, seed)
    k = int(fold.max()) + 1

    if score_on is None:
        mask = np.ones(len(names), dtype=bool) if validate is None else np.asarray(validate, dtype=bool)
        if mask.shape != (len(names),) or not mask.any():
            raise ValueError(f"validate has shape {mask.shape} with {int(mask.sum())} set; "
                             f"expected [{len(names)}] bools, at least one set")
        sx, snames, sfold = x[mask], np.array(names, dtype=object)[mask], fold[mask]
    else:
        if validate is not None:
            raise TypeError("give validate= or score_on=, not both")
        sx, snames_list, sg = _check_set(*score_on, "score_on embeddings")
        if sx.shape[1] != x.shape[1]:
            raise ValueError(f"score_on embeddings have width {sx.shape[1]}; the fit data has {x.shape[1]}")
        fold_of = dict(zip(g.tolist(), fold.tolist()))
        missing = sorted({v for v in sg.tolist() if v not in fold_of}, key=repr)
        if missing:
            raise ValueError(f"score_on groups {missing[:5]} are not among the fit data's groups")
        snames = np.array(snames_list, dtype=object)
        sfold = np.array([fold_of[v] for v in sg.tolist()], dtype=np.int64)

    names_arr = np.array(names, dtype=object)
    order = sorted(range(len(values)), key=lambda i: -values[i])  # largest l2 first: warm starts
    correct = np.zeros((len(values), k))
    scored = np.bincount(sfold, minlength=k).astype(float)
    nll = np.zeros(len(values))
    for f in range(k):
        test = sfold == f
        if not test.any():
            continue
        train = fold != f
        kwargs = dict(fit_kwargs)
        for i in order:
            w, b, out_labels = fit_head(x[train], names_arr[train].tolist(), l2=values[i], **kwargs)
            if not fit_kwargs.get("anchor"):  # an anchored fit must keep its own starting head as the anchor
                kwargs.update(init_weight=w, init_bias=b, init_labels=out_labels)
            proba = predict_proba(sx[test], w, b).astype(np.float64)
            index = {name: j for j, name in enumerate(out_labels)}
            # a label absent from this fold's fit (possible with groups of several labels) is never predicted
            truth = np.array([index.get(v, -1) for v in snames[test]])
            correct[i, f] = float(np.sum(np.argmax(proba, axis=1) == truth))
            p_true = np.where(truth >= 0, proba[np.arange(truth.size), np.maximum(truth, 0)], 0.0)
            nll[i] += float(-np.log(np.maximum(p_true, _EPS)).sum())

    n_scored = int(scored.sum())
    rows = []
    for i, value in enumerate(values):
        fold_acc = tuple(float(correct[i, f] / scored[f]) for f in range(k) if scored[f] > 0)
        rows.append(CvRow(l2=value, accuracy=float(correct[i].sum() / n_scored), log_loss=nll[i] / n_scored,
                          fold_accuracy=fold_acc))
    best_acc = max(r.accuracy for r in rows)
    tied = [r for r in rows if r.accuracy >= best_acc - ACCURACY_TIE]
    chosen = min(tied, key=lambda r: (r.log_loss, -r.l2))
    selection = L2Selection(l2=chosen.l2, rows=tuple(rows), folds=k, validated=n_scored)
    log.debug("select_l2: chose l2=%g\n%s", chosen.l2, selection.table())
    return selection


def _check_set(embeddings: np.ndarray, labels: Sequence[str], groups: np.ndarray,
               what: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    names = [str(v) for v in labels]
    if x.ndim != 2 or x.shape[0] != len(names) or x.shape[0] == 0:
        raise ValueError(f"{what} have shape {x.shape} for {len(names)} labels; expected [N, D] with N >= 1")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or Inf")
    g = np.asarray(groups)
    if g.shape != (len(names),):
        raise ValueError(f"groups have shape {g.shape} for {len(names)} labels; expected [{len(names)}]")
    return x, names, g
