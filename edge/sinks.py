"""Where :func:`~edgetune.edge.pipeline.loop.run_pipeline` sends what it observes.

A sink has two methods, ``detection(event: DetectionEvent)`` and ``metrics(report:
MetricsReport)``; each record's ``body()`` is the body of the telemetry message of that type
(``contract/messages.py``) and ``observed_at`` its time. The MQTT sink lives with the telemetry;
here are the ones the command line and tests use.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Protocol

from .pipeline.stages import Detection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionEvent:
    """A detection with the context an ``event`` message needs."""

    detection: Detection
    observed_at: float  # seconds since the Unix epoch, when the hop was processed
    source: str
    bundle_id: str
    bundle_version: str
    head_version: int
    modality: str = "audio"
    pipeline: str = "audio"
    head: str = "keywords"

    def body(self) -> dict[str, Any]:
        """The ``event`` message body."""
        d = self.detection
        return {"pipeline": self.pipeline, "head": self.head, "label": d.label, "score": round(float(d.score), 6), "modality": self.modality,
                "source": self.source[:512], "offset_s": round(float(d.offset_s), 4), "bundle_id": self.bundle_id,
                "bundle_version": self.bundle_version, "head_version": int(self.head_version),
                "latency_ms": round(float(d.latency_ms), 4)}


@dataclass(frozen=True)
class MetricsReport:
    """Figures of one pipeline over ``window_s`` seconds of stream time; ``errors`` counts since the start of the run."""

    observed_at: float
    window_s: float
    inferences: int
    latency_ms: dict[str, float]
    rtf: float | None
    provider: str
    errors: dict[str, int] = field(default_factory=dict)
    rss_mb: float | None = None
    temperature_c: float | None = None
    pipeline: str = "audio"

    def body(self) -> dict[str, Any]:
        """The ``metrics`` message body."""
        body: dict[str, Any] = {"pipeline": self.pipeline, "window_s": round(float(self.window_s), 4), "inferences": int(self.inferences),
                                "latency_ms": dict(self.latency_ms), "provider": self.provider,
                                "errors": dict(self.errors)}
        for name in ("rtf", "rss_mb", "temperature_c"):
            value = getattr(self, name)
            if value is not None:
                body[name] = round(float(value), 6)
        return body


class Sink(Protocol):
    """What :func:`~edgetune.edge.pipeline.loop.run_pipeline` reports to."""

    def detection(self, event: DetectionEvent) -> None: ...

    def metrics(self, report: MetricsReport) -> None: ...


class CollectingSink:
    """Keeps everything in lists (tests, and callers that look at results afterwards)."""

    def __init__(self) -> None:
        self.events: list[DetectionEvent] = []
        self.reports: list[MetricsReport] = []

    def detection(self, event: DetectionEvent) -> None:
        self.events.append(event)

    def metrics(self, report: MetricsReport) -> None:
        self.reports.append(report)


class StreamSink:
    """One line per detection on a text stream: a JSON object (``as_json``) or a human line.

    When the reader goes away (``edgetune edge run … | head``), the sink stops writing, logs it
    once and calls ``on_closed`` (the CLI stops a run that has nothing else to report to).
    """

    def __init__(self, stream: IO[str], *, as_json: bool = False,
                 on_closed: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.as_json = as_json
        self.on_closed = on_closed
        self.closed = False

    def detection(self, event: DetectionEvent) -> None:
        if self.closed:
            return
        if self.as_json:
            line = json.dumps(dict(event.body(), observed_at=round(event.observed_at, 3)), sort_keys=True)
        else:
            d = event.detection
            when = time.strftime("%H:%M:%S", time.localtime(event.observed_at))
            line = f"{when}  {d.offset_s:8.2f} s  {d.label:<20} {d.score:.3f}  ({d.latency_ms:.1f} ms)"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self.closed = True
            log.warning("the reader of the detections went away; no longer printing them")
            if self.on_closed is not None:
                self.on_closed()

    def metrics(self, report: MetricsReport) -> None:
        pass


class FanoutSink:
    """Sends everything to several sinks, in order. One sink's failure does not keep the record
    from the others; the first failure is raised once all have had it (the loop counts it)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def _each(self, call: Callable[[Sink], None]) -> None:
        first: Exception | None = None
        for sink in self.sinks:
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001 -- re-raised below, after the other sinks
                first = first or exc
        if first is not None:
            raise first

    def detection(self, event: DetectionEvent) -> None:
        self._each(lambda sink: sink.detection(event))

    def metrics(self, report: MetricsReport) -> None:
        self._each(lambda sink: sink.metrics(report))
