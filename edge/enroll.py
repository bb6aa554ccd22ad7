"""On-device fine-tuning of the head from a folder of labelled recordings.

:func:`enroll` embeds ``data_dir/<label>/*`` with the bundle's front-end and embedder, splits
the samples per label into a fit part and a held-out part, refits the current head in NumPy
(warm start, new labels allowed, the bundle's replay samples mixed in), and compares old and new
head on the held-out samples -- the user's and a held-out share of the replay set, so forgetting
shows. The new head is always saved as a new version; it becomes current only if it is not worse
on those held-out samples.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from edgetune.errors import UsageError

from .audio.io import SkippedFile
from .audio.models import AudioModels
from .bundle import Bundle
from .dataset import embed_folder
from .evaluate import evaluate_embeddings
from .head import DEFAULT_L2, DEFAULT_STEPS, Head, fit_head
from .head_store import HeadStore
from .runtime.providers import ProviderSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrollReport:
    """What an enrolment did. Accuracies are fractions 0..1 on held-out samples (``None`` when
    there were none): ``accuracy_*`` on the user's files, ``replay_accuracy_*`` on held-out replay
    samples, ``combined_accuracy_*`` on both (the promotion decision)."""

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
                 f"both: {pct(self.combined_accuracy_before)} -> {pct(self.combined_accuracy_after)}"]
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
    return evaluate_embeddings(emb, labels, head).accuracy if len(labels) else None


def enroll(bundle: Bundle, data_dir: str | os.PathLike[str], store: HeadStore, *, holdout_fraction: float = 0.25,
           seed: int = 0, models: AudioModels | None = None, providers: ProviderSettings | None = None,
           l2: float = DEFAULT_L2, steps: int = DEFAULT_STEPS) -> EnrollReport:
    """Refit the current head on ``data_dir/<label>/*`` and save it as a new version of ``store``.

    Promoted (made current) only if its accuracy on the held-out samples (the user's and the
    replay set's) is not lower than the current head's. Unreadable files are skipped and listed.
    """
    if store.bundle.content_id != bundle.content_id:
        raise UsageError(f"head store is for bundle content {store.bundle.content_id}, not {bundle.content_id}")
    models = models if models is not None else AudioModels(bundle, providers)
    data = embed_folder(models, data_dir)
    parent = store.current_version
    old = store.head(parent)

    fit, held = stratified_split(data.labels, holdout_fraction, seed)
    y = np.asarray(data.labels)
    r_emb = np.zeros((0, old.embedding_size), np.float32)
    r_lab: np.ndarray = np.zeros(0, dtype=str)
    r_fit = r_held = np.zeros(0, dtype=np.int64)
    replay = store.base.replay
    if replay is not None:
        r_emb, r_lab = replay.embeddings, np.asarray(replay.labels)
        r_fit, r_held = stratified_split(r_lab, holdout_fraction, seed + 1)

    weight, bias, labels = fit_head(
        data.embeddings[fit], y[fit].tolist(), init_weight=old.weight, init_bias=old.bias, init_labels=old.labels,
        replay=(r_emb[r_fit], r_lab[r_fit].tolist()) if r_fit.size else None, l2=l2, steps=steps)
    new = Head(weight, bias, labels)

    acc = {}
    for name, head in (("before", old), ("after", new)):
        acc[f"accuracy_{name}"] = _accuracy(head, data.embeddings[held], y[held].tolist())
        acc[f"replay_accuracy_{name}"] = _accuracy(head, r_emb[r_held], r_lab[r_held].tolist())
        acc[f"combined_accuracy_{name}"] = _accuracy(
            head, np.concatenate([data.embeddings[held], r_emb[r_held]]), y[held].tolist() + r_lab[r_held].tolist())
    before, after = acc["combined_accuracy_before"], acc["combined_accuracy_after"]
    if before is None or after is None:
        promoted, reason = False, "no held-out samples to compare on (give each label at least 2 files)"
    elif after >= before:
        promoted, reason = True, f"held-out accuracy {before:.3f} -> {after:.3f}, not worse"
    else:
        promoted, reason = False, f"held-out accuracy would drop {before:.3f} -> {after:.3f}"

    per_label = {lab: {"fit": int((y[fit] == lab).sum()), "held_out": int((y[held] == lab).sum())}
                 for lab in sorted(set(data.labels))}
    new_labels = tuple(lab for lab in labels if lab not in old.labels)
    entry = store.add(new, parent=parent, n_samples=int(fit.size + r_fit.size),
                      accuracy_before=acc["combined_accuracy_before"], accuracy_after=acc["combined_accuracy_after"],
                      promote=promoted, details={"per_label": per_label, "new_labels": list(new_labels),
                                                 "reason": reason, **acc})
    report = EnrollReport(version=entry.version, parent_version=parent, promoted=promoted, reason=reason,
                          labels=labels, new_labels=new_labels, n_files=len(data), n_fit=int(fit.size),
                          n_holdout=int(held.size), n_replay_fit=int(r_fit.size), n_replay_holdout=int(r_held.size),
                          per_label=per_label, skipped=data.skipped, **acc)
    log.info("enrolment: %s", report.reason)
    return report
