"""The gated fused head in NumPy: a learned gate weighs each modality per sample, then a linear layer.

This is the seed's "local feature fusion" as the bundle's contract writes it
(``contract/tensors.py``, beside ``GATE_WEIGHT``). The input ``x`` is the fusion's inputs'
embeddings side by side (audio ``[Da]`` then image ``[Di]``, in ``fusion.inputs`` order), and::

    z      = (x - input_mean) / input_scale                   # (B, D)
    g      = softmax(z @ gate_weight.T + gate_bias)           # (B, D) @ (D, M) -> (B, M)
    fused  = concat_m(M * g[:, m] * z_m)                      # z_m: modality m's columns of z
    logits = fused @ weight.T + bias                          # (B, D) @ (D, C) -> (B, C)

With equal gates (``g_m = 1 / M``) ``fused`` is ``z`` itself, so the head is then the linear head
on the standardised inputs; the gate can only move weight from one modality to another. When
one modality is corrupted (a silent microphone, a covered camera) a trained gate turns its
weight to the other, which a plain concatenation cannot do. :meth:`GatedHead.gates` returns
``g``, for the report and for the device's telemetry.

No torch here: the exporter trains the gate (``export/fusion/heads.py``); the device only runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from edgetune.contract import tensors

from ..head import Head, _softmax

#: The values of ``HeadSpec.fusion`` that :func:`load_fused_head` accepts.
FUSIONS = ("concat", "gated")


def _vector(value: np.ndarray, name: str, width: int) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=np.float32)
    if array.shape != (width,):
        raise ValueError(f"gated head {name} has shape {list(array.shape)}; expected [{width}]")
    return array


@dataclass(frozen=True, eq=False)
class GatedHead:
    """A gated fused head (formula in the module docstring).

    Arrays (float32): ``weight`` [C, D], ``bias`` [C], ``gate_weight`` [M, D], ``gate_bias`` [M],
    ``input_mean`` [D], ``input_scale`` [D] (all > 0). ``labels``: C distinct names. ``splits``:
    the width of each of the M inputs, in ``fusion.inputs`` order, summing to D (e.g. ``(96,
    1280)`` for speech_embedding audio and EfficientNet-Lite0 images).
    """

    weight: np.ndarray
    bias: np.ndarray
    gate_weight: np.ndarray
    gate_bias: np.ndarray
    input_mean: np.ndarray
    input_scale: np.ndarray
    labels: tuple[str, ...]
    splits: tuple[int, ...]

    def __post_init__(self) -> None:
        # The linear part is checked by Head (shapes, labels, finite values) and kept as one.
        linear = Head(self.weight, self.bias, self.labels)
        d = linear.embedding_size
        splits = tuple(int(s) for s in self.splits)
        if len(splits) < 2 or any(s < 1 for s in splits) or sum(splits) != d:
            raise ValueError(f"gated head splits {list(self.splits)}; expected two or more positive widths, one per "
                             f"input (e.g. [96, 1280] for audio then image), summing to the weight's width {d}")
        m = len(splits)
        gate_weight = np.ascontiguousarray(self.gate_weight, dtype=np.float32)
        if gate_weight.shape != (m, d):
            raise ValueError(f"gated head gate_weight has shape {list(gate_weight.shape)}; expected [{m}, {d}] "
                             f"(one row per input, over all {d} standardised input values)")
        gate_bias = _vector(self.gate_bias, "gate_bias", m)
        mean = _vector(self.input_mean, "input_mean", d)
        scale = _vector(self.input_scale, "input_scale", d)
        for name, array in (("gate_weight", gate_weight), ("gate_bias", gate_bias), ("input_mean", mean),
                            ("input_scale", scale)):
            if not np.isfinite(array).all():
                raise ValueError(f"gated head {name} contains NaN or Inf")
        if not (scale > 0).all():
            raise ValueError(f"gated head input_scale has {int((scale <= 0).sum())} values <= 0; expected all > 0")
        object.__setattr__(self, "weight", linear.weight)
        object.__setattr__(self, "bias", linear.bias)
        object.__setattr__(self, "labels", linear.labels)
        object.__setattr__(self, "gate_weight", gate_weight)
        object.__setattr__(self, "gate_bias", gate_bias)
        object.__setattr__(self, "input_mean", mean)
        object.__setattr__(self, "input_scale", scale)
        object.__setattr__(self, "splits", splits)
        # Column index where each input starts, and which input each column belongs to.
        object.__setattr__(self, "_owner", np.repeat(np.arange(m), splits))

    @property
    def embedding_size(self) -> int:
        """D, the width of the fused input (the sum of ``splits``)."""
        return int(self.weight.shape[1])

    @property
    def n_inputs(self) -> int:
        """M, the number of fused inputs (modalities)."""
        return len(self.splits)

    def _standardise(self, embeddings: np.ndarray) -> tuple[np.ndarray, bool]:
        x = np.asarray(embeddings, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.embedding_size:
            raise ValueError(f"fused embeddings have shape {list(x.shape)}; expected [B, {self.embedding_size}] or "
                             f"[{self.embedding_size}]: the inputs' embeddings side by side, widths "
                             f"{list(self.splits)}")
        z = (np.atleast_2d(x) - self.input_mean) / self.input_scale  # (B, D)
        return z, single

    def _gates(self, z: np.ndarray) -> np.ndarray:
        return _softmax((z @ self.gate_weight.T + self.gate_bias).astype(np.float32, copy=False))  # (B, M)

    def gates(self, embeddings: np.ndarray) -> np.ndarray:
        """The gate weights ``g``, float32 [B, M] for embeddings [B, D] (or [M] for one [D]); rows sum to 1."""
        z, single = self._standardise(embeddings)
        g = self._gates(z)
        return g[0] if single else g

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Class posteriors, float32 [B, C] for fused embeddings [B, D] (or [C] for one [D])."""
        z, single = self._standardise(embeddings)
        g = self._gates(z)
        fused = z * (self.n_inputs * g[:, self._owner])  # (B, D): each column times its input's M * g_m
        proba = _softmax((fused @ self.weight.T + self.bias).astype(np.float32, copy=False))  # (B, C)
        return proba[0] if single else proba

    def predict(self, embeddings: np.ndarray) -> list[str]:
        """The most likely label of each fused embedding [B, D]."""
        proba = self.predict_proba(np.atleast_2d(embeddings))
        return [self.labels[i] for i in np.argmax(proba, axis=1)]


def load_fused_head(arrays: Mapping[str, np.ndarray], spec_fusion: str, labels: Sequence[str],
                    splits: Sequence[int]) -> Head | GatedHead:
    """A fused head from its arrays (a head ``.npz``'s contents): :class:`~edgetune.edge.head.Head`
    for ``spec_fusion == "concat"``, :class:`GatedHead` for ``"gated"``.

    ``spec_fusion`` is the manifest's ``HeadSpec.fusion``; ``splits`` the width of each fused input
    in ``fusion.inputs`` order (checked against the arrays for both kinds). Raises ValueError
    naming a missing or unexpected array.
    """
    if spec_fusion not in FUSIONS:
        raise ValueError(f"fused head fusion is {spec_fusion!r}; expected one of {list(FUSIONS)}")
    want = (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS) if spec_fusion == "concat" else tensors.GATED_HEAD_ARRAYS
    have = set(arrays)
    missing, extra = [k for k in want if k not in have], sorted(have - set(want))
    if missing or extra:
        raise ValueError(f"a {spec_fusion} head's arrays are {sorted(have)}; expected exactly {sorted(want)}"
                         + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else ""))
    widths = tuple(int(s) for s in splits)
    if spec_fusion == "concat":
        head = Head(arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS], tuple(labels))
        if len(widths) < 2 or any(s < 1 for s in widths) or sum(widths) != head.embedding_size:
            raise ValueError(f"concat head splits {list(widths)}; expected two or more positive widths summing to "
                             f"the weight's width {head.embedding_size}")
        return head
    return GatedHead(weight=arrays[tensors.HEAD_WEIGHT], bias=arrays[tensors.HEAD_BIAS],
                     gate_weight=arrays[tensors.GATE_WEIGHT], gate_bias=arrays[tensors.GATE_BIAS],
                     input_mean=arrays[tensors.INPUT_MEAN], input_scale=arrays[tensors.INPUT_SCALE],
                     labels=tuple(labels), splits=widths)
