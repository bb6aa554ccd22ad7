"""The image modality of a bundle: what the image embedder takes, and the graph.

The device hands ``image_embedder.onnx`` uint8 frames ``[B, H, W, 3]`` (``layout`` HWC, channels
in ``colour_order``) at any size; resizing to ``height_px`` x ``width_px`` and the normalisation
``(x / 255 - mean) / std`` happen inside the graph, the one documented place, so the device does
no image maths of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .checks import is_int, is_number, require
from .graphs import Graph
from . import tensors


@dataclass(frozen=True)
class ImageSpec:
    """The image modality: input size, layout, colour order, normalisation, embedder, graph."""

    backbone: str
    height_px: int
    width_px: int
    embedding_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    colour_order: str = "RGB"
    layout: str = "HWC"
    dtype: str = "uint8"
    embedder_graph: Graph = Graph.fp32(tensors.IMAGE_EMBEDDER_FILE)

    def __post_init__(self) -> None:
        require(isinstance(self.backbone, str) and 0 < len(self.backbone) <= 64, "image.backbone", self.backbone,
                "a backbone name")
        for name in ("height_px", "width_px"):
            require(is_int(getattr(self, name)) and 8 <= getattr(self, name) <= 4096, f"image.{name}",
                    getattr(self, name), "pixels, an integer in [8, 4096]")
        require(is_int(self.embedding_size) and self.embedding_size >= 1, "image.embedding_size",
                self.embedding_size, "an integer >= 1")
        for name in ("mean", "std"):
            value = tuple(getattr(self, name))
            require(len(value) == 3 and all(is_number(v) for v in value), f"image.{name}", value,
                    "three numbers, one per channel in colour_order")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        require(all(v > 0 for v in self.std), "image.std", self.std, "positive numbers")
        require(self.colour_order in ("RGB", "BGR"), "image.colour_order", self.colour_order, "'RGB' or 'BGR'")
        require(self.layout == "HWC", "image.layout", self.layout, "'HWC' (frames as cameras give them)")
        require(self.dtype == "uint8", "image.dtype", self.dtype, "'uint8'")

    @property
    def files(self) -> tuple[str, ...]:
        return self.embedder_graph.files

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "height_px": self.height_px, "width_px": self.width_px,
                "embedding_size": self.embedding_size, "mean": list(self.mean), "std": list(self.std),
                "colour_order": self.colour_order, "layout": self.layout, "dtype": self.dtype,
                "embedder_graph": self.embedder_graph.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "ImageSpec":
        keys = {"backbone", "height_px", "width_px", "embedding_size", "mean", "std", "colour_order", "layout",
                "dtype", "embedder_graph"}
        require(isinstance(data, Mapping) and set(data) == keys, "image keys",
                sorted(data) if isinstance(data, Mapping) else data, f"exactly {sorted(keys)}")
        values = dict(data)
        for name in ("mean", "std"):
            require(isinstance(values[name], list), f"image.{name}", values[name], "a list of three numbers")
            values[name] = tuple(values[name])
        values["embedder_graph"] = Graph.from_dict(values["embedder_graph"], "image.embedder_graph")
        return cls(**values)
