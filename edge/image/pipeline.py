"""The image modality's stages, assembled into a :class:`~edgetune.edge.pipeline.stages.Pipeline`.

camera source (:mod:`.sources`: the newest frame at ``rate_hz``) -> :class:`~.preprocess.ImagePreprocessor`
(one step per frame) -> :class:`~.preprocess.ImageEmbedder` (``image_embedder.onnx``) -> the
pipeline's heads -> :class:`~.detect.FrameDetector` per head (smoothing over frames, hold time).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from edgetune.errors import UsageError

from ..bundle import Bundle
from ..pipeline.heads import HeadSet
from ..pipeline.stages import Pipeline
from .detect import FrameDetector, FrameDetectorSettings
from .models import ImageModels
from .preprocess import ImageEmbedder, ImagePreprocessor


def from_config(ctx, stores) -> Pipeline:
    """The daemon's camera pipeline (``edge/wiring.py`` Context): the ``[camera]`` section's
    source, the bundle's image embedder, the current version of each image head in ``stores``.
    The camera is opened first, so a wrong URI is reported before the model loads."""
    from .sources import open_camera

    cam = ctx.config.camera
    if cam.source is None:
        raise UsageError(f"bundle {ctx.bundle.bundle_id} has an image modality but [camera] source is not set; "
                         "set it in the config or pass --camera (v4l2:0, rtsp://..., gst:..., video:FILE, "
                         "images:DIR)")
    source = open_camera(cam.source, rate_hz=cam.rate_hz, folder_fps=cam.folder_fps,
                         backoff_initial_s=min(0.5, cam.backoff_max_s), backoff_max_s=cam.backoff_max_s)
    models = ImageModels(ctx.bundle, ctx.providers, state_dir=ctx.state_dir)
    detector = FrameDetectorSettings(threshold=cam.threshold, smoothing_frames=cam.smoothing_frames, hold_s=cam.hold_s)
    return image_pipeline(ctx.bundle, models, source, HeadSet.from_stores(stores), detector=detector)


def image_pipeline(bundle: Bundle, models: ImageModels, source: Iterable[np.ndarray], heads: HeadSet, *,
                   detector: FrameDetectorSettings = FrameDetectorSettings(), name: str = "camera") -> Pipeline:
    """The camera pipeline over ``source`` (frames: :class:`~.sources.Frame`, or bare uint8 arrays)."""

    def postprocessor(head_name: str, labels) -> FrameDetector:
        return FrameDetector(labels, detector, background_label=bundle.heads[head_name].spec.background_label)

    return Pipeline(name=name, modality="image", source=source, preprocess=ImagePreprocessor(),
                    embed=ImageEmbedder(models), heads=heads, postprocessor=postprocessor, provider=models.provider,
                    bundle_id=bundle.bundle_id, bundle_version=bundle.bundle_version,
                    info={"backbone": models.spec.backbone, "input_px": [models.spec.height_px, models.spec.width_px]})
