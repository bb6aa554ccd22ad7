"""The streaming loop's sink that publishes through :class:`~.publisher.Telemetry`.

:func:`edgetune.edge.pipeline.loop.run_pipeline` reports to a sink with ``detection(event)`` and
``metrics(report)``, where each record has ``body()`` (a message body) and ``observed_at``
(seconds since the Unix epoch). This adapter queues them in the telemetry's outbox, so the loop
never waits for the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .publisher import Telemetry


class _Record(Protocol):
    observed_at: float

    def body(self) -> dict[str, Any]: ...


class TelemetrySink:
    """Publish detections as ``event`` messages and reports as ``metrics`` messages."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def detection(self, event: _Record) -> None:
        self.telemetry.event(event.body(), observed_at=event.observed_at)

    def metrics(self, report: _Record) -> None:
        self.telemetry.metrics(report.body(), observed_at=report.observed_at)
