"""The server's side of end-to-end delivery and failover, against a real Mosquitto and SQLite:
acknowledgements after the commit, gaps in a device's sequence numbers, sessions of shared
subscribers."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import httpx
import pytest
from support.telemetry import make_event, make_status, wait_for

from edgetune.contract import acks, topics
from edgetune.server.ingest import IngestConfig

pytestmark = pytest.mark.broker

_ids = itertools.count()


class AckListener:
    """A real paho client on a device's ``ack`` topic, decoding what the server sends it."""

    def __init__(self, broker: Any, device: str) -> None:
        import paho.mqtt.client as mqtt

        self.device = device
        self.ranges: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-acks-{next(_ids)}",
                                   protocol=mqtt.MQTTv5)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(topics.device_topic(device, "ack"), qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(5.0)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        spans = acks.decode(self.device, msg.payload)
        with self._lock:
            self.ranges.extend(spans)

    def seqs(self) -> list[int]:
        with self._lock:
            return sorted(s for a, b in self.ranges for s in range(a, b + 1))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client.on_message = self._client.on_subscribe = None


@pytest.fixture
def listen(broker: Any) -> Any:
    made: list[AckListener] = []

    def factory(device: str) -> AckListener:
        listener = AckListener(broker, device)
        made.append(listener)
        return listener

    yield factory
    for listener in made:
        listener.close()


def test_the_server_acknowledges_what_it_stored_after_the_commit_and_again_for_a_resend(server, publisher,
                                                                                         listen) -> None:
    # Prepare
    acked = listen("jetson-01")
    other = listen("jetson-02")
    # Execute: three events, then the second again (a device that missed the acknowledgement)
    for seq in (1, 2, 3):
        publisher.send(make_event("jetson-01", seq=seq))
    wait_for(lambda: acked.seqs() == [1, 2, 3])
    stored_when_acked = [e["seq"] for e in server.store.events(device="jetson-01")]
    publisher.send(make_event("jetson-01", seq=2))
    # Assert: each acknowledgement came once the seq was in the database; the resend was
    # acknowledged again, not stored again; no other device heard of it
    assert sorted(stored_when_acked) == [1, 2, 3]
    wait_for(lambda: acked.seqs() == [1, 2, 2, 3])
    assert server.counters.duplicates == 1 and server.counters.acks_sent >= 2
    assert other.seqs() == []


def test_statuses_are_not_acknowledged(server, publisher, listen) -> None:
    # Statuses go around the outbox (retained, the last will), so there is nothing to delete.
    acked = listen("jetson-01")
    publisher.send(make_status("jetson-01", seq=1))
    publisher.send(make_event("jetson-01", seq=3))
    wait_for(lambda: acked.seqs() == [3])
    assert server.store.device("jetson-01")["state"] == "online"


def test_gaps_in_a_devices_sequence_numbers_are_reported_until_filled(server, publisher) -> None:
    # Prepare: an online status (seq 10 reserves 11 for its last will), then events 12, 13 and 16
    publisher.send(make_status("jetson-01", seq=10))
    for seq in (12, 13, 16):
        publisher.send(make_event("jetson-01", seq=seq))
    wait_for(lambda: server.counters.stored == 4)
    # Execute / Assert: 14 and 15 are missing (the will's 11 is not: it comes when the device goes)
    device = server.store.device("jetson-01")
    assert (device["seq_first"], device["seq_last"], device["missing"]) == (10, 16, 2)
    stats = httpx.get(server.url + "api/stats", timeout=5).json()
    assert stats["missing"] == 2
    for seq in (14, 15):
        publisher.send(make_event("jetson-01", seq=seq))
    wait_for(lambda: server.counters.stored == 6)
    assert server.store.device("jetson-01")["missing"] == 0
    assert httpx.get(server.url + "api/devices/jetson-01", timeout=5).json()["missing"] == 0


def test_a_gap_is_logged_with_how_many_are_missing(broker, db_path, publisher, caplog) -> None:
    # Prepare: a server that checks for gaps often
    from edgetune.server.service import Server, ServerConfig

    config = IngestConfig(host=broker.host, port=broker.port, client_id="test-gaps", gap_check_interval_s=0.05)
    with Server(ServerConfig(db=str(db_path), http_port=0, ingest=config)) as server:
        assert server.wait_subscribed(5.0)
        # Execute: 3 and 4 never come
        for seq in (1, 2, 5):
            publisher.send(make_event("jetson-07", seq=seq))
        # Assert
        wait_for(lambda: server.counters.missing == 2, timeout_s=10.0)
    assert any("jetson-07: 2 sequence number(s) between 1 and 5 not stored" in r.getMessage()
               for r in caplog.records)


def test_shared_subscribers_keep_no_session_plain_ones_keep_a_week() -> None:
    # A dead member of a share group must leave it at once, so that the living get its share.
    assert IngestConfig(shared=True).resolved_session_expiry_s == 0
    assert IngestConfig(shared=False).resolved_session_expiry_s == 7 * 24 * 3600
    assert IngestConfig(shared=True, session_expiry_s=30).resolved_session_expiry_s == 30
    assert IngestConfig().reconnect_max_delay_s <= 5


def test_two_shared_servers_split_the_load_and_store_each_once(make_server, publisher, db_path) -> None:
    # Prepare: two instances on one database, one share group
    a, b = make_server(shared=True), make_server(shared=True)
    for s in (a, b):
        s.start()
        assert s.wait_subscribed(5.0)
    # Execute
    for seq in range(1, 101):
        publisher.send(make_event("jetson-01", seq=seq))
    wait_for(lambda: a.counters.stored + b.counters.stored == 100, timeout_s=20.0)
    # Assert: both took a share; every seq is stored once
    assert a.counters.stored > 0 and b.counters.stored > 0
    assert [e["seq"] for e in a.store.events(device="jetson-01", limit=1000)][::-1] == list(range(1, 101))
