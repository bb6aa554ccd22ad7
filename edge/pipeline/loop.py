"""The one loop that runs a pipeline: clock, metrics, head swaps, error counters.

:func:`run_pipeline` reads chunks until the source ends (a file) or is closed (a live source:
call ``source.close()`` from another thread or a signal handler). Per step it embeds, runs every
head, lets each head's postprocessor decide on an event and reports events to the sink; every
``metrics_interval_s`` seconds of stream time, and at the end, it reports metrics. The clock is
the stream's own (samples or frames seen), so a file and a live sensor give the same timeline.

Bad input at run time never ends the loop: a source counts what it repaired (NaN samples, bad
frames), a failing preprocessing step, embedder or sink is counted here; all counters go out with
the metrics. Between chunks it asks ``head_updates`` (at most every ``head_poll_s`` seconds) for
heads that changed beside it, and swaps them in.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from edgetune.errors import UsageError

from ..head import Head
from ..metrics import latency_percentiles, rss_mb, temperature_c
from ..sinks import DetectionEvent, MetricsReport, Sink
from .stages import Pipeline, Postprocessor, Step

log = logging.getLogger(__name__)

#: Latencies of the most recent steps kept for the run's summary (a daemon runs for weeks).
_SUMMARY_LATENCIES = 100_000

#: () -> {head name: (head, version)} of the heads that changed since the last call.
HeadUpdates = Callable[[], "dict[str, tuple[Head, int]]"]


@dataclass(frozen=True)
class LoopSettings:
    """metrics_interval_s: seconds of stream time between metrics reports. head_poll_s: seconds of
    stream time between looks for newer head versions."""

    metrics_interval_s: float = 10.0
    head_poll_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("metrics_interval_s", "head_poll_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                raise UsageError(f"run.{name} is {value!r}; expected seconds > 0")


@dataclass
class RunSummary:
    """What a finished run did: steps, detections, seconds of stream, latencies (ms, over the last
    100,000 steps at most), error counters."""

    pipeline: str = ""
    steps: int = 0
    detections: int = 0
    stream_s: float = 0.0
    provider: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "steps": self.steps, "detections": self.detections,
                "stream_s": round(self.stream_s, 4), "provider": self.provider, "latency_ms": self.latency_ms,
                "errors": self.errors}


class _Run:
    """The state of one run of :func:`run_pipeline`."""

    def __init__(self, p: Pipeline, sink: Sink, settings: LoopSettings, head_updates: HeadUpdates | None) -> None:
        self.p, self.sink, self.settings, self.head_updates = p, sink, settings, head_updates
        self.summary = RunSummary(pipeline=p.name, provider=p.provider)
        self.errors = {"sink_errors": 0, "embed_failures": 0}
        self.post: dict[str, Postprocessor] = {h.name: p.postprocessor(h.name, h.head.labels) for h in p.heads}
        self.window: list[float] = []
        self.window_start_s = 0.0
        self.latencies: deque[float] = deque(maxlen=_SUMMARY_LATENCIES)
        self.next_poll_s = settings.head_poll_s

    def counters(self) -> dict[str, int]:
        stats = getattr(self.p.source, "stats", None)
        merged = dict(stats.errors()) if stats is not None else {}
        merged.update({k: v for k, v in {**self.p.preprocess.errors, **self.errors}.items() if v})
        return merged

    def report(self, now_s: float) -> None:
        latencies, span = self.window, now_s - self.window_start_s
        self.window, self.window_start_s = [], now_s
        if span <= 0:
            return
        rep = MetricsReport(observed_at=time.time(), window_s=span, inferences=len(latencies),
                            latency_ms=latency_percentiles(latencies), rtf=sum(latencies) / 1000.0 / span,
                            provider=self.p.provider, errors=self.counters(), rss_mb=rss_mb(),
                            temperature_c=temperature_c(), pipeline=self.p.name)
        try:
            self.sink.metrics(rep)
        except Exception as exc:  # a sink's failure must not end the loop
            self.errors["sink_errors"] += 1
            log.error("sink failed on a metrics report: %s", exc)

    def poll_heads(self, now_s: float) -> None:
        self.next_poll_s = now_s + self.settings.head_poll_s
        try:
            updates = self.head_updates() if self.head_updates is not None else {}
        except Exception as exc:  # a broken head store must not end the loop: keep the heads in use
            self.errors["head_reload_errors"] = self.errors.get("head_reload_errors", 0) + 1
            log.error("cannot load a new head version, keeping %s: %s", self.p.heads.versions(), exc)
            return
        for name, (head, version) in updates.items():
            try:
                old = self.p.heads.swap(name, head, version)
            except (KeyError, ValueError) as exc:
                self.errors["head_reload_errors"] = self.errors.get("head_reload_errors", 0) + 1
                log.error("head %s v%d not used: %s", name, version, exc)
                continue
            # Its labels may differ (new words): its postprocessor starts afresh.
            self.post[name] = self.p.postprocessor(name, head.labels)
            log.info("%s: head %s v%d -> v%d at %.1f s (%d labels)", self.p.name, name, old.version, version, now_s,
                     len(head.labels))

    def step(self, step: Step, t0: float) -> None:
        self.summary.steps += 1
        if step.failed:  # counted by the preprocessor; stateful embedders keep their windows aligned
            self.p.embed.skip(step)
            return
        try:
            embedding = self.p.embed(step)
            posteriors = self.p.heads.run(embedding)
        except Exception as exc:  # an ONNX Runtime failure must not end the stream
            self.errors["embed_failures"] += 1
            log.error("%s: step %d (%.2f s) failed, skipped: %s", self.p.name, step.index, step.offset_s, exc)
            return
        latency_ms = 1000.0 * (time.perf_counter() - t0)
        for tap in self.p.taps:
            try:
                tap(step, embedding)
            except Exception as exc:  # a failing fuse stage must not end this modality's stream
                self.errors["tap_errors"] = self.errors.get("tap_errors", 0) + 1
                log.error("%s: step %d: fuse stage failed: %s", self.p.name, step.index, exc)
        self.window.append(latency_ms)
        self.latencies.append(latency_ms)
        for name, post in posteriors.items():
            det = self.post[name].update(post, step.offset_s, latency_ms)
            if det is None:
                continue
            self.summary.detections += 1
            active = self.p.heads[name]
            event = DetectionEvent(detection=det, observed_at=time.time(), source=self.p.uri,
                                   bundle_id=self.p.bundle_id, bundle_version=self.p.bundle_version,
                                   head_version=active.version, modality=self.p.modality, pipeline=self.p.name,
                                   head=name)
            try:
                self.sink.detection(event)
            except Exception as exc:  # a sink's failure must not end the loop
                self.errors["sink_errors"] += 1
                log.error("sink failed on a detection: %s", exc)
        if step.offset_s - self.window_start_s >= self.settings.metrics_interval_s - 1e-9:
            self.report(step.offset_s)

    def drain(self, steps) -> None:
        it = iter(steps)
        while True:
            t0 = time.perf_counter()  # the step's latency includes its preprocessing
            step = next(it, None)
            if step is None:
                return
            self.step(step, t0)


def run_pipeline(pipeline: Pipeline, sink: Sink, settings: LoopSettings = LoopSettings(), *,
                 head_updates: HeadUpdates | None = None) -> RunSummary:
    """Run ``pipeline`` until its source ends; report events and metrics to ``sink``.

    ``sink`` receives ``detection(DetectionEvent)`` and ``metrics(MetricsReport)``.
    ``head_updates`` (optional) returns the heads that changed beside the run; each is used from
    the next chunk on.
    """
    run = _Run(pipeline, sink, settings, head_updates)
    p = pipeline
    log.info("run %s: %s -> bundle %s %s, heads %s, provider %s", p.name, p.uri, p.bundle_id, p.bundle_version,
             p.heads.versions(), p.provider)
    for chunk in p.source:
        # Between pushes, so every step of one push is scored with the same heads.
        now_s = p.preprocess.position_s
        if head_updates is not None and now_s >= run.next_poll_s - 1e-9:
            run.poll_heads(now_s)
        run.drain(p.preprocess.push(chunk))
    run.drain(p.preprocess.flush())
    summary = run.summary
    summary.stream_s = p.preprocess.position_s
    run.report(summary.stream_s)
    summary.latency_ms = latency_percentiles(run.latencies)
    summary.errors = run.counters()
    log.info("run %s ended: %.1f s, %d steps, %d detections, errors %s", p.name, summary.stream_s, summary.steps,
             summary.detections, summary.errors or "none")
    return summary
