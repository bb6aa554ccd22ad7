"""Fitting the fused heads, and the single-modality heads they are compared with.

Every head here is fitted on standardised inputs ``z = (x - mean) / scale`` (per dimension, from
the clean training pairs): on the study's digit pairs speech_embedding's mean-pooled values
spread about 4 per dimension, EfficientNet-Lite0's about 0.1 (median 0.06), and without this one
L2 penalty would mean very different things for the two.

- single-modality and ``concat`` heads: multinomial logistic regression on ``z``
  (:func:`~edgetune.edge.head.fit_head`, the device's own fit), the standardisation then folded
  into ``weight`` / ``bias`` so the shipped head reads raw embeddings like any other
  (``logits = x @ weight.T + bias``). The L2 strength is chosen on the validation pairs.
- ``gated``: the contract's formula (``contract/tensors.py``), trained in torch by full-batch
  L-BFGS from zeros on one thread (deterministic), with *modality corruption augmentation*: a share of the
  training pairs (:attr:`FusionFitConfig.corrupt_share`) has one modality -- audio or image,
  half each, every corruption kind equally often -- replaced by the embedding of its corrupted
  raw input (:mod:`.corrupt`), so the gate learns to turn away from a broken sensor. Its arrays
  ship with the standardisation as ``input_mean`` / ``input_scale``.

``concat`` can be trained on the same augmented pairs (``augment=True``); the study reports both,
so that what the gate adds is not confused with what the augmentation adds.

Corrupted embeddings come in :class:`PairEmbeddings`: one split's pairs embedded clean and after
each corruption of the raw inputs (:func:`.pairs.embed_audio`, :func:`.pairs.embed_images`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from edgetune.contract import tensors

log = logging.getLogger(__name__)

CLEAN = "clean"
MODALITIES = ("audio", "image")
#: L2 strengths tried on the validation pairs (``fit_head``'s per-sample ridge penalty, on z).
L2_GRID = (1e-3, 1e-2, 1e-1)
_SCALE_FLOOR = 1e-2  # a dimension's scale is at least this share of the median scale (near-constant features)


@dataclass
class PairEmbeddings:
    """One split's pairs as embeddings: ``labels`` int64 [N]; ``audio`` and ``image`` map
    ``"clean"`` and each corruption kind to float32 [N, Da] / [N, Di] (row k: pair k)."""

    labels: np.ndarray
    audio: Mapping[str, np.ndarray]
    image: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = self.labels.shape[0]
        for modality in MODALITIES:
            views = getattr(self, modality)
            if CLEAN not in views:
                raise ValueError(f"PairEmbeddings.{modality} has {sorted(views)}; expected a 'clean' view")
            widths = {np.shape(v)[1:] for v in views.values()}
            if any(np.ndim(v) != 2 or np.shape(v)[0] != n for v in views.values()) or len(widths) != 1:
                raise ValueError(f"PairEmbeddings.{modality} views have shapes "
                                 f"{ {k: list(np.shape(v)) for k, v in views.items()} }; expected [{n}, D], one D")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def conditions(self) -> tuple[str, ...]:
        """``clean``, then ``audio:<kind>`` and ``image:<kind>`` for each corrupted view held."""
        return (CLEAN, *(f"{m}:{k}" for m in MODALITIES for k in getattr(self, m) if k != CLEAN))

    def condition(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(audio [N, Da], image [N, Di]) under condition ``name`` (one modality corrupted at most)."""
        if name == CLEAN:
            return self.audio[CLEAN], self.image[CLEAN]
        modality, _, kind = name.partition(":")
        if modality not in MODALITIES or kind not in getattr(self, modality) or kind == CLEAN:
            raise ValueError(f"condition {name!r} unknown; expected one of {list(self.conditions)}")
        if modality == "audio":
            return self.audio[kind], self.image[CLEAN]
        return self.audio[CLEAN], self.image[kind]

    @property
    def splits(self) -> tuple[int, int]:
        """The widths (Da, Di) of the two inputs."""
        return int(self.audio[CLEAN].shape[1]), int(self.image[CLEAN].shape[1])


@dataclass(frozen=True)
class FusionFitConfig:
    """How the heads are fitted (saved with the study's report).

    ``l2_grid``: ridge strengths tried on the validation pairs, for every head;
    ``corrupt_share``: share of training pairs given one corrupted modality (augmented heads);
    by default two thirds, so that clean, audio-corrupted and image-corrupted pairs are a third
    each (in ``benchmarks/study_fusion.py`` the gated head's mean validation accuracy over the
    five conditions was 92.2 % with a half, 93.3-94.5 % with two thirds over two draws of the pairs);
    ``gate_l2``: ridge on the gate's weights, relative to the chosen L2; ``max_steps``:
    L-BFGS iterations of the gated head, which also act as a brake (600 instead of 200 gave
    89.6 % instead of 92.2 % on the same validation conditions); ``seed``: which pairs are
    corrupted, and how.
    """

    l2_grid: tuple[float, ...] = L2_GRID
    corrupt_share: float = 2.0 / 3.0
    gate_l2: float = 1.0
    max_steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "l2_grid", tuple(float(v) for v in self.l2_grid))
        if not self.l2_grid or any(not v > 0 for v in self.l2_grid):
            raise ValueError(f"FusionFitConfig.l2_grid is {self.l2_grid!r}; expected positive numbers")
        if not 0.0 <= self.corrupt_share < 1.0:
            raise ValueError(f"FusionFitConfig.corrupt_share is {self.corrupt_share!r}; expected a share in [0, 1)")
        if not self.gate_l2 >= 0:
            raise ValueError(f"FusionFitConfig.gate_l2 is {self.gate_l2!r}; expected >= 0")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"FusionFitConfig.max_steps is {self.max_steps!r}; expected an integer >= 1")


@dataclass
class FittedHead:
    """A fitted head: ``arrays`` to ship (``contract/tensors.py`` names -> float32 arrays), its
    ``labels``, its ``fusion`` (None for one modality, ``concat`` or ``gated``), its ``input``
    (``audio``, ``image`` or ``fused``) and ``info`` (chosen L2, validation accuracy per L2)."""

    arrays: dict[str, np.ndarray]
    labels: tuple[str, ...]
    input: str
    fusion: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def head_arrays(self, name: str, replay_embeddings: np.ndarray | None = None,
                    replay_labels: np.ndarray | None = None) -> Any:
        """This head as ``export/bundle.py``'s ``HeadArrays`` called ``name``, ready for ``write_bundle``."""
        from ..bundle import HeadArrays

        extra = {k: v for k, v in self.arrays.items() if k not in (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS)}
        return HeadArrays(name, self.labels, self.arrays[tensors.HEAD_WEIGHT], self.arrays[tensors.HEAD_BIAS],
                          replay_embeddings=replay_embeddings, replay_labels=replay_labels, input=self.input,
                          fusion=self.fusion, extra=extra or None)


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (mean, scale) of x [N, D], float32 [D] each; scale floored at
    1 % of the median scale so that a near-constant feature does not blow up."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    floor = _SCALE_FLOOR * float(np.median(std)) if np.median(std) > 0 else 1.0
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def _inputs(data: PairEmbeddings, input_: str, condition: str = CLEAN) -> np.ndarray:
    audio, image = data.condition(condition)
    return {"audio": audio, "image": image, "fused": np.concatenate([audio, image], axis=1)}[input_]


def corrupted_training_set(data: PairEmbeddings, share: float, seed: int
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The training pairs with ``share`` of them given one corrupted modality.

    Of the corrupted pairs half lose their audio, half their image; within a modality each
    corruption kind held in ``data`` is used equally often. Returns (audio [N, Da], image
    [N, Di], labels [N], the condition of each pair).
    """
    rng = np.random.default_rng([seed, 17])
    audio, image = data.audio[CLEAN].copy(), data.image[CLEAN].copy()
    n = len(data)
    conditions = [CLEAN] * n
    chosen = rng.permutation(n)[: int(round(share * n))]
    halves = {"audio": chosen[: chosen.size // 2], "image": chosen[chosen.size // 2:]}
    for modality, idx in halves.items():
        kinds = [k for k in getattr(data, modality) if k != CLEAN]
        if not kinds:
            raise ValueError(f"corruption augmentation needs corrupted {modality} embeddings; PairEmbeddings."
                             f"{modality} has only {sorted(getattr(data, modality))}")
        target = audio if modality == "audio" else image
        for j, i in enumerate(idx):
            kind = kinds[j % len(kinds)]
            target[i] = getattr(data, modality)[kind][i]
            conditions[i] = f"{modality}:{kind}"
    return audio, image, data.labels.copy(), conditions


def _fit_z(z: np.ndarray, y: np.ndarray, label_names: tuple[str, ...], l2: float) -> tuple[np.ndarray, np.ndarray]:
    """A linear head on standardised inputs: (v [C, D], a [C]) in ``label_names`` order."""
    from edgetune.edge.head import fit_head

    v, a, got = fit_head(z, [label_names[i] for i in y], l2=l2)
    order = [got.index(name) for name in label_names]  # fit_head sorts new classes by name
    return v[order], a[order]


def _accuracy_z(v: np.ndarray, a: np.ndarray, z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(z @ v.T + a, axis=1) == y))


def fit_linear_head(train: PairEmbeddings, input_: str, label_names: Sequence[str], *,
                    val: PairEmbeddings | None = None, config: FusionFitConfig = FusionFitConfig(),
                    augment: bool = False) -> FittedHead:
    """A linear head on ``input_`` (``audio``, ``image`` or ``fused``: the two side by side, the
    ``concat`` head), standardisation folded into ``weight`` / ``bias``.

    ``augment``: train on :func:`corrupted_training_set` and choose L2 by the mean validation
    accuracy over all conditions ``val`` holds; otherwise on clean pairs, chosen on clean ones.
    Ties go to the stronger L2.
    """
    names = tuple(str(v) for v in label_names)
    if input_ not in ("audio", "image", "fused"):
        raise ValueError(f"input is {input_!r}; expected 'audio', 'image' or 'fused'")
    if augment:
        audio, image, y, _ = corrupted_training_set(train, config.corrupt_share, config.seed)
        x = {"audio": audio, "image": image, "fused": np.concatenate([audio, image], axis=1)}[input_]
    else:
        x, y = _inputs(train, input_), train.labels
    mean, scale = standardiser(_inputs(train, input_))
    z = (x - mean) / scale
    conditions = (val.conditions if augment else (CLEAN,)) if val is not None else ()
    table: dict[str, float] = {}
    fits = {}
    for l2 in config.l2_grid if val is not None else config.l2_grid[-1:]:
        fits[l2] = _fit_z(z, y, names, l2)
        if val is not None:
            table[f"{l2:g}"] = float(np.mean([_accuracy_z(*fits[l2], (_inputs(val, input_, c) - mean) / scale,
                                                          val.labels) for c in conditions]))
    chosen = max(l2 for l2 in fits if not table or table[f"{l2:g}"] >= max(table.values()) - 1e-12)
    v, a = fits[chosen]
    weight = (v / scale).astype(np.float32)  # z @ v.T + a == x @ (v / scale).T + (a - (mean / scale) @ v.T)
    bias = (a - (mean / scale) @ v.T).astype(np.float32)
    fusion = "concat" if input_ == "fused" else None
    return FittedHead({tensors.HEAD_WEIGHT: weight, tensors.HEAD_BIAS: bias}, names, input_, fusion,
                      {"l2": chosen, "val_accuracy_by_l2": table, "augmented": augment,
                       "val_conditions": list(conditions)})


def fit_concat_head(train: PairEmbeddings, label_names: Sequence[str], *, val: PairEmbeddings | None = None,
                    config: FusionFitConfig = FusionFitConfig(), augment: bool = False) -> FittedHead:
    """The ``concat`` head: linear over [audio; image] (:func:`fit_linear_head` with input ``fused``)."""
    return fit_linear_head(train, "fused", label_names, val=val, config=config, augment=augment)


def gated_logits_torch(x: Any, arrays: Mapping[str, Any], splits: Sequence[int]) -> Any:
    """The contract's gated forward in torch: x [B, D] -> (logits [B, C], gates [B, M]).

    ``arrays``: the :data:`~edgetune.contract.tensors.GATED_HEAD_ARRAYS` as tensors (or arrays).
    The training below and the tests use this one function, so what is trained is what ships.
    """
    import torch

    t = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for k, v in arrays.items()}
    x = torch.as_tensor(x)
    z = (x - t[tensors.INPUT_MEAN]) / t[tensors.INPUT_SCALE]  # (B, D)
    gates = torch.softmax(z @ t[tensors.GATE_WEIGHT].T + t[tensors.GATE_BIAS], dim=1)  # (B, D) @ (D, M) -> (B, M)
    m = len(splits)
    parts = torch.split(z, [int(s) for s in splits], dim=1)  # z_m: (B, D_m) each
    fused = torch.cat([m * gates[:, k:k + 1] * part for k, part in enumerate(parts)], dim=1)  # concat_m(M g_m z_m)
    return fused @ t[tensors.HEAD_WEIGHT].T + t[tensors.HEAD_BIAS], gates  # (B, D) @ (D, C) -> (B, C)


def _train_gated(x: np.ndarray, y: np.ndarray, mean: np.ndarray, scale: np.ndarray, splits: tuple[int, ...],
                 n_classes: int, l2: float, gate_l2: float, max_steps: int) -> dict[str, np.ndarray]:
    """Full-batch L-BFGS on mean cross-entropy + l2/2 ||weight||^2 + gate_l2/2 ||gate_weight||^2, from zeros."""
    import torch

    d, m = x.shape[1], len(splits)
    threads = torch.get_num_threads()
    # One thread: the problem is small, and on shared cores more threads only wait on each other
    # (measured: 5-10x slower per step with 2 threads under load).
    torch.set_num_threads(1)
    try:
        return _lbfgs_gated(torch, x, y, mean, scale, splits, n_classes, l2, gate_l2, max_steps, d, m)
    finally:
        torch.set_num_threads(threads)


def _lbfgs_gated(torch: Any, x: np.ndarray, y: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 splits: tuple[int, ...], n_classes: int, l2: float, gate_l2: float, max_steps: int, d: int,
                 m: int) -> dict[str, np.ndarray]:
    with torch.random.fork_rng():
        torch.manual_seed(0)  # nothing is random below; fixed in case a torch default ever draws
        params = {tensors.HEAD_WEIGHT: torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True),
                  tensors.HEAD_BIAS: torch.zeros(n_classes, dtype=torch.float64, requires_grad=True),
                  tensors.GATE_WEIGHT: torch.zeros(m, d, dtype=torch.float64, requires_grad=True),
                  tensors.GATE_BIAS: torch.zeros(m, dtype=torch.float64, requires_grad=True)}
        fixed = {tensors.INPUT_MEAN: torch.from_numpy(mean.astype(np.float64)),
                 tensors.INPUT_SCALE: torch.from_numpy(scale.astype(np.float64))}
        xt, yt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(y.astype(np.int64))
        opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=max_steps, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits, _ = gated_logits_torch(xt, {**params, **fixed}, splits)
            loss = (torch.nn.functional.cross_entropy(logits, yt)
                    + 0.5 * l2 * (params[tensors.HEAD_WEIGHT] ** 2).sum()
                    + 0.5 * gate_l2 * (params[tensors.GATE_WEIGHT] ** 2).sum())
            loss.backward()
            return loss

        opt.step(closure)
    out = {k: v.detach().numpy().astype(np.float32) for k, v in params.items()}
    out[tensors.INPUT_MEAN] = mean.astype(np.float32)
    out[tensors.INPUT_SCALE] = scale.astype(np.float32)
    return {k: out[k] for k in tensors.GATED_HEAD_ARRAYS}


def fit_gated_head(train: PairEmbeddings, label_names: Sequence[str], *, val: PairEmbeddings | None = None,
                   config: FusionFitConfig = FusionFitConfig()) -> FittedHead:
    """The ``gated`` head, trained with modality corruption augmentation (module docstring).

    L2 is chosen by the mean validation accuracy over all conditions ``val`` holds (clean and
    each corruption), ties to the stronger; without ``val`` the strongest of the grid.
    Deterministic: the same inputs and config give the same arrays.
    """
    from edgetune.edge.fusion import GatedHead

    names = tuple(str(v) for v in label_names)
    splits = train.splits
    audio, image, y, _ = corrupted_training_set(train, config.corrupt_share, config.seed)
    x = np.concatenate([audio, image], axis=1)
    mean, scale = standardiser(_inputs(train, "fused"))
    table: dict[str, float] = {}
    fits = {}
    for l2 in config.l2_grid if val is not None else config.l2_grid[-1:]:
        fits[l2] = _train_gated(x, y, mean, scale, splits, len(names), l2, l2 * config.gate_l2, config.max_steps)
        if val is not None:
            head = GatedHead(**fits[l2], labels=names, splits=splits)
            table[f"{l2:g}"] = float(np.mean([np.mean(np.argmax(head.predict_proba(_inputs(val, "fused", c)), axis=1)
                                                      == val.labels) for c in val.conditions]))
    chosen = max(l2 for l2 in fits if not table or table[f"{l2:g}"] >= max(table.values()) - 1e-12)
    log.info("gated head: L2 %g (validation %s)", chosen, table)
    return FittedHead(fits[chosen], names, "fused", "gated",
                      {"l2": chosen, "gate_l2": chosen * config.gate_l2, "val_accuracy_by_l2": table,
                       "augmented": True, "corrupt_share": config.corrupt_share,
                       "val_conditions": list(val.conditions) if val is not None else []})
