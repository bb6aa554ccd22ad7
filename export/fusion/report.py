"""The fusion report: each head on the same held-out pairs, clean and with one modality corrupted.

Rows are conditions -- ``clean``, then ``audio:noise``, ``audio:silence``, ``image:blank``,
``image:noise`` (:mod:`.corrupt`, applied to every test pair's raw clip or frame) -- and columns
the heads:

- ``audio``: a linear head on the audio embedding alone;
- ``image``: a linear head on the image embedding alone;
- ``concat``: a linear head on [audio; image], trained on clean pairs (the seed's global average
  pooling then concatenation);
- ``concat_aug``: the same head trained on the corruption-augmented pairs the gated head sees,
  so that what the gate adds is not mistaken for what the augmentation adds;
- ``gated``: the learned per-sample gate (the seed's local feature fusion), corruption-augmented.

Beside the accuracies, the gated head's mean gate weight per modality under each condition. All
heads are fitted on the train pairs with L2 chosen on the val pairs (voices and writer blocks of
their own) and scored on the test pairs (voices and writer blocks of their own again). Nothing
here knows a backbone: the embedding functions are arguments (:func:`run_fusion_study`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgetune.contract import tensors

from .corrupt import AUDIO_CORRUPTIONS, IMAGE_CORRUPTIONS
from .heads import CLEAN, FittedHead, FusionFitConfig, PairEmbeddings, fit_gated_head, fit_linear_head
from .pairs import AudioEmbed, ImageEmbed, PairSet, embed_audio, embed_images

log = logging.getLogger(__name__)

#: The report's columns, in order.
HEAD_NAMES = ("audio", "image", "concat", "concat_aug", "gated")


def embed_split(pairs: PairSet, audio_embed: AudioEmbed, image_embed: ImageEmbed, *, corrupted: bool = True,
                seed: int = 0) -> PairEmbeddings:
    """One split's pairs embedded clean and, when ``corrupted``, after every corruption kind
    (each kind on every raw clip or frame; seeded)."""
    audio = {CLEAN: embed_audio(pairs, audio_embed, seed=seed)}
    image = {CLEAN: embed_images(pairs, image_embed, seed=seed)}
    if corrupted:
        for kind in AUDIO_CORRUPTIONS:
            audio[kind] = embed_audio(pairs, audio_embed, kind, seed=seed)
        for kind in IMAGE_CORRUPTIONS:
            image[kind] = embed_images(pairs, image_embed, kind, seed=seed)
    return PairEmbeddings(labels=pairs.labels, audio=audio, image=image)


def fit_heads(train: PairEmbeddings, val: PairEmbeddings, label_names: tuple[str, ...],
              config: FusionFitConfig = FusionFitConfig()) -> dict[str, FittedHead]:
    """Every head of :data:`HEAD_NAMES`, fitted on ``train`` with L2 chosen on ``val``."""
    heads = {"audio": fit_linear_head(train, "audio", label_names, val=val, config=config),
             "image": fit_linear_head(train, "image", label_names, val=val, config=config),
             "concat": fit_linear_head(train, "fused", label_names, val=val, config=config),
             "concat_aug": fit_linear_head(train, "fused", label_names, val=val, config=config, augment=True),
             "gated": fit_gated_head(train, label_names, val=val, config=config)}
    return heads


def _runnable(head: FittedHead, splits: tuple[int, int]):
    from edgetune.edge.fusion import load_fused_head
    from edgetune.edge.head import Head

    if head.fusion is None:
        return Head(head.arrays[tensors.HEAD_WEIGHT], head.arrays[tensors.HEAD_BIAS], head.labels)
    return load_fused_head(head.arrays, head.fusion, head.labels, splits)


@dataclass
class FusionTable:
    """Accuracy per condition and head, on ``n`` test pairs, and the gated head's mean gates.

    ``accuracy[condition][head]`` in [0, 1]; ``gates[condition]`` = {modality: mean gate weight}.
    """

    conditions: tuple[str, ...]
    heads: tuple[str, ...]
    accuracy: dict[str, dict[str, float]]
    gates: dict[str, dict[str, float]]
    n: int
    chance: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"conditions": list(self.conditions), "heads": list(self.heads), "accuracy": self.accuracy,
                "gates": self.gates, "n": self.n, "chance": self.chance, "info": self.info}

    def render(self) -> str:
        """The table as text: accuracy in %, one row per condition, gate weights on the right."""
        width = max(len(c) for c in self.conditions) + 2
        head = "condition".ljust(width) + "".join(f"{h:>11}" for h in self.heads) + "   gate audio / image"
        lines = [head, "-" * len(head)]
        for c in self.conditions:
            row = c.ljust(width) + "".join(f"{100 * self.accuracy[c][h]:10.1f}%" for h in self.heads)
            g = self.gates.get(c)
            if g:
                row += f"   {g['audio']:.2f} / {g['image']:.2f}"
            lines.append(row)
        lines.append(f"n = {self.n} test pairs per condition; chance (the largest class) {100 * self.chance:.1f}%")
        return "\n".join(lines)


def evaluate_heads(heads: Mapping[str, FittedHead], test: PairEmbeddings) -> FusionTable:
    """Each head's accuracy on ``test`` under each of its conditions, and the gated head's mean gates."""
    splits = test.splits
    runnable = {name: _runnable(h, splits) for name, h in heads.items()}
    accuracy: dict[str, dict[str, float]] = {}
    gates: dict[str, dict[str, float]] = {}
    for condition in test.conditions:
        audio, image = test.condition(condition)
        fused = np.concatenate([audio, image], axis=1)
        row = {}
        for name, head in heads.items():
            x = {"audio": audio, "image": image, "fused": fused}[head.input]
            pred = np.argmax(runnable[name].predict_proba(x), axis=1)
            row[name] = float(np.mean(pred == test.labels))
        accuracy[condition] = row
        for name, head in heads.items():
            if head.fusion == "gated":
                g = runnable[name].gates(fused).mean(axis=0)
                gates[condition] = {"audio": float(g[0]), "image": float(g[1])}
    chance = float(np.bincount(test.labels).max() / len(test))
    return FusionTable(conditions=test.conditions, heads=tuple(heads), accuracy=accuracy, gates=gates,
                       n=len(test), chance=chance,
                       info={name: {k: v for k, v in h.info.items()} for name, h in heads.items()})


@dataclass
class FusionStudy:
    """What :func:`run_fusion_study` returns: the table, the fitted heads, the embeddings, timings."""

    table: FusionTable
    heads: dict[str, FittedHead]
    embeddings: dict[str, PairEmbeddings]
    timings_s: dict[str, float]


def study_embeddings(embeddings: Mapping[str, PairEmbeddings], label_names: tuple[str, ...], *,
                     config: FusionFitConfig = FusionFitConfig()) -> FusionStudy:
    """Fit the heads on ``embeddings["train"]`` / ``["val"]`` and score them on ``["test"]``."""
    start = time.perf_counter()
    heads = fit_heads(embeddings["train"], embeddings["val"], label_names, config)
    timings = {"fit_s": round(time.perf_counter() - start, 2)}
    table = evaluate_heads(heads, embeddings["test"])
    table.info["split_sizes"] = {split: len(e) for split, e in embeddings.items()}
    return FusionStudy(table=table, heads=heads, embeddings=dict(embeddings), timings_s=timings)


def run_fusion_study(pairs: Mapping[str, PairSet], audio_embed: AudioEmbed, image_embed: ImageEmbed, *,
                     config: FusionFitConfig = FusionFitConfig()) -> FusionStudy:
    """Embed every split (clean and corrupted), fit the heads on train/val, score them on test."""
    start = time.perf_counter()
    emb = {split: embed_split(pairs[split], audio_embed, image_embed, seed=config.seed + i)
           for i, split in enumerate(("train", "val", "test"))}
    embed_s = round(time.perf_counter() - start, 2)
    study = study_embeddings(emb, pairs["train"].label_names, config=config)
    study.timings_s = {"embed_s": embed_s, **study.timings_s}
    return study


def save_embeddings(path: Any, embeddings: Mapping[str, PairEmbeddings]) -> None:
    """Write each split's labels and views to one ``.npz`` (keys ``<split>/labels``, ``<split>/<modality>/<view>``),
    so that heads can be refitted without embedding again."""
    arrays = {}
    for split, e in embeddings.items():
        arrays[f"{split}/labels"] = e.labels
        for modality in ("audio", "image"):
            for view, value in getattr(e, modality).items():
                arrays[f"{split}/{modality}/{view}"] = value
    np.savez(path, **arrays)


def load_embeddings(path: Any) -> dict[str, PairEmbeddings]:
    """What :func:`save_embeddings` wrote."""
    with np.load(path) as data:
        out: dict[str, dict[str, Any]] = {}
        for key in data.files:
            split, _, rest = key.partition("/")
            entry = out.setdefault(split, {"audio": {}, "image": {}})
            if rest == "labels":
                entry["labels"] = data[key]
            else:
                modality, _, view = rest.partition("/")
                entry[modality][view] = data[key]
    return {split: PairEmbeddings(**entry) for split, entry in out.items()}
