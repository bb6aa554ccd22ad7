"""The SQLite store on a real file: idempotence, device rows, status ordering, queries, failures."""

from __future__ import annotations

import sqlite3

import pytest
from support.telemetry import T0, make_event, make_metrics, make_status

from edgetune.errors import UsageError
from edgetune.server.db import SqliteBackend, open_backend
from edgetune.server.store import Outcome, Store, StoreError

TOPIC = "edgetune/v1/jetson-01/events"


def test_a_new_message_is_stored_and_a_replay_is_a_duplicate(store):
    # Prepare
    msg = make_event("jetson-01", seq=3)

    # Execute
    outcomes = [store.add(msg, TOPIC, received_at=T0 + 10), store.add(msg, TOPIC, received_at=T0 + 20)]

    # Assert
    assert outcomes == [Outcome.STORED, Outcome.DUPLICATE]
    assert len(store.events()) == 1
    assert store.events()[0]["received_at"] == T0 + 10
    assert store.device("jetson-01")["duplicates"] == 1


def test_a_reused_seq_with_other_content_is_a_conflict_and_the_first_is_kept(store):
    # Prepare
    store.add(make_event("jetson-01", seq=3, label="yes"), TOPIC, received_at=T0)

    # Execute
    outcome = store.add(make_event("jetson-01", seq=3, label="no"), TOPIC, received_at=T0)

    # Assert
    assert outcome is Outcome.CONFLICT
    assert [e["body"]["label"] for e in store.events()] == ["yes"]


def test_device_row_tracks_first_and_last_observation_and_the_last_event(store):
    # Prepare: arrivals out of order, as after an outbox flush
    for seq in (5, 2, 9):
        store.add(make_event("jetson-01", seq=seq, label=f"w{seq}"), TOPIC, received_at=T0 + 100 + seq)

    # Execute
    device = store.device("jetson-01")

    # Assert
    assert (device["first_seen"], device["last_seen"]) == (T0 + 2, T0 + 9)
    assert (device["messages"], device["events"]) == (3, 3)
    assert device["last_event"] == {"seq": 9, "observed_at": T0 + 9, "label": "w9", "score": 0.93}
    assert device["state"] is None and device["status"] is None


def test_a_newer_status_replaces_an_older_one_but_not_the_reverse(store):
    # Prepare
    store.add(make_status("jetson-01", seq=20, head_version=5), "t", received_at=T0)

    # Execute
    store.add(make_status("jetson-01", seq=12, head_version=4), "t", received_at=T0 + 1)

    # Assert
    device = store.device("jetson-01")
    assert (device["head_version"], device["status_seq"]) == (5, 20)


def test_an_offline_status_applies_even_with_a_lower_seq_like_a_last_will(store):
    # Prepare: the will was made (seq 20) when the device connected; it then said online (seq 21)
    store.add(make_status("jetson-01", seq=21), "t", received_at=T0)

    # Execute
    store.add(make_status("jetson-01", seq=20, state="offline"), "t", received_at=T0 + 1)

    # Assert
    assert store.device("jetson-01")["state"] == "offline"


def test_events_are_newest_first_and_after_seq_filters_one_device(store):
    # Prepare
    for seq in range(1, 6):
        store.add(make_event("jetson-01", seq=seq), TOPIC, received_at=T0)
    store.add(make_event("jetson-02", seq=1, observed_at=T0 + 2.5), "edgetune/v1/jetson-02/events", received_at=T0)

    # Execute
    everything = store.events(limit=4)
    after = store.events(device="jetson-01", after_seq=3)

    # Assert
    assert [(e["device"], e["seq"]) for e in everything] == [("jetson-01", 5), ("jetson-01", 4), ("jetson-01", 3),
                                                            ("jetson-02", 1)]
    assert [e["seq"] for e in after] == [5, 4]


def test_metrics_come_oldest_first_for_charts(store):
    # Prepare
    for seq in range(1, 5):
        store.add(make_metrics("jetson-01", seq=seq, p50_ms=float(seq)), "t", received_at=T0)
    store.add(make_event("jetson-01", seq=5), TOPIC, received_at=T0)

    # Execute
    metrics = store.metrics("jetson-01", limit=3)

    # Assert
    assert [m["body"]["latency_ms"]["p50"] for m in metrics] == [2.0, 3.0, 4.0]


def test_stats_count_stored_per_type_duplicates_and_rejects(store):
    # Prepare
    store.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)
    store.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)
    store.add(make_status("jetson-01", seq=2), "t", received_at=T0)

    # Execute
    store.count_reject("schema", TOPIC, "message body.label is None", at=T0)
    store.count_reject("schema", TOPIC, "message body.score is 2", at=T0 + 1)
    stats = store.stats()

    # Assert
    assert stats["stored"] == {"event": 1, "status": 1}
    assert (stats["stored_total"], stats["devices"], stats["duplicates"]) == (2, 1, 1)
    assert stats["rejected"] == {"schema": 2}
    assert stats["rejects"]["schema"]["last_error"] == "message body.score is 2"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(store, limit):
    # Execute / Assert
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=limit)


def test_data_survives_closing_and_reopening(db_path):
    # Prepare
    with Store.open(f"sqlite:///{db_path}") as first:
        first.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)

    # Execute
    with Store.open(str(db_path)) as again:
        outcome = again.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)
        events = again.events()

    # Assert
    assert outcome is Outcome.DUPLICATE and len(events) == 1


def test_the_database_is_in_wal_mode(store, db_path):
    # Execute
    with sqlite3.connect(db_path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()

    # Assert
    assert mode == "wal"


def test_a_locked_database_raises_store_error_and_stores_nothing(db_path):
    # Prepare
    store = Store.open(str(db_path), busy_timeout_ms=20)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")

    # Execute
    with pytest.raises(StoreError, match="locked"):
        store.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)

    # Assert
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.events() == []
    store.close()


def test_a_closed_store_refuses_work(store):
    # Prepare
    store.close()

    # Execute / Assert
    with pytest.raises(StoreError, match="closed"):
        store.add(make_event("jetson-01", seq=1), TOPIC, received_at=T0)


@pytest.mark.parametrize("url, path", [("sqlite:///fleet.db", "fleet.db"), ("sqlite:////tmp/fleet.db", "/tmp/fleet.db"),
                                       ("fleet.db", "fleet.db")])
def test_database_urls_name_a_sqlite_file(url, path):
    # Execute
    backend = open_backend(url)

    # Assert
    assert isinstance(backend, SqliteBackend) and backend.path == path


@pytest.mark.parametrize("url, message", [
    ("postgresql://u@db/edgetune", "PostgreSQL is not supported yet"),
    ("mysql://db/x", "unknown scheme"),
    ("sqlite:///:memory:", "not a file path"),
    ("", "empty"),
    ("/no/such/folder/x.db", "does not exist"),
])
def test_unusable_database_urls_are_refused_with_a_reason(url, message):
    # Execute / Assert
    with pytest.raises(UsageError, match=message):
        open_backend(url)
