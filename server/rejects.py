"""What the ingest refused and why: the reasons, the counters, and the rate limit on logging them.

Every refusal has one reason of :data:`REASONS`; it is counted in the process
(:class:`IngestCounters`) and in the database's ``rejects`` table alike, and logged at most once
per reason per interval (:class:`RateLimit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgetune.contract import messages
from edgetune.contract.errors import ContractError

#: Why a message was refused; the keys of ``IngestCounters.rejected``.
REASONS = ("topic", "oversized", "not_json", "schema", "device_mismatch", "type_mismatch", "head_shape",
           "internal_error")
@dataclass(frozen=True)
class IngestCounters:
    """What this process's ingest has done since it started (a snapshot)."""

    #: Every message delivered by the broker, valid or not, redeliveries included.
    received: int = 0
    #: New (device, seq), committed.
    stored: int = 0
    #: Already stored with the same content (broker or outbox replays, retained status on reconnect).
    duplicates: int = 0
    #: Already stored with different content: a device reused a seq (logged at WARNING).
    conflicts: int = 0
    #: reason (see :data:`REASONS`) -> messages refused.
    rejected: Mapping[str, int] = field(default_factory=dict)
    #: Failed attempts to write to the database (each retried).
    store_errors: int = 0
    #: True while the last write attempt failed.
    store_failing: bool = False
    #: Connected to the broker with our subscriptions in place.
    subscribed: bool = False
    #: End-to-end acknowledgements published to devices.
    acks_sent: int = 0
    #: Batches committed (each one transaction).
    batches: int = 0
    #: Sequence numbers missing (not stored) between first and last, summed over the devices
    #: checked at the last gap check.
    missing: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "stored": self.stored, "duplicates": self.duplicates,
            "conflicts": self.conflicts, "rejected": dict(self.rejected), "rejected_total": self.rejected_total,
            "store_errors": self.store_errors, "store_failing": self.store_failing, "subscribed": self.subscribed,
            "acks_sent": self.acks_sent, "batches": self.batches, "missing": self.missing,
        }


class RateLimit:
    """Say yes at most once per ``interval_s`` per key; count the no's in between."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(log now?, how many were suppressed since the last one logged)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


def classify(device: str, kind: str, payload: bytes) -> str:
    """Why ``payload`` on a ``device``/``kind`` topic fails ``messages.decode_for_topic`` (a reason).

    Only called after ``decode_for_topic`` refused the payload: it decides nothing, it names the
    failure for the counters.
    """
    if len(payload) > messages.MAX_PAYLOAD_BYTES:
        return "oversized"
    try:
        msg = messages.decode(payload)
    except messages.NotJsonError:
        return "not_json"
    except ContractError:
        return "schema"
    if msg["device"] != device:
        return "device_mismatch"
    return "type_mismatch"
