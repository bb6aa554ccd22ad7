"""An ONNX graph in a bundle, with room for several precision variants of it.

Each graph (front-end, embedder) is listed as one or more variants, each a file and the
precision its weights are stored in. Every bundle has the ``fp32`` variant; the device runs it
(TensorRT builds its own fp16 engine from it on the device). INT8 variants join
:data:`PRECISIONS` when the exporter writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .checks import require

#: Precisions a graph variant may declare; ``fp32`` is required.
PRECISIONS = ("fp32",)


@dataclass(frozen=True)
class GraphVariant:
    """One file of a graph: ``file`` inside the bundle, stored in ``precision``."""

    file: str
    precision: str = "fp32"

    def __post_init__(self) -> None:
        require(isinstance(self.file, str) and self.file.endswith(".onnx") and "/" not in self.file
                and not self.file.startswith("."), "graph file", self.file, "a file name ending in .onnx, no folders")
        require(self.precision in PRECISIONS, f"graph {self.file} precision", self.precision,
                f"one of {list(PRECISIONS)}")


@dataclass(frozen=True)
class Graph:
    """A graph's variants, one per precision."""

    variants: tuple[GraphVariant, ...]

    def __post_init__(self) -> None:
        precisions = [v.precision for v in self.variants]
        require(len(set(precisions)) == len(precisions) and "fp32" in precisions, "graph variants", precisions,
                "one variant per precision, fp32 among them")

    @classmethod
    def fp32(cls, file: str) -> "Graph":
        return cls((GraphVariant(file, "fp32"),))

    def file(self, precision: str = "fp32") -> str:
        """The file of the ``precision`` variant."""
        for v in self.variants:
            if v.precision == precision:
                return v.file
        require(False, "graph precision", precision, f"one of {[v.precision for v in self.variants]}")
        raise AssertionError  # unreachable

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(v.file for v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [{"file": v.file, "precision": v.precision} for v in self.variants]}

    @classmethod
    def from_dict(cls, data: Any, what: str) -> "Graph":
        require(isinstance(data, Mapping) and set(data) == {"variants"}, what, data,
                "an object {'variants': [{'file': ..., 'precision': 'fp32'}, ...]}")
        variants = data["variants"]
        require(isinstance(variants, list) and variants and all(isinstance(v, Mapping) for v in variants),
                f"{what}.variants", variants, "a non-empty list of {'file', 'precision'} objects")
        for v in variants:
            require(set(v) <= {"file", "precision"} and "file" in v, f"{what}.variants[]", v,
                    "keys 'file' and 'precision'")
        return cls(tuple(GraphVariant(**v) for v in variants))
