"""Accuracy and confusion matrix of a head on a folder of labelled audio files or photos.

Rows of the confusion matrix are true labels, columns predicted labels. The columns are the
head's labels; the rows are the labels the data has: those the head knows, in the head's order,
then any it does not (those samples are always wrong: the head cannot predict them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .audio.io import SkippedFile
from .audio.models import AudioModels
from .bundle import Bundle
from .dataset import embed_folder
from .head import Head
from .runtime.providers import ProviderSettings


@dataclass(frozen=True, eq=False)
class EvalResult:
    """accuracy: fraction correct, 0..1. n: samples evaluated. labels: the head's labels (columns).
    row_labels: true labels (rows). confusion: int64 [len(row_labels), len(labels)].
    per_class_recall: row label -> recall 0..1.
    skipped: files that could not be used."""

    accuracy: float
    n: int
    labels: tuple[str, ...]
    row_labels: tuple[str, ...]
    confusion: np.ndarray
    per_class_recall: dict[str, float | None]
    skipped: tuple[SkippedFile, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 6), "n": self.n, "labels": list(self.labels),
                "row_labels": list(self.row_labels), "confusion": self.confusion.tolist(),
                "per_class_recall": {k: (None if v is None else round(v, 6)) for k, v in self.per_class_recall.items()},
                "skipped": [s.to_json() for s in self.skipped]}

    def render(self) -> str:
        """The confusion matrix as a plain-text table, with recall per row and the accuracy."""
        width = max([5] + [len(x) for x in self.labels + self.row_labels])
        cell = max(5, len(str(int(self.confusion.max(initial=0)))), min(12, max(len(x) for x in self.labels)))
        lines = [f"accuracy {self.accuracy:.3f} on {self.n} samples (rows: true, columns: predicted)"]
        lines.append(" " * width + " " + " ".join(f"{lab[:cell]:>{cell}}" for lab in self.labels) + "  recall")
        for i, row in enumerate(self.row_labels):
            recall = self.per_class_recall.get(row)
            shown = "   -" if recall is None else f"{recall:.3f}"
            lines.append(f"{row:<{width}} " + " ".join(f"{int(v):>{cell}}" for v in self.confusion[i])
                         + f"  {shown}")
        for s in self.skipped:
            lines.append(f"skipped {s.path}: {s.reason}")
        return "\n".join(lines)


def evaluate_embeddings(embeddings: np.ndarray, true_labels: Sequence[str], head: Head,
                        skipped: Sequence[SkippedFile] = ()) -> EvalResult:
    """Evaluate ``head`` on embeddings float32 [N, D] (N >= 1) with their true labels."""
    true_labels = [str(v) for v in true_labels]
    if len(true_labels) == 0 or len(true_labels) != np.asarray(embeddings).shape[0]:
        raise ValueError(f"{len(true_labels)} labels for embeddings {np.asarray(embeddings).shape}; "
                         "expected N >= 1 of each")
    predicted = head.predict(embeddings)
    cols = head.labels
    present = set(true_labels)  # rows: the labels the data has (a head's other labels would be all zeros)
    rows = tuple(lab for lab in cols if lab in present) + tuple(sorted(present - set(cols)))
    r_index = {lab: i for i, lab in enumerate(rows)}
    c_index = {lab: i for i, lab in enumerate(cols)}
    confusion = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for t, p in zip(true_labels, predicted):
        confusion[r_index[t], c_index[p]] += 1
    correct = sum(t == p for t, p in zip(true_labels, predicted))
    recall: dict[str, float | None] = {}
    for lab in rows:
        total = int(confusion[r_index[lab]].sum())
        recall[lab] = None if total == 0 else (
            float(confusion[r_index[lab], c_index[lab]]) / total if lab in c_index else 0.0)
    return EvalResult(accuracy=correct / len(true_labels), n=len(true_labels), labels=cols, row_labels=rows,
                      confusion=confusion, per_class_recall=recall, skipped=tuple(skipped))


def evaluate_folder(bundle: Bundle, data_dir: str | os.PathLike[str], weight: np.ndarray, bias: np.ndarray,
                    labels: Sequence[str], *, models: AudioModels | None = None,
                    providers: ProviderSettings | None = None, modality: str = "audio") -> EvalResult:
    """Evaluate the head (``weight`` [C, D], ``bias`` [C], C ``labels``) on ``data_dir/<label>/*``:
    audio files, or photos when ``modality`` is ``image``.

    Files that cannot be read are skipped and listed in ``skipped``.
    """
    head = Head(weight, bias, tuple(labels))
    if modality == "image":
        from .image.io import read_image_folder
        from .image.models import ImageModels

        image_models = models if models is not None else ImageModels(bundle, providers)
        photos = read_image_folder(data_dir)
        return evaluate_embeddings(image_models.embed(photos.frames), photos.labels, head, photos.skipped)
    models = models if models is not None else AudioModels(bundle, providers)
    data = embed_folder(models, data_dir)
    return evaluate_embeddings(data.embeddings, data.labels, head, data.skipped)
