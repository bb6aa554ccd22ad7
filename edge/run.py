"""The device's audio loop: a source, the streaming classifier, the detector, a sink.

:func:`run_audio` reads chunks until the source ends (a file) or is closed (a live source:
call ``source.close()`` from another thread or a signal handler), reports each detection and,
every ``metrics_interval_s`` seconds of audio and at the end, a metrics report. Bad input at run
time never ends the loop: NaN/Inf samples are counted by the source, a failing hop by the
classifier, a failing sink here; all counters go out with the metrics.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgetune.errors import UsageError

from .audio.detect import Detector, DetectorSettings
from .audio.models import AudioModels
from .audio.stream import DEFAULT_HOP_MS, StreamingClassifier, hop_samples_for
from .bundle import Bundle
from .head import Head
from .metrics import latency_percentiles, rss_mb, temperature_c
from .runtime.providers import ProviderSettings
from .sinks import DetectionEvent, MetricsReport, Sink

log = logging.getLogger(__name__)

#: Latencies of the most recent hops kept for the run's summary.
_SUMMARY_LATENCIES = 100_000


@dataclass(frozen=True)
class RunSettings:
    """How the audio loop runs.

    hop_ms: milliseconds of audio per inference (a multiple of the front-end's frame hop, at most a clip).
    detector: smoothing, threshold and refractory period (:class:`DetectorSettings`).
    providers: execution providers (:class:`ProviderSettings`).
    metrics_interval_s: seconds of audio between metrics reports.
    head_poll_s: seconds of audio between looks for a newer head version (see ``head_updates``).
    """

    hop_ms: float = DEFAULT_HOP_MS
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    metrics_interval_s: float = 10.0
    head_poll_s: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.hop_ms, (int, float)) and 0 < self.hop_ms <= 10_000):
            raise UsageError(f"run.hop_ms is {self.hop_ms!r}; expected milliseconds in (0, 10000], e.g. 100")
        if not (isinstance(self.metrics_interval_s, (int, float)) and self.metrics_interval_s > 0):
            raise UsageError(f"run.metrics_interval_s is {self.metrics_interval_s!r}; expected seconds > 0")
        if not (isinstance(self.head_poll_s, (int, float)) and self.head_poll_s > 0):
            raise UsageError(f"run.head_poll_s is {self.head_poll_s!r}; expected seconds > 0")


@dataclass
class RunSummary:
    """What a finished run did: hops, detections, seconds of audio, latencies (ms, over the last
    100,000 hops at most), error counters."""

    hops: int = 0
    detections: int = 0
    audio_s: float = 0.0
    provider: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"hops": self.hops, "detections": self.detections, "audio_s": round(self.audio_s, 4),
                "provider": self.provider, "latency_ms": self.latency_ms, "errors": self.errors}


class _Window:
    """Per-hop latencies since the last metrics report."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.start_s = 0.0

    def take(self, now_s: float) -> tuple[list[float], float]:
        lat, span = self.latencies, now_s - self.start_s
        self.latencies, self.start_s = [], now_s
        return lat, span


def run_audio(bundle: Bundle, source: Iterable[np.ndarray], settings: RunSettings, sink: Sink, *,
              head: Head | None = None, head_version: int = 0, models: AudioModels | None = None,
              state_dir: Path | None = None,
              head_updates: Callable[[], tuple[Head, int] | None] | None = None) -> RunSummary:
    """Classify ``source`` hop by hop and report to ``sink`` until the source ends.

    Args:
        bundle: a loaded bundle (:func:`~edgetune.edge.bundle.load_bundle`).
        source: float32 chunks at the bundle's rate; an :class:`~edgetune.edge.audio.sources.AudioSource`
            also gives its URI and counters.
        settings: :class:`RunSettings`.
        sink: receives ``detection(DetectionEvent)`` and ``metrics(MetricsReport)``.
        head, head_version: the head to use (default: the bundle's head, version 0).
        models: sessions to reuse (default: made from ``bundle`` with ``settings.providers``).
        state_dir: where TensorRT engines are cached.
        head_updates: called every ``settings.head_poll_s`` seconds of audio; returns
            ``(head, version)`` when another head version became current (an enrolment or a
            rollback beside the running daemon), else None. The next hop uses it; its labels
            may differ (new words), so the detector starts afresh.
    """
    models = models if models is not None else AudioModels(bundle, settings.providers, state_dir=state_dir)
    head = head if head is not None else bundle.head
    rate = models.rate_hz
    hop = hop_samples_for(settings.hop_ms, rate, models.params.frame_hop_samples)
    classifier = StreamingClassifier.for_models(models, head, hop)

    def make_detector(labels: tuple[str, ...]) -> Detector:
        return Detector(labels, settings.detector, clip_s=models.clip_samples / rate,
                        background_label=bundle.background_label)

    detector = make_detector(head.labels)
    next_poll_s = settings.head_poll_s
    uri = str(getattr(source, "uri", "<chunks>"))
    summary = RunSummary(provider=models.provider)
    errors = {"sink_errors": 0}
    window = _Window()
    all_latencies: deque[float] = deque(maxlen=_SUMMARY_LATENCIES)  # bounded: a daemon runs for weeks
    log.info("run: %s -> bundle %s %s, head v%d, hop %d samples (%g ms), provider %s", uri, bundle.bundle_id,
             bundle.bundle_version, head_version, hop, 1000 * hop / rate, models.provider)

    def counters() -> dict[str, int]:
        stats = getattr(source, "stats", None)
        merged = dict(stats.errors()) if stats is not None else {}
        merged.update({k: v for k, v in {**classifier.errors, **errors}.items() if v})
        return merged

    def report(now_s: float) -> None:
        latencies, span = window.take(now_s)
        if span <= 0:
            return
        rep = MetricsReport(observed_at=time.time(), window_s=span, inferences=len(latencies),
                            latency_ms=latency_percentiles(latencies), rtf=sum(latencies) / 1000.0 / span,
                            provider=models.provider, errors=counters(), rss_mb=rss_mb(),
                            temperature_c=temperature_c())
        try:
            sink.metrics(rep)
        except Exception as exc:  # a sink's failure must not end the loop
            errors["sink_errors"] += 1
            log.error("sink failed on a metrics report: %s", exc)

    def poll_head(now_s: float) -> None:
        nonlocal detector, next_poll_s, head_version
        next_poll_s = now_s + settings.head_poll_s
        try:
            update = head_updates() if head_updates is not None else None
        except Exception as exc:  # a broken head store must not end the loop: keep the head in use
            errors["head_reload_errors"] = errors.get("head_reload_errors", 0) + 1
            log.error("cannot load the new head version, keeping v%d: %s", head_version, exc)
            return
        if update is not None:
            new_head, version = update
            classifier.set_head(new_head)
            detector = make_detector(new_head.labels)
            log.info("head v%d -> v%d at %.1f s (%d labels)", head_version, version, now_s,
                     len(new_head.labels))
            head_version = version

    def handle(results) -> None:
        for res in results:
            summary.hops += 1
            if res.posteriors is None:
                continue
            window.latencies.append(res.latency_ms)
            all_latencies.append(res.latency_ms)
            det = detector.update(res.posteriors, res.offset_s, res.latency_ms)
            if det is not None:
                summary.detections += 1
                event = DetectionEvent(detection=det, observed_at=time.time(), source=uri,
                                       bundle_id=bundle.bundle_id, bundle_version=bundle.bundle_version,
                                       head_version=head_version)
                try:
                    sink.detection(event)
                except Exception as exc:  # a sink's failure must not end the loop
                    errors["sink_errors"] += 1
                    log.error("sink failed on a detection: %s", exc)
            if res.offset_s - window.start_s >= settings.metrics_interval_s - 1e-9:
                report(res.offset_s)

    for chunk in source:
        # Between pushes, so every hop of one push is scored and detected with the same head.
        now_s = classifier.hops * hop / rate
        if head_updates is not None and now_s >= next_poll_s - 1e-9:
            poll_head(now_s)
        handle(classifier.push(chunk))
    handle(classifier.flush())
    summary.audio_s = classifier.hops * hop / rate
    report(summary.audio_s)
    summary.latency_ms = latency_percentiles(all_latencies)
    summary.errors = counters()
    log.info("run ended: %.1f s of audio, %d hops, %d detections, errors %s", summary.audio_s, summary.hops,
             summary.detections, summary.errors or "none")
    return summary
