"""End-to-end acknowledgements: a message leaves the device's outbox only when the server says it
stored it; a malformed or forged acknowledgement deletes nothing; what is not acknowledged is sent
again on a timer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.telemetry import Publisher, event_body, stored_seqs, wait_for

from edgetune.contract import ContractError, acks, topics
from edgetune.edge.telemetry import Telemetry

pytestmark = pytest.mark.broker

DEVICE = "jetson-test-01"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Any]:
    """``device(broker, **kwargs)`` -> a started Telemetry for DEVICE (no server of its own)."""
    made: list[Telemetry] = []

    def factory(broker: Any, **kwargs: Any) -> Telemetry:
        tel = Telemetry(DEVICE, tmp_path / "state" / "outbox.sqlite", broker.host, broker.port, **kwargs)
        made.append(tel)
        return tel

    yield factory
    for tel in made:
        tel.close(timeout_s=0.5)


def test_the_brokers_puback_does_not_empty_the_outbox_the_servers_acknowledgement_does(broker, device, serve,
                                                                                       tmp_path) -> None:
    # Prepare: a device and a broker, but no server yet
    tel = device(broker, ack_timeout_s=1.0)
    assert tel.wait_connected(5.0)
    seqs = [tel.event(event_body(i))["seq"] for i in range(5)]
    wait_for(lambda: tel.counters.published >= 6)  # the online status and the five, PUBACKed by the broker
    # Execute: the server comes (its persistent session is new: nothing was queued for it)
    held = tel.flush(0.5)
    serve(broker)
    flushed = tel.flush(20.0)
    # Assert: nothing left before the server said so; everything did after, stored once
    assert not held
    assert flushed
    assert stored_seqs(tmp_path / f"server-{broker.port}.db", DEVICE) == seqs
    assert tel.counters.acked == 5 and tel.counters.resent >= 5  # sent again when no acknowledgement came


@pytest.mark.parametrize("payload", [
    b"not json",
    json.dumps({"schema": 2, "device": "someone-else", "seqs": [[0, 2**62]]}).encode(),
    json.dumps({"schema": True, "device": DEVICE, "seqs": [[0, 2**62]]}).encode(),
    json.dumps({"schema": 2, "device": DEVICE, "seqs": [[5, 1]]}).encode(),
    json.dumps({"schema": 2, "device": DEVICE, "seqs": [[0.0, 2**62]]}).encode(),
    json.dumps({"schema": 2, "device": DEVICE, "seqs": [[0, 9], [5, 2**62]]}).encode(),
], ids=["not-json", "other-device", "bool-schema", "reversed", "float", "overlapping"])
def test_a_malformed_or_forged_acknowledgement_deletes_nothing_and_is_counted(broker, device, payload) -> None:
    # Prepare
    tel = device(broker)
    assert tel.wait_connected(5.0)
    tel.event(event_body(0))
    # Execute
    with Publisher(broker.host, broker.port) as forger:
        forger.publish(topics.device_topic(DEVICE, "ack"), payload)
    # Assert
    wait_for(lambda: tel.counters.errors >= 1)
    assert tel.counters.pending == 1 and tel.counters.acked == 0


def test_acknowledgement_payloads_round_trip_as_ranges() -> None:
    payloads = acks.encode(DEVICE, [7, 3, 4, 5, 9, 7])
    assert [json.loads(p)["seqs"] for p in payloads] == [[[3, 5], [7, 7], [9, 9]]]
    assert acks.decode(DEVICE, payloads[0]) == [(3, 5), (7, 7), (9, 9)]
    many = acks.encode(DEVICE, range(0, 2 * acks.MAX_RANGES + 2, 2))
    assert len(many) == 2 and sum(len(acks.decode(DEVICE, p)) for p in many) == acks.MAX_RANGES + 1
    with pytest.raises(ContractError, match="schema"):
        acks.decode(DEVICE, json.dumps({"schema": 2.0, "device": DEVICE, "seqs": []}).encode())


def _missing(tmp_path: Path, broker: Any) -> int:
    """How many of DEVICE's sequence numbers the server's database lacks (see Store.gaps)."""
    from edgetune.server.store import Store

    with Store.open(str(tmp_path / f"server-{broker.port}.db")) as store:
        gaps = store.gaps(DEVICE)
    assert gaps is not None
    return gaps["missing"]


def test_failed_connection_attempts_leave_no_gap_in_the_sequence_numbers(stopped_broker, device, serve,
                                                                          tmp_path) -> None:
    # Prepare: the device tries and fails to connect several times (each attempt needs a last will)
    serve(stopped_broker)
    tel = device(stopped_broker, reconnect_delay_s=(0.05, 0.1), ack_timeout_s=1.0)
    tel.event(event_body(0))
    time.sleep(0.5)  # several attempts, 0.05-0.1 s apart
    # Execute
    stopped_broker.start_on(stopped_broker.port)
    tel.event(event_body(1))
    assert tel.flush(20.0)
    # Assert: the online status, the events and the will's reserved number: nothing missing
    assert _missing(tmp_path, stopped_broker) == 0


def test_the_will_of_a_connection_the_broker_lost_is_sent_again(make_broker, device, serve, tmp_path) -> None:
    # Prepare: a device connected to a broker without persistence
    broker = make_broker("")
    serve(broker)
    tel = device(broker, reconnect_delay_s=(0.1, 0.2), ack_timeout_s=1.0)
    tel.event(event_body(0))
    assert tel.flush(10.0)
    # Execute: the broker dies (no will published: it is gone) and comes back empty
    broker.kill()
    broker.restart()
    wait_for(lambda: tel.connected, 10.0)
    tel.event(event_body(1))
    assert tel.flush(20.0)
    # Assert: the lost connection's will (the number after its online status) came from the device
    # itself, and no number is missing
    db = tmp_path / f"server-{broker.port}.db"
    first_online = stored_seqs(db, DEVICE, "status")[0]
    wait_for(lambda: first_online + 1 in stored_seqs(db, DEVICE, "status"), 10.0)
    assert _missing(tmp_path, broker) == 0
