"""Telemetry for tests: valid messages built with the contract's ``messages.make``, a publisher, a poll.

Messages are the device's view: ``make_event("jetson-01", seq=5)`` is what a device would send,
``publish`` sends it where a device would.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

from edgetune.contract import messages, topics

#: A fixed, plausible observation time (seconds since the epoch) so tests are reproducible.
T0 = 1_795_000_000.0


def make_event(device: str, seq: int, observed_at: float | None = None, **body: Any) -> dict[str, Any]:
    """A valid ``event`` envelope; ``body`` overrides the defaults."""
    fields = {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.93, "modality": "audio",
              "source": "wav:/data/clip.wav", "offset_s": 1.5, "bundle_id": "kws-demo", "bundle_version": "1.0.0",
              "head_version": 3, "latency_ms": 4.2, **body}
    return messages.make(device, seq, T0 + seq if observed_at is None else observed_at, "event", fields)


def make_status(device: str, seq: int, state: str = "online", observed_at: float | None = None,
                **body: Any) -> dict[str, Any]:
    """A valid ``status`` envelope."""
    fields = {"state": state, "bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 3,
              "provider": "CPUExecutionProvider", "software": "0.1.0", **body}
    return messages.make(device, seq, T0 + seq if observed_at is None else observed_at, "status", fields)


def make_metrics(device: str, seq: int, p50_ms: float = 3.0, observed_at: float | None = None,
                 **body: Any) -> dict[str, Any]:
    """A valid ``metrics`` envelope with latency p50 ``p50_ms`` and p95 twice that."""
    fields = {"pipeline": "audio", "window_s": 10.0, "inferences": 100,
              "latency_ms": {"p50": p50_ms, "p95": 2 * p50_ms}, "provider": "CPUExecutionProvider", "fps": 10.0,
              **body}
    return messages.make(device, seq, T0 + seq if observed_at is None else observed_at, "metrics", fields)


def topic_for(msg: dict[str, Any]) -> str:
    """The topic a device publishes ``msg`` on."""
    return topics.device_topic(msg["device"], messages.KIND_FOR_TYPE[msg["type"]])


_ids = itertools.count()


class Publisher:
    """An MQTT v5 client that publishes with QoS 1 and waits for each PUBACK, like a device would."""

    def __init__(self, host: str, port: int, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"test-publisher-{next(_ids)}", protocol=mqtt.MQTTv5)
        self._client.connect(host, port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False, timeout_s: float = 5.0) -> None:
        """Publish raw bytes with QoS 1; raise if the broker did not acknowledge in ``timeout_s``."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic} within {timeout_s} s (rc {info.rc})")

    def send(self, msg: dict[str, Any], retain: bool = False) -> None:
        """Encode with ``messages.encode`` and publish on the message's own topic."""
        self.publish(topic_for(msg), messages.encode(msg), retain=retain)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for(predicate: Callable[[], Any], timeout_s: float = 5.0, interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s: last value {value!r}")
        time.sleep(interval_s)


def stored_seqs(db_path: Any, device: str, type_: str = "event") -> list[int]:
    """The sequence numbers of ``device``'s ``type_`` messages in the server's SQLite file, ascending,
    read with a connection of our own (what is committed, whoever wrote it)."""
    import sqlite3

    conn = sqlite3.connect(str(db_path), timeout=30.0)
    try:
        return [row[0] for row in conn.execute(
            "SELECT seq FROM messages WHERE device = ? AND type = ? ORDER BY seq", (device, type_))]
    finally:
        conn.close()


def event_body(i: int) -> dict[str, Any]:
    """A valid ``event`` body, the ``i``-th of a stream (its ``offset_s`` tells them apart)."""
    return {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.9, "modality": "audio",
            "source": "wav:/data/clip.wav", "offset_s": 0.1 * i, "bundle_id": "kws-demo", "bundle_version": "1.0.0",
            "head_version": 0}
