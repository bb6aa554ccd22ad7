"""The image modality's preprocessing and embedding stages: a camera frame is one step.

There is nothing to compute on the device before the graph (``image_embedder.onnx`` resizes and
normalises inside, ``contract/image_spec.py``), so preprocessing is checking: each
:class:`~.sources.Frame` becomes a :class:`~edgetune.edge.pipeline.stages.Step` at the frame's
stream time, and a frame that is not uint8 [H, W, 3] becomes a failed step, counted as
``bad_frames`` (the stream goes on).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np

from ..pipeline.stages import Step
from .models import ImageModels, check_frame

log = logging.getLogger(__name__)


class ImagePreprocessor:
    """Frames -> steps, one per frame, at the frame's ``offset_s``."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {"bad_frames": 0}
        self._index = 0
        self._position_s = 0.0

    @property
    def position_s(self) -> float:
        """Stream time of the newest frame."""
        return self._position_s

    def push(self, frame: Any) -> Iterator[Step]:
        self._index += 1
        offset = float(getattr(frame, "offset_s", self._position_s))
        self._position_s = max(self._position_s, offset)
        try:
            image = check_frame(getattr(frame, "image", frame))
        except ValueError as exc:
            self.errors["bad_frames"] += 1
            if self.errors["bad_frames"] == 1:
                log.error("camera frame %d at %.2f s skipped: %s", self._index, offset, exc)
            yield Step(self._index, offset, failed=True)
            return
        yield Step(self._index, offset, image)

    def flush(self) -> Iterator[Step]:
        return iter(())


class ImageEmbedder:
    """A step's frame -> its embedding float32 [D]."""

    def __init__(self, models: ImageModels) -> None:
        self.models = models

    def __call__(self, step: Step) -> np.ndarray:
        return self.models.embed_one(step.data)

    def skip(self, step: Step) -> None:
        """Nothing to keep aligned: frames are independent."""
