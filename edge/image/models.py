"""The bundle's image embedder in ONNX Runtime: uint8 frames -> embeddings.

The device does no image maths: ``image_embedder.onnx`` takes uint8 frames ``[B, H, W, 3]`` in
the bundle's colour order at any size, and resizes, crops and normalises inside the graph
(``contract/image_spec.py``). Frames of one call must share a size, so :meth:`ImageModels.embed`
groups a list of frames by size; enrolment, evaluation and the camera pipeline all call it, so
they compute the same numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from edgetune.contract import ContractError, tensors
from edgetune.contract.image_spec import ImageSpec

from ..bundle import Bundle
from ..runtime.providers import ProviderSettings, create_session

log = logging.getLogger(__name__)

#: Frames per embedder call.
DEFAULT_BATCH = 16


def check_frame(frame: np.ndarray, where: str = "frame") -> np.ndarray:
    """``frame`` as a contiguous uint8 [H, W, 3] array, or a ValueError naming what it is."""
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{where} is {array.dtype} {list(array.shape)}; expected uint8 [H, W, 3] (RGB order)")
    return np.ascontiguousarray(array)


class ImageModels:
    """An ONNX Runtime session over a bundle's ``image_embedder.onnx``.

    Attributes: ``spec`` (the manifest's image section), ``embedding_size``, ``provider``.
    """

    def __init__(self, bundle: Bundle, settings: ProviderSettings | None = None, *,
                 state_dir: Path | None = None, available: list[str] | None = None) -> None:
        image = bundle.manifest.image
        if image is None:
            raise ContractError(f"bundle {bundle.bundle_id} has no image modality (modalities: "
                                f"{list(bundle.manifest.modalities)}); a camera pipeline needs one")
        self._open(image, bundle.directory, settings, state_dir, available)

    @classmethod
    def from_files(cls, image: ImageSpec, directory: Path, settings: ProviderSettings | None = None) -> "ImageModels":
        """A session over the graph in ``directory`` that ``image`` describes (the exporter embeds
        its training photos this way, so host and device compute the same embeddings)."""
        self = cls.__new__(cls)
        self._open(image, Path(directory), settings, None, None)
        return self

    def _open(self, image: ImageSpec, directory: Path, settings: ProviderSettings | None, state_dir: Path | None,
              available: list[str] | None) -> None:
        self.spec = image
        self.embedding_size = image.embedding_size
        file = image.embedder_graph.file("fp32")
        self._session = create_session(directory / file, settings or ProviderSettings(), state_dir=state_dir,
                                       available=available)
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if tensors.IMAGE_EMBEDDER_INPUT not in inputs or tensors.IMAGE_EMBEDDER_OUTPUT not in outputs:
            raise ContractError(f"bundle file {file}: inputs {list(inputs)}, outputs {list(outputs)}; expected input "
                                f"{tensors.IMAGE_EMBEDDER_INPUT!r} and output {tensors.IMAGE_EMBEDDER_OUTPUT!r} "
                                "(contract/tensors.py)")
        shape = inputs[tensors.IMAGE_EMBEDDER_INPUT].shape
        if len(shape) != 4 or shape[3] != 3 or inputs[tensors.IMAGE_EMBEDDER_INPUT].type != "tensor(uint8)":
            raise ContractError(f"bundle file {file}: input {tensors.IMAGE_EMBEDDER_INPUT!r} is "
                                f"{inputs[tensors.IMAGE_EMBEDDER_INPUT].type} {shape}; expected uint8 [B, H, W, 3]")
        # A graph exported with a fixed batch of 1 takes frames one at a time.
        self.max_batch = 1 if shape[0] == 1 else DEFAULT_BATCH
        self.provider = self._session.get_providers()[0]
        self.providers = {"image_embedder": self.provider}

    def embed_batch(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] (one size) -> float32 [B, embedding_size]."""
        out = self._session.run([tensors.IMAGE_EMBEDDER_OUTPUT], {tensors.IMAGE_EMBEDDER_INPUT: frames})[0]
        if out.shape != (frames.shape[0], self.embedding_size):
            raise ContractError(f"image embedder returned {out.shape} for frames {frames.shape}; expected "
                                f"[{frames.shape[0]}, {self.embedding_size}]")
        return out.astype(np.float32, copy=False)

    def embed(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Frames (uint8 [H, W, 3], any sizes) -> float32 [N, embedding_size], in order."""
        checked = [check_frame(f, f"frame {i}") for i, f in enumerate(frames)]
        out = np.empty((len(checked), self.embedding_size), dtype=np.float32)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(checked):
            by_size.setdefault(frame.shape[:2], []).append(i)
        for indices in by_size.values():
            for start in range(0, len(indices), self.max_batch):
                part = indices[start:start + self.max_batch]
                out[part] = self.embed_batch(np.stack([checked[i] for i in part]))
        return out

    def embed_one(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 [H, W, 3] frame -> float32 [embedding_size]."""
        return self.embed_batch(check_frame(frame)[None])[0]
