"""Fixtures for the device telemetry tests: a real Mosquitto we may kill, a real subscriber, and
the real server's ingest (which sends the end-to-end acknowledgements a device waits for)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.broker import require_mosquitto
from support.telemetry import wait_for

from edgetune.contract import messages, topics
from edgetune.localbroker import LocalBroker, free_port

DEVICE = "jetson-test-01"
_ids = itertools.count()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Any]:
    """``make_broker(extra_config, persistence=False)`` -> a started broker on a free port with extra
    mosquitto.conf lines; ``persistence``: sessions and queued messages survive a restart."""
    require_mosquitto()
    made: list[LocalBroker] = []

    def factory(extra_config: str, persistence: bool = False) -> LocalBroker:
        b = LocalBroker(tmp_path / f"broker-{len(made)}", extra_config=extra_config, persistence=persistence)
        made.append(b)
        b.start()
        return b

    yield factory
    for b in made:
        b.stop()


@pytest.fixture
def stopped_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker that is not running yet; ``port`` is chosen (free now), ``start_on(port)`` starts it."""
    require_mosquitto()
    b = LocalBroker(tmp_path / "broker", port=free_port())
    yield b
    b.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """``serve(broker)`` -> the server's real :class:`~edgetune.server.ingest.Ingest` on ``broker``
    with a real SQLite store (``tmp_path / "server-<broker port>.db"``), started (connecting in the background, so the broker may
    be down); one per broker, stopped after the test. A device's messages leave its outbox only
    when this acknowledges them."""
    from edgetune.server.ingest import Ingest, IngestConfig
    from edgetune.server.store import Store

    made: dict[int, Ingest] = {}
    stores: list[Store] = []

    def factory(b: LocalBroker) -> Ingest:
        assert b.port is not None
        if b.port not in made:
            store = Store.open(str(tmp_path / f"server-{b.port}.db"))
            stores.append(store)
            ingest = Ingest(store, IngestConfig(host=b.host, port=b.port, client_id=f"test-server-{next(_ids)}",
                                                reconnect_min_delay_s=0.1, reconnect_max_delay_s=0.5))
            ingest.start()
            made[b.port] = ingest
        return made[b.port]

    yield factory
    for ingest in made.values():
        ingest.stop()
    for store in stores:
        store.close()


@contextlib.contextmanager
def _frozen(broker: LocalBroker) -> Iterator[None]:
    assert broker.running
    pid = broker._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def frozen() -> Any:
    """``with frozen(broker):`` the broker process is stopped (SIGSTOP): connections stay open and
    what clients send waits in the socket, unacknowledged; it resumes (SIGCONT) on leaving the
    block, even on failure. (LocalBroker has no pause of its own, so this reaches for its process.)"""
    return _frozen


class Subscriber:
    """A real paho client on ``edgetune/v1/<device>/#`` (QoS 1) that decodes what arrives.

    It reconnects fast (0.05 s) and resubscribes, so after a broker restart it is back before
    a device that waits the default second. ``persistent``: its session (subscription and queued
    messages) outlives a disconnect, so on a broker with persistence nothing published while it is
    away, a broker restart included, is lost to it, whoever reconnects first.
    """

    def __init__(self, host: str, port: int, device: str = DEVICE, persistent: bool = False) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.device = device
        self.received: list[tuple[str, dict[str, Any], bool]] = []  # (topic kind, envelope, retained)
        self.from_server: list[tuple[str, bytes]] = []  # (topic, payload) of acknowledgements and commands
        self.subscriptions = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{next(_ids)}",
                                   protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(0.05, 0.2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        properties = None
        if persistent:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 300
        self._client.connect(host, port, properties=properties)
        self._client.loop_start()
        wait_for(lambda: self.subscriptions > 0, 5.0)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{topics.PREFIX}/{self.device}/#", qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            self.subscriptions += 1

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic.rsplit("/", 1)[-1] in topics.SERVER_KINDS:
            with self._lock:
                self.from_server.append((msg.topic, msg.payload))
            return
        device, kind = topics.parse_device_topic(msg.topic)
        envelope = messages.decode_for_topic(device, kind, msg.payload)  # the device sent only valid messages
        with self._lock:
            self.received.append((kind, envelope, bool(msg.retain)))

    def envelopes(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [env for k, env, _ in self.received if k == kind]

    def seqs(self, kind: str = "events") -> list[int]:
        return [env["seq"] for env in self.envelopes(kind)]

    def statuses(self) -> list[tuple[dict[str, Any], bool]]:
        with self._lock:
            return [(env, retained) for k, env, retained in self.received if k == "status"]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes its wake-up socket pair in __del__: break the cycle through our callbacks
        # so that happens now, not in a GC pass that would report the sockets as leaked.
        self._client.on_connect = self._client.on_subscribe = self._client.on_message = None


@pytest.fixture
def subscribe() -> Iterator[Any]:
    """``subscribe(broker, device=DEVICE, persistent=False)`` -> a connected :class:`Subscriber`;
    all are closed after the test."""
    made: list[Subscriber] = []

    def factory(b: LocalBroker, device: str = DEVICE, persistent: bool = False) -> Subscriber:
        assert b.port is not None
        sub = Subscriber(b.host, b.port, device, persistent)
        made.append(sub)
        return sub

    yield factory
    for sub in made:
        sub.close()

