"""Device -> server telemetry: a disk-backed outbox, the MQTT publisher, the streaming sink.

- :mod:`.outbox`: :class:`Outbox`, pending messages and the sequence counter in one SQLite file.
- :mod:`.publisher`: :class:`Telemetry`, sends the outbox over MQTT (paho, imported when used).
- :mod:`.sink`: :class:`TelemetrySink`, the streaming loop's sink that publishes.

Importing this package imports neither paho nor anything heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .outbox import OVERFLOW_POLICIES, Outbox, OutboxCounts, OutboxError, PendingMessage

if TYPE_CHECKING:
    from .publisher import Telemetry, TelemetryCounters
    from .sink import TelemetrySink

__all__ = [
    "OVERFLOW_POLICIES",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "PendingMessage",
    "Telemetry",
    "TelemetryCounters",
    "TelemetrySink",
]

_LAZY = {"Telemetry": ".publisher", "TelemetryCounters": ".publisher",
         "TelemetrySink": ".sink"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
