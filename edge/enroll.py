"""On-device fine-tuning of a head from a folder of labelled recordings.

:func:`enroll` reads ``data_dir/<label>/*`` and splits the files per label into a fit part and
a held-out part. The fit clips are augmented on the device (:mod:`.audio.augment`: speed, time
shift, gain, noise; :data:`DEFAULT_COPIES` copies each) and embedded; for a backbone whose clip
is several windows pooled by their mean (``speech_embedding``), every window is a fit sample and
the clip is scored by its mean, which uses the embedding's time structure (each window a
different view of the word) and measured best for few-clip enrolment
(``benchmarks/study_enrollment.py``). The L2 strength is chosen by cross-validation on the fit
clips, folds keeping a clip and its copies together (:mod:`.head_select`), on a grid from the
strength the exporter chose for the bundle on its validation split up (:data:`L2_FACTORS`). The refit is warm-started
from the current head and anchored to it, with the bundle's replay samples mixed in, so what it
knew is kept; new labels are allowed.

Old and new head are compared on the held-out samples -- the user's and a held-out share of the
replay set, so forgetting shows. The new head is always saved as a new version; it becomes
current only if it is not worse there, and is then refitted on every file (held-out ones too)
with the same settings: the version saved is that final head.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgetune.errors import UsageError

from .audio.augment import augment_clips
from .audio.io import SkippedFile
from .audio.models import AudioModels
from .audio.pooling import window_samples
from .bundle import Bundle
from .dataset import read_folder
from .evaluate import evaluate_embeddings
from .head import DEFAULT_L2, DEFAULT_STEPS, Head, fit_head
from .head_select import select_l2
from .head_store import HeadStore
from .runtime.providers import ProviderSettings

log = logging.getLogger(__name__)

#: Augmented copies of each enrolment clip (the study: 4 gave most of the gain of 8).
DEFAULT_COPIES = 4
#: The L2 grid, as factors of the bundle's own strength (the exporter's choice on its validation
#: split, fitted on thousands of clips): a few clips need more. The demo's site data measured the
#: cross-validated choice at 10x, keeping the source words at 83% (87.8% before) while learning
#: the new ones; at 1x-3x the source words dropped below the promotion check.
L2_FACTORS = (1.0, 3.0, 10.0, 30.0)
#: Cross-validation folds for that choice.
CV_FOLDS = 3


@dataclass(frozen=True)
class EnrollReport:
    """What an enrolment did. Accuracies are balanced (the mean recall over the labels present),
    fractions 0..1 on held-out samples (``None`` when there were none): ``accuracy_*`` on the
    user's files, ``replay_accuracy_*`` on held-out replay samples, ``combined_accuracy_*`` on both
    (the promotion decision)."""

    version: int
    parent_version: int
    promoted: bool
    reason: str
    labels: tuple[str, ...]
    new_labels: tuple[str, ...]
    n_files: int
    n_fit: int
    n_holdout: int
    n_replay_fit: int
    n_replay_holdout: int
    accuracy_before: float | None
    accuracy_after: float | None
    replay_accuracy_before: float | None
    replay_accuracy_after: float | None
    combined_accuracy_before: float | None
    combined_accuracy_after: float | None
    l2: float = DEFAULT_L2
    l2_choice: str = ""
    copies: int = 0
    window_fit: bool = False
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: tuple[SkippedFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "skipped"}
        out["labels"], out["new_labels"] = list(self.labels), list(self.new_labels)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 6)
        out["skipped"] = [s.to_json() for s in self.skipped]
        return out

    def render(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"

        lines = [f"head v{self.version} (from v{self.parent_version}): "
                 f"{'PROMOTED, now current' if self.promoted else 'saved, NOT promoted'} -- {self.reason}",
                 f"labels: {', '.join(self.labels)}"
                 + (f" (new: {', '.join(self.new_labels)})" if self.new_labels else ""),
                 f"samples: {self.n_files} files read, {self.n_fit} fit / {self.n_holdout} held out; "
                 f"replay {self.n_replay_fit} fit / {self.n_replay_holdout} held out",
                 f"held-out accuracy, your files: {pct(self.accuracy_before)} -> {pct(self.accuracy_after)}; "
                 f"replay: {pct(self.replay_accuracy_before)} -> {pct(self.replay_accuracy_after)}; "
                 f"both: {pct(self.combined_accuracy_before)} -> {pct(self.combined_accuracy_after)}",
                 f"fit: {self.copies} augmented copies per clip, "
                 f"{'every window a sample' if self.window_fit else 'one sample per clip'}, L2 {self.l2:g} "
                 f"({self.l2_choice})"]
        lines += [f"skipped {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def stratified_split(labels: Sequence[str], holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held_out) with about ``holdout_fraction`` of each label held out: at least
    one when a label has two or more samples, never all of them. Deterministic in ``seed``."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise UsageError(f"holdout_fraction is {holdout_fraction!r}; expected a fraction in [0, 1)")
    rng = np.random.default_rng(seed)
    labels = np.asarray([str(v) for v in labels])
    fit, held = [], []
    for lab in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == lab)
        idx = idx[rng.permutation(idx.size)]
        n_hold = 0
        if idx.size >= 2 and holdout_fraction > 0:
            n_hold = min(idx.size - 1, max(1, int(round(idx.size * holdout_fraction))))
        held.extend(idx[:n_hold].tolist())
        fit.extend(idx[n_hold:].tolist())
    return np.array(sorted(fit), dtype=np.int64), np.array(sorted(held), dtype=np.int64)


def _accuracy(head: Head, emb: np.ndarray, labels: Sequence[str]) -> float | None:
    """Balanced accuracy: the mean recall over the labels present, so that a word with two held-out
    clips counts as much as a replayed word with twenty (None without samples)."""
    if not len(labels):
        return None
    recall = evaluate_embeddings(emb, labels, head).per_class_recall
    return float(np.mean([v for v in recall.values() if v is not None]))


def _fit_samples(models: AudioModels, clips: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                 window_fit: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit samples of ``clips``: (x [M, D], labels [M], groups [M], pooled clip embeddings [N, D])."""
    sequences = models.clip_window_embeddings(clips)  # [N, n_windows, D]
    pooled = models.pool(sequences)
    if not window_fit:
        return pooled, labels, groups, pooled
    x, source = window_samples(sequences)
    return x, labels[source], groups[source], pooled


def _bundle_l2(bundle: Bundle) -> float:
    """The L2 strength the exporter chose for this bundle's head (its metrics), else the default."""
    value = bundle.manifest.metrics.get("l2")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_L2


@dataclass(frozen=True, eq=False)
class EnrolmentData:
    """What a modality hands the common refit: the files' labels, a way to make fit samples of
    any of them, and the embeddings the clips are scored by.

    labels: one per file. samples(idx): (x [M, D], labels [M], groups [M], pooled [len(idx), D])
    for files ``idx``, augmented (a file and its copies share a group; the first ``len(idx)``
    rows of ``pooled`` are the originals as run time scores them). embed(idx): the files'
    embeddings as run time computes them. window_fit: every window was a sample.
    """

    labels: tuple[str, ...]
    samples: Any
    embed: Any
    skipped: tuple[SkippedFile, ...]
    window_fit: bool = False


def enroll(bundle: Bundle, data_dir: str | os.PathLike[str], store: HeadStore, *, holdout_fraction: float = 0.25,
           seed: int = 0, models: AudioModels | None = None, providers: ProviderSettings | None = None,
           copies: int = DEFAULT_COPIES, l2: float | None = None, steps: int = DEFAULT_STEPS) -> EnrollReport:
    """Refit the current head on ``data_dir/<label>/*`` and save it as a new version of ``store``.

    ``copies``: augmented copies per fit clip (0: none). ``l2``: a fixed strength instead of the
    cross-validated choice. Promoted (made current) only if its accuracy on the held-out samples
    (the user's and the replay set's) is not lower than the current head's. Unreadable files are
    skipped and listed. Photos (a head on the image embedding): :func:`edgetune.edge.image.enroll.enroll_images`.
    """
    check_enrolment(bundle, store, copies)
    models = models if models is not None else AudioModels(bundle, providers)
    data = read_folder(data_dir, models.rate_hz, models.clip_samples)
    spec = models.embedder_spec
    window_fit = spec.n_windows > 1 and spec.pooling == "mean"
    y = np.asarray(data.labels)

    def samples(idx: np.ndarray):
        clips, groups = augment_clips(data.clips[idx], models.rate_hz, copies, seed)
        return _fit_samples(models, clips, y[idx][groups], groups, window_fit)

    def embed(idx: np.ndarray) -> np.ndarray:
        return models.embed_clips(data.clips[idx]) if idx.size else np.zeros((0, models.embedding_size), np.float32)

    return refit_and_promote(bundle, store, EnrolmentData(tuple(data.labels), samples, embed, data.skipped,
                                                          window_fit),
                             holdout_fraction=holdout_fraction, seed=seed, copies=copies, l2=l2, steps=steps)


def check_enrolment(bundle: Bundle, store: HeadStore, copies: int) -> None:
    if store.bundle.content_id != bundle.content_id:
        raise UsageError(f"head store is for bundle content {store.bundle.content_id}, not {bundle.content_id}")
    if not isinstance(copies, int) or isinstance(copies, bool) or not 0 <= copies <= 32:
        raise UsageError(f"copies is {copies!r}; expected an integer in 0..32 (augmented copies per file)")
    spec = bundle.heads[store.head_name].spec if store.head_name in bundle.heads else None
    if spec is not None and spec.input == "fused":
        raise UsageError(f"head {spec.name} is a fused head ({spec.fusion}); the device refits heads on one "
                         "modality (audio or image): retrain fused heads with `edgetune export`")


def refit_and_promote(bundle: Bundle, store: HeadStore, data: EnrolmentData, *, holdout_fraction: float, seed: int,
                      copies: int, l2: float | None, steps: int) -> EnrollReport:
    """The modality-neutral part of an enrolment: split, choose L2, refit, compare, promote, save."""
    parent = store.current_version
    old = store.head(parent)
    window_fit = data.window_fit

    fit, held = stratified_split(data.labels, holdout_fraction, seed)
    y = np.asarray(data.labels)
    r_emb = np.zeros((0, old.embedding_size), np.float32)
    r_lab: np.ndarray = np.zeros(0, dtype=str)
    r_fit = r_held = np.zeros(0, dtype=np.int64)
    replay = store.base.replay
    if replay is not None:
        r_emb, r_lab = replay.embeddings, np.asarray(replay.labels)
        r_fit, r_held = stratified_split(r_lab, holdout_fraction, seed + 1)
    common = dict(init_weight=old.weight, init_bias=old.bias, init_labels=old.labels, anchor=True, steps=steps,
                  replay=(r_emb[r_fit], r_lab[r_fit].tolist()) if r_fit.size else None)
    samples = data.samples

    x, x_lab, x_groups, pooled = samples(fit)
    held_emb = data.embed(held)
    centre = _bundle_l2(bundle)
    if l2 is not None:
        chosen, how = float(l2), "given"
    else:
        n_orig = fit.size  # score the original clips (the first rows of the augmented set), pooled as at run time
        try:
            selection = select_l2(x, x_lab.tolist(), x_groups, grid=[centre * f for f in L2_FACTORS], seed=seed,
                                  folds=CV_FOLDS,
                                  score_on=(pooled[:n_orig], y[fit].tolist(), np.arange(n_orig)), **common)
            chosen, how = selection.l2, f"cross-validated over {selection.folds} folds of your clips"
            log.info("enrolment L2 by cross-validation:\n%s", selection.table())
        except ValueError as exc:  # too few clips per label to cross-validate
            chosen, how = centre, f"the bundle's ({exc})"
    weight, bias, labels = fit_head(x, x_lab.tolist(), l2=chosen, **common)
    new = Head(weight, bias, labels)

    acc = {}
    for name, head in (("before", old), ("after", new)):
        acc[f"accuracy_{name}"] = _accuracy(head, held_emb, y[held].tolist())
        acc[f"replay_accuracy_{name}"] = _accuracy(head, r_emb[r_held], r_lab[r_held].tolist())
        acc[f"combined_accuracy_{name}"] = _accuracy(
            head, np.concatenate([held_emb, r_emb[r_held]]), y[held].tolist() + r_lab[r_held].tolist())
    before, after = acc["combined_accuracy_before"], acc["combined_accuracy_after"]
    if before is None or after is None:
        promoted, reason = False, "no held-out samples to compare on (give each label at least 2 files)"
    elif after >= before:
        promoted, reason = True, f"held-out accuracy {before:.3f} -> {after:.3f}, not worse"
    else:
        promoted, reason = False, f"held-out accuracy would drop {before:.3f} -> {after:.3f}"
    if promoted and held.size:  # the checked recipe, refitted on every file
        every = np.arange(len(data.labels))
        x_all, lab_all, _, _ = samples(every)
        weight, bias, labels = fit_head(x_all, lab_all.tolist(), l2=chosen, **common)
        new = Head(weight, bias, labels)
        reason += "; refitted on all files"

    per_label = {lab: {"fit": int((y[fit] == lab).sum()), "held_out": int((y[held] == lab).sum())}
                 for lab in sorted(set(data.labels))}
    new_labels = tuple(lab for lab in labels if lab not in old.labels)
    details = {"per_label": per_label, "new_labels": list(new_labels), "reason": reason, "l2": chosen,
               "l2_choice": how, "copies": copies, "window_fit": window_fit, **acc}
    entry = store.add(new, parent=parent, n_samples=int((len(data.labels) if promoted else fit.size) + r_fit.size),
                      accuracy_before=before, accuracy_after=after, promote=promoted, details=details)
    report = EnrollReport(version=entry.version, parent_version=parent, promoted=promoted, reason=reason,
                          labels=labels, new_labels=new_labels, n_files=len(data.labels), n_fit=int(fit.size),
                          n_holdout=int(held.size), n_replay_fit=int(r_fit.size), n_replay_holdout=int(r_held.size),
                          l2=chosen, l2_choice=how, copies=copies, window_fit=window_fit,
                          per_label=per_label, skipped=data.skipped, **acc)
    log.info("enrolment: %s", report.reason)
    return report
