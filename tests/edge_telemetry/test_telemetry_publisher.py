"""The publisher against a real Mosquitto: delivery through outages, status, last will."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from support.telemetry import wait_for

import edgetune
from edgetune.contract import ContractError
from edgetune.edge.telemetry import Outbox, Telemetry

pytestmark = pytest.mark.broker

DEVICE = "jetson-test-01"  # the device the `subscribe` fixture listens to

EXTRA = {"bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 0, "provider": "CPUExecutionProvider"}


def body(i: int) -> dict[str, Any]:
    return {"label": "yes", "score": 0.9, "modality": "audio", "source": "wav:/data/clip.wav",
            "offset_s": 0.1 * i, "bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 0}


@pytest.fixture
def make_telemetry(tmp_path: Path) -> Iterator[Callable[..., Telemetry]]:
    """``make_telemetry(broker, **kwargs)`` -> a started :class:`Telemetry`, closed after the test."""
    made: list[Telemetry] = []

    def factory(broker: Any, **kwargs: Any) -> Telemetry:
        kwargs.setdefault("status_extra", EXTRA)
        tel = Telemetry(DEVICE, tmp_path / "state" / "outbox.sqlite", broker.host, broker.port, **kwargs)
        made.append(tel)
        return tel

    yield factory
    for tel in made:
        tel.close(timeout_s=1.0)


def test_retained_status_is_online_with_the_bundle_while_connected(broker, subscribe, make_telemetry) -> None:
    # Prepare
    tel = make_telemetry(broker)
    assert tel.wait_connected(5.0)
    # Execute: a subscriber that arrives later gets the retained status
    sub = subscribe(broker)
    (status, retained), *_ = wait_for(sub.statuses)
    # Assert
    assert retained
    assert status["body"] == {"state": "online", "software": edgetune.__version__, **EXTRA}


def test_events_are_delivered_in_order_and_leave_the_outbox(broker, subscribe, make_telemetry) -> None:
    # Prepare
    sub = subscribe(broker)
    tel = make_telemetry(broker)
    # Execute
    put = [tel.event(body(i))["seq"] for i in range(20)]
    flushed = tel.flush(5.0)
    # Assert
    assert flushed
    assert wait_for(lambda: sub.seqs() if len(sub.seqs()) >= 20 else None) == put
    counters = tel.counters
    assert (counters.acked, counters.pending, counters.errors) == (20, 0, 0)
    assert counters.published >= 21  # the events and the online status


def test_messages_put_while_the_broker_is_down_arrive_after_it_starts(stopped_broker, subscribe,
                                                                      make_telemetry) -> None:
    # Prepare: the device starts with no broker, and observes while offline
    tel = make_telemetry(stopped_broker, reconnect_delay_s=(0.5, 1.0))
    put = [tel.event(body(i)) for i in range(30)]
    observed_by = time.time()
    assert not tel.connected and tel.counters.pending == 30
    # Execute: the broker comes up (the subscriber is back before the device's next attempt)
    stopped_broker.start_on(stopped_broker.port)
    sub = subscribe(stopped_broker)
    flushed = tel.flush(10.0)
    # Assert: all of them, in order, stamped when observed rather than when sent
    assert flushed
    events = wait_for(lambda: sub.envelopes("events") if len(sub.envelopes("events")) >= 30 else None)
    assert [e["seq"] for e in events] == [p["seq"] for p in put]
    assert all(e["observed_at"] <= observed_by for e in events)
    kinds = [kind for kind, _, _ in sub.received]
    assert kinds.index("status") < kinds.index("events")  # online first, then the backlog


def test_killing_the_broker_mid_stream_loses_nothing(broker, subscribe, make_telemetry) -> None:
    # Prepare: a stream of events; the device waits 1.5 s before reconnecting
    sub = subscribe(broker)
    tel = make_telemetry(broker, reconnect_delay_s=(1.5, 3.0))
    assert tel.wait_connected(5.0)
    put: list[int] = []
    hundred = threading.Event()

    def stream() -> None:
        for i in range(300):
            put.append(tel.event(body(i))["seq"])
            if i == 100:
                hundred.set()
            time.sleep(0.002)

    streamer = threading.Thread(target=stream)
    streamer.start()
    # Execute: SIGKILL the broker mid-stream, restart it on the same port
    assert hundred.wait(10.0)
    broker.kill()
    time.sleep(0.2)
    broker.restart()
    wait_for(lambda: sub.subscriptions >= 2, 5.0)
    streamer.join(20.0)
    flushed = tel.flush(15.0)
    # Assert: every seq that was put arrives at least once (duplicates are the server's to drop)
    assert flushed
    wait_for(lambda: set(put) <= set(sub.seqs()), 10.0)
    assert len(put) == 300
    assert tel.counters.pending == 0


def test_the_last_will_marks_a_killed_device_offline(broker, subscribe, tmp_path) -> None:
    # Prepare: the device in its own process
    sub = subscribe(broker)
    script = (
        "import sys, time\n"
        "from edgetune.edge.telemetry import Telemetry\n"
        "t = Telemetry(sys.argv[1], sys.argv[2], '127.0.0.1', int(sys.argv[3]), status_extra={'bundle_id': 'kws-demo'})\n"
        "assert t.wait_connected(10)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    args = [sys.executable, "-c", script, DEVICE, str(tmp_path / "outbox.sqlite"), str(broker.port)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as device:
        assert device.stdout is not None
        assert device.stdout.readline().strip() == "ready"
        (online, _), *_ = wait_for(sub.statuses)
        # Execute: kill it without a word to the broker
        device.kill()
        device.wait()
    # Assert: the broker published the will, retained, and it is the later state
    offline = wait_for(lambda: [env for env, _ in sub.statuses() if env["body"]["state"] == "offline"])[0]
    assert online["body"]["state"] == "online" and offline["seq"] > online["seq"]
    assert offline["body"]["bundle_id"] == "kws-demo"
    late = subscribe(broker)
    (retained_status, retained), *_ = wait_for(late.statuses)
    assert retained and retained_status == offline


def test_close_flushes_and_leaves_a_retained_offline_status(broker, subscribe, make_telemetry, tmp_path) -> None:
    # Prepare
    sub = subscribe(broker)
    tel = make_telemetry(broker)
    for i in range(5):
        tel.event(body(i))
    # Execute
    delivered = tel.close(timeout_s=5.0)
    # Assert
    assert delivered
    states = [env["body"]["state"] for env, _ in wait_for(lambda: sub.statuses() if len(sub.statuses()) >= 2 else None)]
    assert states == ["online", "offline"]
    late = subscribe(broker)
    (retained_status, retained), *_ = wait_for(late.statuses)
    assert retained and retained_status["body"]["state"] == "offline"
    with Outbox(tmp_path / "state" / "outbox.sqlite", DEVICE) as outbox:
        assert outbox.counts().pending == 0


def test_status_updates_are_published_retained(broker, subscribe, make_telemetry) -> None:
    sub = subscribe(broker)
    tel = make_telemetry(broker)
    assert tel.wait_connected(5.0)
    tel.status(head_version=4)
    latest = wait_for(lambda: [env for env, _ in sub.statuses() if env["body"].get("head_version") == 4])[0]
    assert latest["body"]["state"] == "online" and latest["body"]["bundle_id"] == "kws-demo"
    with pytest.raises(ContractError, match="head_version"):
        tel.status(head_version=-1)


def test_overflow_while_offline_is_counted_and_reported_in_metrics(stopped_broker, subscribe,
                                                                   make_telemetry) -> None:
    # Prepare: a tiny outbox and no broker
    tel = make_telemetry(stopped_broker, max_messages=5, overflow="drop_oldest", reconnect_delay_s=(0.5, 1.0))
    put = [tel.event(body(i))["seq"] for i in range(8)]
    # Execute
    metrics = tel.metrics({"window_s": 10.0, "inferences": 8, "latency_ms": {}, "provider": "CPUExecutionProvider"})
    stopped_broker.start_on(stopped_broker.port)
    sub = subscribe(stopped_broker)
    assert tel.flush(10.0)
    # Assert: 3 events were dropped when the metrics were taken, and one more to make room for
    # the metrics message itself; the rest arrived
    assert metrics is not None and metrics["body"]["outbox"]["dropped_overflow"] == 3
    assert tel.counters.dropped == 4
    assert wait_for(lambda: sub.seqs() if len(sub.seqs()) >= 4 else None) == put[4:]
    assert wait_for(lambda: sub.seqs("metrics")) == [metrics["seq"]]


def test_a_publish_the_broker_refuses_stays_in_the_outbox(tmp_path, make_broker, make_telemetry) -> None:
    # Prepare: a broker whose ACL lets anonymous clients read but not write
    acl = tmp_path / "acl"
    acl.write_text("topic read edgetune/#\n")
    broker = make_broker(f"acl_file {acl}")  # LocalBroker runs as us, so it can read the file
    tel = make_telemetry(broker)
    # Execute
    tel.event(body(0))
    # Assert: the PUBACK said "not authorised"; nothing is deleted, the error is counted
    wait_for(lambda: tel.counters.errors >= 2)  # the online status and the event
    assert not tel.flush(0.3)
    assert (tel.counters.pending, tel.counters.acked) == (1, 0)
    tel.close(timeout_s=0.2)


def test_a_bad_body_raises_and_queues_nothing(stopped_broker, make_telemetry) -> None:
    tel = make_telemetry(stopped_broker)
    with pytest.raises(ContractError, match="modality"):
        tel.event({**body(0), "modality": "smell"})
    assert tel.counters.pending == 0


def test_the_pubaack_race_guard_still_exists_in_paho() -> None:
    # The publisher holds paho's outgoing-message lock across publish() and its bookkeeping,
    # the lock paho holds while it calls on_publish; a paho that renamed it would bring back a
    # race where a PUBACK arrives before its message id is recorded.
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    assert hasattr(client, "_out_message_mutex")


def test_the_sink_queues_what_the_streaming_loop_reports(stopped_broker, make_telemetry) -> None:
    # Prepare: records shaped like edgetune.edge.sinks' DetectionEvent and MetricsReport
    from edgetune.edge.telemetry import TelemetrySink

    class Record:
        def __init__(self, body: dict[str, Any], observed_at: float) -> None:
            self._body, self.observed_at = body, observed_at

        def body(self) -> dict[str, Any]:
            return self._body

    tel = make_telemetry(stopped_broker)
    sink = TelemetrySink(tel)
    # Execute
    sink.detection(Record(body(0), 1_795_000_000.0))
    sink.metrics(Record({"window_s": 10.0, "inferences": 1, "latency_ms": {"p50": 2.0},
                         "provider": "CPUExecutionProvider"}, 1_795_000_010.0))
    # Assert
    assert tel.counters.pending == 2


def test_from_config_puts_the_outbox_in_the_state_dir_and_is_none_without_a_broker(stopped_broker, tmp_path) -> None:
    from edgetune.edge.config import DaemonConfig, MqttConfig

    config = DaemonConfig(device_id=DEVICE, bundle="b", mqtt=MqttConfig(host=stopped_broker.host,
                                                                          port=stopped_broker.port))
    assert Telemetry.from_config(dataclasses.replace(config, mqtt=MqttConfig())) is None
    tel = Telemetry.from_config(config, state_dir=tmp_path / "state-dir", status_extra=EXTRA)
    assert tel is not None
    try:
        tel.event(body(0))
        assert (tmp_path / "state-dir" / "outbox.sqlite").is_file() and tel.counters.pending == 1
    finally:
        tel.close(timeout_s=0.1)
