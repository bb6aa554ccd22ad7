"""Ingest against a real Mosquitto and a real SQLite file: valid, duplicate, malformed, restarts, DB failures."""

from __future__ import annotations

import json
import logging
import sqlite3

import httpx
import pytest
from support.telemetry import make_event, make_metrics, make_status, topic_for, wait_for

from edgetune.contract import messages, topics
from edgetune.server.ingest import MAX_PACKET_BYTES, Ingest, IngestConfig, subscription_filters

pytestmark = pytest.mark.broker


def _stored(server, device):
    return server.store.events(device=device, limit=100)


def test_valid_event_is_stored(server, publisher):
    # Prepare
    msg = make_event("jetson-01", seq=7, label="stop", score=0.81)

    # Execute
    publisher.send(msg)

    # Assert
    events = wait_for(lambda: _stored(server, "jetson-01"))
    assert [(e["seq"], e["body"]["label"], e["body"]["score"]) for e in events] == [(7, "stop", 0.81)]
    assert events[0]["observed_at"] == msg["observed_at"]
    assert events[0]["topic"] == "edgetune/v1/jetson-01/events"
    assert server.counters.stored == 1


def test_same_device_and_seq_delivered_twice_is_stored_once(server, publisher):
    # Prepare
    msg = make_event("jetson-01", seq=1)

    # Execute
    publisher.send(msg)
    publisher.send(msg)
    publisher.send(make_event("jetson-01", seq=2))

    # Assert
    wait_for(lambda: server.counters.stored + server.counters.duplicates == 3)
    assert [e["seq"] for e in _stored(server, "jetson-01")] == [2, 1]
    assert (server.counters.stored, server.counters.duplicates) == (2, 1)
    assert server.store.device("jetson-01")["events"] == 2


def _valid_payload(**changes):
    envelope = make_event("jetson-01", seq=5)
    envelope.update(changes)
    return json.dumps(envelope).encode()


def _payload_without_label():
    envelope = make_event("jetson-01", seq=5)
    del envelope["body"]["label"]
    return json.dumps(envelope).encode()


def _payload_with_nan_score():
    envelope = make_event("jetson-01", seq=5)
    envelope["body"]["score"] = float("nan")
    return json.dumps(envelope).encode()  # json.dumps writes NaN, which is not JSON


MALFORMED = {
    "not_json": ("edgetune/v1/jetson-01/events", b"{this is not json"),
    "not_utf8": ("edgetune/v1/jetson-01/events", b'{"schema": 1, "device": "\xff\xfe"}'),
    "too_deep": ("edgetune/v1/jetson-01/events", b"[" * 100_000 + b"]" * 100_000),
    "wrong_schema": ("edgetune/v1/jetson-01/events", _payload_without_label()),
    "nan": ("edgetune/v1/jetson-01/events", _payload_with_nan_score()),
    "unknown_type": ("edgetune/v1/jetson-01/events", _valid_payload(type="bogus")),
    "oversized": ("edgetune/v1/jetson-01/events", b" " * (messages.MAX_PAYLOAD_BYTES + 1)),
    "device_mismatch": ("edgetune/v1/jetson-02/events", _valid_payload()),
    "type_mismatch": ("edgetune/v1/jetson-01/metrics", _valid_payload()),
    "reserved_device_in_topic": ("edgetune/v1/fleet/events", _valid_payload()),
}
EXPECTED_REASON = {
    "not_json": "not_json", "not_utf8": "not_json", "too_deep": "not_json", "wrong_schema": "schema",
    "nan": "not_json", "unknown_type": "schema", "oversized": "oversized", "device_mismatch": "device_mismatch",
    "type_mismatch": "type_mismatch", "reserved_device_in_topic": "topic",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_message_is_counted_by_reason_and_not_stored(server, publisher, case, caplog):
    # Prepare
    topic, payload = MALFORMED[case]
    reason = EXPECTED_REASON[case]

    # Execute
    with caplog.at_level(logging.WARNING, logger="edgetune.server.ingest"):
        publisher.publish(topic, payload)
        publisher.send(make_event("jetson-01", seq=6))  # the next good message

    # Assert
    wait_for(lambda: server.counters.stored == 1)
    assert server.counters.rejected == {reason: 1}
    assert [e["seq"] for e in _stored(server, "jetson-01")] == [6]
    assert server.store.stats()["stored_total"] == 1
    assert server.store.stats()["rejected"] == {reason: 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(topic in w and f"({reason})" in w for w in warnings), warnings


def test_a_payload_beyond_the_packet_limit_never_reaches_the_server(server, publisher):
    # Prepare: the server asked the broker for packets of at most MAX_PACKET_BYTES
    huge = b" " * (MAX_PACKET_BYTES + 1)

    # Execute
    publisher.publish("edgetune/v1/jetson-01/events", huge)
    publisher.send(make_event("jetson-01", seq=1))

    # Assert
    wait_for(lambda: server.counters.stored == 1)
    assert server.counters.received == 1 and server.counters.rejected == {}


def test_retained_status_published_before_start_updates_the_device_row(make_server, publisher):
    # Prepare
    publisher.send(make_status("jetson-03", seq=40, bundle_version="2.1.0", head_version=9,
                               provider="TensorrtExecutionProvider"), retain=True)
    server = make_server()

    # Execute
    server.start()

    # Assert
    device = wait_for(lambda: server.store.device("jetson-03"))
    assert (device["state"], device["bundle_version"], device["head_version"], device["provider"]) == (
        "online", "2.1.0", 9, "TensorrtExecutionProvider")
    assert device["status"]["software"] == "0.1.0"


def test_last_will_offline_status_marks_the_device_offline(server, broker):
    # Prepare: a device whose last will is an offline status, as the device daemon sets it
    import paho.mqtt.client as mqtt

    will = make_status("jetson-04", seq=10, state="offline")
    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="jetson-04", protocol=mqtt.MQTTv5)
    device.will_set(topic_for(will), messages.encode(will), qos=1, retain=True)
    device.connect(broker.host, broker.port)
    device.loop_start()
    device.publish(topic_for(will), messages.encode(make_status("jetson-04", seq=11)), qos=1,
                   retain=True).wait_for_publish(5)
    wait_for(lambda: (server.store.device("jetson-04") or {}).get("state") == "online")

    # Execute: the device vanishes without a DISCONNECT, so the broker publishes its will
    device.loop_stop()
    device.socket().close()

    # Assert
    wait_for(lambda: server.store.device("jetson-04")["state"] == "offline", timeout_s=10)
    assert server.store.device("jetson-04")["status_seq"] == 10


def test_messages_published_while_server_stopped_are_stored_after_restart(make_server, publisher):
    # Prepare: the server's session exists on the broker, then the server stops
    first = make_server(client_id="edgetune-server-restart")
    first.start()
    assert first.wait_subscribed(5)
    first.stop()

    # Execute
    for seq in (1, 2, 3):
        publisher.send(make_event("jetson-05", seq=seq))
    again = make_server(client_id="edgetune-server-restart")
    again.start()

    # Assert
    wait_for(lambda: len(_stored(again, "jetson-05")) == 3)
    assert [e["seq"] for e in _stored(again, "jetson-05")] == [3, 2, 1]


def test_message_is_kept_until_the_database_accepts_it(make_server, publisher, db_path, caplog):
    # Prepare: another process holds SQLite's write lock; the server waits 50 ms for it, then retries
    server = make_server(busy_timeout_ms=50, store_retry_s=0.1)
    server.start()
    assert server.wait_subscribed(5)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")

    # Execute
    with caplog.at_level(logging.ERROR, logger="edgetune.server.ingest"):
        publisher.send(make_event("jetson-06", seq=1))
        wait_for(lambda: server.counters.store_errors >= 2)
        failing = server.counters.store_failing
        blocker.execute("ROLLBACK")
        blocker.close()

    # Assert
    wait_for(lambda: _stored(server, "jetson-06"))
    assert failing
    assert server.counters.stored == 1 and not server.counters.store_failing
    assert any("cannot store jetson-06/1" in r.getMessage() for r in caplog.records)


def test_by_default_every_server_instance_receives_every_message(make_server, publisher):
    # Prepare: two instances as a user starts them (plain subscriptions), on one database
    one, two = make_server(client_id="edgetune-server-a"), make_server(client_id="edgetune-server-b")
    one.start()
    two.start()
    assert one.wait_subscribed(5) and two.wait_subscribed(5)

    # Execute
    for seq in range(20):
        publisher.send(make_metrics("jetson-07", seq=seq))

    # Assert: each received all 20; the database kept each once, the other copy is a duplicate
    wait_for(lambda: one.counters.received == 20 and two.counters.received == 20)
    wait_for(lambda: sum(s.counters.stored + s.counters.duplicates for s in (one, two)) == 40)
    assert one.counters.stored + two.counters.stored == 20
    assert len(one.store.metrics("jetson-07", limit=100)) == 20


def test_shared_subscription_splits_messages_between_two_servers(make_server, publisher):
    # Prepare: the one test of --shared
    one, two = (make_server(client_id="edgetune-server-a", shared=True),
                make_server(client_id="edgetune-server-b", shared=True))
    one.start()
    two.start()
    assert one.wait_subscribed(5) and two.wait_subscribed(5)

    # Execute
    for seq in range(20):
        publisher.send(make_metrics("jetson-07", seq=seq))

    # Assert
    wait_for(lambda: one.counters.stored + two.counters.stored == 20)
    assert one.counters.stored > 0 and two.counters.stored > 0
    assert len(one.store.metrics("jetson-07", limit=100)) == 20


def test_plain_subscriptions_when_shared_is_off():
    # Execute
    filters = subscription_filters(shared=False)

    # Assert
    assert filters == topics.server_subscriptions(shared=False)
    assert all(not f.startswith("$share/") for f in filters)


def test_status_is_read_without_share_so_every_instance_gets_the_retained_one():
    # Execute
    filters = subscription_filters(shared=True)

    # Assert
    assert "edgetune/v1/+/status" in filters
    assert sorted(f for f in filters if f.startswith("$share/")) == sorted(
        f for f in topics.server_subscriptions(shared=True) if not f.endswith("/status"))


def test_the_api_serves_what_was_ingested_over_real_http(server, publisher):
    # Prepare
    publisher.send(make_status("jetson-08", seq=1), retain=True)
    publisher.send(make_event("jetson-08", seq=2, label="go"))
    wait_for(lambda: server.counters.stored == 2)

    # Execute
    devices = httpx.get(server.url + "api/devices").json()["devices"]
    events = httpx.get(server.url + "api/events", params={"device": "jetson-08"}).json()["events"]
    health = httpx.get(server.url + "api/health")

    # Assert
    assert [(d["device"], d["state"], d["events"]) for d in devices] == [("jetson-08", "online", 1)]
    assert [(e["seq"], e["body"]["label"]) for e in events] == [(2, "go")]
    assert health.status_code == 200 and health.json()["ok"] is True
    assert health.json()["counters"]["stored"] == 2


def test_health_is_503_while_the_broker_is_unreachable(make_server, broker):
    # Prepare
    server = make_server()
    broker.stop()

    # Execute
    server.start(wait_s=0.5)
    response = httpx.get(server.url + "api/health")

    # Assert
    assert response.status_code == 503
    assert response.json()["broker"]["subscribed"] is False



def test_a_topic_that_is_not_utf8_is_rejected_without_a_broker(store):
    # Prepare: (Mosquitto refuses such topics itself; another broker might pass one on)
    ingest = Ingest(store)

    # Execute
    msg = ingest.validate(None, messages.encode(make_event("jetson-01", seq=1)))

    # Assert
    assert msg is None and ingest.counters.rejected == {"topic": 1}
    assert store.stats()["rejected"] == {"topic": 1}


def test_rejects_of_one_reason_are_logged_once_per_interval(store, caplog):
    # Prepare
    ingest = Ingest(store, IngestConfig(reject_log_interval_s=60))

    # Execute
    with caplog.at_level(logging.WARNING, logger="edgetune.server.ingest"):
        for _ in range(5):
            ingest.validate("edgetune/v1/jetson-01/events", b"nope")
        ingest.validate("edgetune/v1/jetson-01/events", b" " * (messages.MAX_PAYLOAD_BYTES + 1))

    # Assert
    assert ingest.counters.rejected == {"not_json": 5, "oversized": 1}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and "(not_json)" in logged[0] and "(oversized)" in logged[1]
