"""The DS-CNN keyword-spotting embedder (MLPerf Tiny style) and the keyword model around it.

``DsCnn`` maps a clip's features ``[B, T, F]`` to an embedding ``[B, D]``; ``KeywordModel`` adds
the linear head the device fine-tunes. The feature normalisation (per-coefficient mean and std
of the training data) is part of the embedder as buffers, so it is inside the exported graph and
the device needs no statistics of its own.

Checkpoints carry their own architecture (:class:`DsCnnConfig`), labels and front-end parameters
(nanoGPT style): :func:`save_checkpoint` / :func:`load_checkpoint`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgetune.contract.manifest import MfccParams

CHECKPOINT_FORMAT = "edgetune.keyword-model.v1"


@dataclass(frozen=True)
class DsCnnConfig:
    """Architecture of :class:`DsCnn`.

    ``n_frames`` x ``n_features`` is the feature map of one clip; ``channels`` is the embedding
    size ``D``. The first convolution has kernel ``first_kernel`` and stride ``first_stride``
    (time, feature); then ``n_blocks`` depthwise-separable blocks of 3x3 depthwise + 1x1 pointwise.
    """

    n_frames: int
    n_features: int
    channels: int = 64
    n_blocks: int = 4
    first_kernel: tuple[int, int] = (10, 4)
    first_stride: tuple[int, int] = (2, 2)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("n_frames", "n_features", "channels", "n_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DsCnnConfig.{name} is {value!r}; expected a positive integer")
        for name in ("first_kernel", "first_stride"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(f"DsCnnConfig.{name} is {value!r}; expected two positive integers (time, feature)")
            object.__setattr__(self, name, value)
        if self.first_kernel[0] > self.n_frames or self.first_kernel[1] > self.n_features:
            raise ValueError(f"DsCnnConfig.first_kernel {self.first_kernel} is larger than the feature map "
                             f"({self.n_frames} x {self.n_features})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DsCnnConfig.dropout is {self.dropout!r}; expected 0 <= dropout < 1")

    @property
    def embedding_size(self) -> int:
        return self.channels


def _conv_bn_relu(conv: nn.Conv2d) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU())


class DsCnn(nn.Module):
    """Features float32 ``[B, T, F]`` to embedding float32 ``[B, D]`` (``D = config.channels``)."""

    def __init__(self, config: DsCnnConfig) -> None:
        super().__init__()
        if not isinstance(config, DsCnnConfig):
            raise TypeError(f"config is {type(config).__name__}; expected DsCnnConfig")
        self.config = config
        c = config.channels
        self.register_buffer("feature_mean", torch.zeros(config.n_features))  # [F]
        self.register_buffer("feature_std", torch.ones(config.n_features))  # [F]
        kt, kf = config.first_kernel
        self.stem = _conv_bn_relu(nn.Conv2d(1, c, (kt, kf), stride=config.first_stride, padding=(kt // 2, kf // 2),
                                            bias=False))
        blocks = []
        for _ in range(config.n_blocks):
            blocks.append(_conv_bn_relu(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)))  # depthwise
            blocks.append(_conv_bn_relu(nn.Conv2d(c, c, 1, bias=False)))  # pointwise
        self.blocks = nn.Sequential(*blocks)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-3) -> None:
        """Set the per-coefficient normalisation from training features: ``mean``, ``std`` ``[F]``.

        ``std`` is floored at ``min_std`` so a constant coefficient cannot divide by zero.
        """
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        n = self.config.n_features
        if mean.numel() != n or std.numel() != n:
            raise ValueError(f"normalisation has {mean.numel()} means and {std.numel()} stds; expected {n} of each")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("normalisation statistics contain NaN or infinity")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(torch.clamp(std, min=min_std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feature_mean) / self.feature_std  # [B, T, F]
        x = self.stem(x.unsqueeze(1))  # [B, 1, T, F] -> [B, C, T', F']
        x = self.blocks(x)  # [B, C, T', F']
        return x.mean(dim=(2, 3))  # global average pooling -> [B, C]


class KeywordModel(nn.Module):
    """An embedder and a linear head: features ``[B, T, F]`` to logits ``[B, C]``."""

    def __init__(self, embedder: DsCnn, head: nn.Linear, dropout: float | None = None) -> None:
        super().__init__()
        if head.in_features != embedder.config.embedding_size:
            raise ValueError(f"head takes {head.in_features} inputs; "
                             f"the embedder gives {embedder.config.embedding_size}")
        self.embedder = embedder
        self.dropout = nn.Dropout(embedder.config.dropout if dropout is None else dropout)
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embedder(features)))  # [B, D] -> [B, C]


def save_checkpoint(path: Path, model: KeywordModel, *, labels: tuple[str, ...], params: MfccParams,
                    clip_samples: int, extra: dict[str, Any] | None = None) -> None:
    """Save weights with everything needed to rebuild the model: architecture, labels, front-end."""
    torch.save({
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.embedder.config),
        "labels": list(labels),
        "frontend": asdict(params),
        "clip_samples": int(clip_samples),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }, Path(path))


def load_checkpoint(path: Path) -> tuple[KeywordModel, dict[str, Any]]:
    """Rebuild a :class:`KeywordModel` from :func:`save_checkpoint`'s file (in eval mode).

    Returns the model and the checkpoint's metadata (``labels`` as a tuple, ``frontend`` as
    :class:`MfccParams`, ``clip_samples``, ``config`` as :class:`DsCnnConfig`, ``extra``).
    """
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an edgetune keyword-model checkpoint (format {CHECKPOINT_FORMAT})")
    config = DsCnnConfig(**data["config"])
    labels = tuple(data["labels"])
    model = KeywordModel(DsCnn(config), nn.Linear(config.embedding_size, len(labels)))
    model.load_state_dict(data["state_dict"])
    model.eval()
    meta = {"config": config, "labels": labels, "frontend": MfccParams(**data["frontend"]),
            "clip_samples": data["clip_samples"], "extra": data["extra"]}
    return model, meta
