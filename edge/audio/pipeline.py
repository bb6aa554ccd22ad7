"""The audio modality's stages, assembled into a :class:`~edgetune.edge.pipeline.stages.Pipeline`.

source (:mod:`.sources`) -> :class:`~.preprocess.AudioPreprocessor` (hops of incremental
features) -> :class:`~.embed.AudioEmbedder` (window embeddings, pooled over the clip) -> the
pipeline's heads -> :class:`~.detect.Detector` per head (smoothing, threshold, refractory).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..bundle import Bundle
from ..pipeline.heads import HeadSet
from ..pipeline.stages import Pipeline
from .detect import Detector, DetectorSettings
from .embed import AudioEmbedder
from .models import AudioModels
from .preprocess import DEFAULT_HOP_MS, AudioPreprocessor, hop_samples_for


def step_samples(models: AudioModels) -> int:
    """The hop must be a multiple of this: the frame hop, or the embedder's window stride."""
    frame_hop = models.params.frame_hop_samples
    spec = models.embedder_spec
    return frame_hop * spec.stride_frames if spec.n_windows > 1 else frame_hop


def default_hop_ms(models: AudioModels) -> float:
    """The bundle's natural hop: the multiple of :func:`step_samples` nearest to 100 ms."""
    step = step_samples(models)
    n = max(1, round(DEFAULT_HOP_MS / 1000.0 * models.rate_hz / step))
    return 1000.0 * n * step / models.rate_hz


def from_config(ctx, stores) -> Pipeline:
    """The daemon's audio pipeline (``edge/wiring.py`` :class:`~edgetune.edge.wiring.Context`):
    the ``[audio]`` section's source, the bundle's audio models, and the current version of each
    audio head from ``stores`` (head name -> its store). The source is opened first, so a wrong URI
    is reported before the models load."""
    from .sources import open_source

    bundle, a = ctx.bundle, ctx.config.audio
    source = open_source(a.source, bundle.manifest.audio.sample_rate_hz, raw_rate_hz=ctx.raw_rate_hz)
    models = ctx.models if ctx.models is not None else AudioModels(bundle, ctx.providers, state_dir=ctx.state_dir)
    detector = DetectorSettings(threshold=a.threshold, smoothing_hops=a.smoothing_hops,
                                refractory_s=None if a.refractory_ms is None else a.refractory_ms / 1000.0)
    return audio_pipeline(bundle, models, source, HeadSet.from_stores(stores), hop_ms=a.hop_ms, detector=detector)


def audio_pipeline(bundle: Bundle, models: AudioModels, source: Iterable[np.ndarray], heads: HeadSet, *,
                   hop_ms: float | None = None, detector: DetectorSettings = DetectorSettings(),
                   name: str = "audio") -> Pipeline:
    """The audio pipeline over ``source`` (float32 chunks at the bundle's rate).

    ``hop_ms``: audio per step (default :func:`default_hop_ms`); it must be a multiple of
    :func:`step_samples`, and is refused with the allowed step otherwise.
    """
    hop = hop_samples_for(default_hop_ms(models) if hop_ms is None else hop_ms, models.rate_hz,
                          step_samples(models))
    preprocess = AudioPreprocessor.for_models(models, hop)
    embed = AudioEmbedder(models, hop, preprocess.ring.silence)
    clip_s = models.clip_samples / models.rate_hz

    def postprocessor(head_name: str, labels: Sequence[str]) -> Detector:
        return Detector(labels, detector, clip_s=clip_s, background_label=bundle.heads[head_name].spec.background_label)

    return Pipeline(name=name, modality="audio", source=source, preprocess=preprocess, embed=embed, heads=heads,
                    postprocessor=postprocessor, provider=models.provider, bundle_id=bundle.bundle_id,
                    bundle_version=bundle.bundle_version,
                    info={"hop_samples": hop, "hop_ms": 1000.0 * hop / models.rate_hz,
                          "backbone": models.embedder_spec.backbone})
