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
    return {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.9, "modality": "audio",
            "source": "wav:/data/clip.wav", "offset_s": 0.1 * i, "bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 0}


@pytest.fixture
def make_telemetry(tmp_path: Path, serve: Any) -> Iterator[Callable[..., Telemetry]]:
    """``make_telemetry(broker, **kwargs)`` -> a started :class:`Telemetry`, closed after the test,
    with the real server's ingest on the same broker (``serve=False``: none), whose end-to-end
    acknowledgements are what let a message leave the outbox."""
    made: list[Telemetry] = []

    def factory(broker: Any, serve_too: bool = True, **kwargs: Any) -> Telemetry:
        if serve_too:
            serve(broker)
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
    metrics = tel.metrics({"pipeline": "audio", "window_s": 10.0, "inferences": 8, "latency_ms": {}, "provider": "CPUExecutionProvider"})
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


class _PubackWatch:
    """Widens the window of the publish race, with the real paho and broker: after paho's
    ``publish()`` has queued a message, the publishing thread is held until paho's network thread
    has received the broker's PUBACK for it and, unless a lock keeps it waiting, reported it
    (``on_publish``): the moment at which the caller has not yet recorded the message id."""

    #: How long a held publish waits for paho to report a PUBACK that has arrived. Reporting it
    #: takes microseconds when nothing blocks it, so this only bounds the wait when something does.
    REPORT_WAIT_S = 0.2

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import paho.mqtt.client as mqtt

        self._cond = threading.Condition()
        self.arrived = self.reported = 0  # PUBACKs read by paho; PUBACKs paho finished reporting
        self.held = 0  # publishes whose PUBACK arrived before publish() returned
        real_publish, real_handle = mqtt.Client.publish, mqtt.Client._handle_pubackcomp

        def publish(client: Any, *args: Any, **kwargs: Any) -> Any:
            with self._cond:
                arrived = self.arrived
            info = real_publish(client, *args, **kwargs)
            with self._cond:
                if self._cond.wait_for(lambda: self.arrived > arrived, 5.0):
                    self.held += 1
                    reported = self.reported
                    self._cond.wait_for(lambda: self.reported > reported, self.REPORT_WAIT_S)
            return info

        def handle(client: Any, cmd: Any) -> Any:
            with self._cond:
                self.arrived += 1
                self._cond.notify_all()
            try:
                return real_handle(client, cmd)  # takes paho's outgoing-message lock, then calls on_publish
            finally:
                with self._cond:
                    self.reported += 1
                    self._cond.notify_all()

        monkeypatch.setattr(mqtt.Client, "publish", publish)
        monkeypatch.setattr(mqtt.Client, "_handle_pubackcomp", handle)


def test_a_puback_that_arrives_before_publish_returns_still_acknowledges_the_message(broker, make_telemetry,
                                                                                    monkeypatch) -> None:
    # Prepare: a connected device; from now on every PUBACK reaches paho while the device is
    # still inside publish()
    tel = make_telemetry(broker)
    assert tel.wait_connected(5.0)
    watch = _PubackWatch(monkeypatch)
    # Execute
    tel.event(body(0))
    flushed = tel.flush(5.0)
    # Assert: the race really happened (for the event; the server's acknowledgement, published in
    # this process too, may be held as well), and the event was sent and deleted all the same
    assert watch.held >= 1
    assert flushed
    assert (tel.counters.acked, tel.counters.pending, tel.counters.errors) == (1, 0, 0)


def test_a_paho_without_its_outgoing_message_lock_is_refused(stopped_broker, tmp_path, monkeypatch) -> None:
    # Prepare: a paho whose client lacks the private lock the publisher relies on
    import paho.mqtt.client as mqtt

    from edgetune.errors import UsageError

    real_init = mqtt.Client.__init__

    def init(client: Any, *args: Any, **kwargs: Any) -> None:
        real_init(client, *args, **kwargs)
        del client._out_message_mutex

    monkeypatch.setattr(mqtt.Client, "__init__", init)
    # Execute / Assert: refused at start-up, naming the lock and what to install
    with pytest.raises(UsageError, match=r"_out_message_mutex.*pip install 'paho-mqtt>=2.0,<3'"):
        started = Telemetry(DEVICE, tmp_path / "state" / "outbox.sqlite", stopped_broker.host, stopped_broker.port)
        started.close(timeout_s=0.1)  # reached only if it was not refused


def test_the_sink_publishes_the_streaming_loops_records(broker, subscribe, make_telemetry) -> None:
    # Prepare: the records the streaming loop reports, a connected device and a subscriber
    from edgetune.edge.sinks import Detection, DetectionEvent, MetricsReport
    from edgetune.edge.telemetry import TelemetrySink

    detection = DetectionEvent(Detection(label="stop", score=0.875, offset_s=12.5, latency_ms=4.25),
                               observed_at=1_795_000_000.25, source="wav:/data/clip.wav", bundle_id="kws-demo",
                               bundle_version="1.0.0", head_version=3, pipeline="audio", head="keywords")
    report = MetricsReport(observed_at=1_795_000_010.5, window_s=10.0, inferences=100,
                           latency_ms={"p50": 2.0, "p95": 3.5}, rtf=0.125, provider="CPUExecutionProvider",
                           errors={"frames": 1}, pipeline="audio")
    sub = subscribe(broker)
    tel = make_telemetry(broker)
    assert tel.wait_connected(5.0)
    sink = TelemetrySink(tel)
    # Execute
    sink.detection(detection)
    sink.metrics(report)
    assert tel.flush(5.0)
    # Assert: each record arrived once, as what it is, stamped with its own observation time
    (event,) = wait_for(lambda: sub.envelopes("events"))
    (metrics,) = wait_for(lambda: sub.envelopes("metrics"))
    (online, _), *_ = sub.statuses()
    assert (event["device"], event["observed_at"]) == (DEVICE, 1_795_000_000.25)
    assert event["body"] == {"pipeline": "audio", "head": "keywords", "label": "stop", "score": 0.875,
                             "modality": "audio", "source": "wav:/data/clip.wav", "offset_s": 12.5,
                             "bundle_id": "kws-demo", "bundle_version": "1.0.0", "head_version": 3,
                             "latency_ms": 4.25}
    assert (metrics["device"], metrics["observed_at"]) == (DEVICE, 1_795_000_010.5)
    outbox = metrics["body"].pop("outbox")
    assert metrics["body"] == {"pipeline": "audio", "window_s": 10.0, "inferences": 100,
                               "latency_ms": {"p50": 2.0, "p95": 3.5}, "rtf": 0.125,
                               "provider": "CPUExecutionProvider", "errors": {"frames": 1}}
    assert set(outbox) == {"pending", "dropped_overflow", "sent"}
    assert online["seq"] < event["seq"] and metrics["seq"] == event["seq"] + 1


def test_unacknowledged_messages_are_resent_oldest_first_after_a_reconnect(make_broker, subscribe,
                                                                          make_telemetry, tmp_path) -> None:
    # Prepare: a broker (persistent, on its own free port) whose ACL refuses the device's
    # publishes, so each message is sent once and stays in the outbox; a subscriber whose
    # session survives the broker's restart
    acl = tmp_path / "acl"
    acl.write_text("topic read edgetune/#\n")
    broker = make_broker(f"acl_file {acl}", persistence=True)
    sub = subscribe(broker, persistent=True)
    tel = make_telemetry(broker, reconnect_delay_s=(0.2, 0.5))
    put = [tel.event(body(i))["seq"] for i in range(10)]
    wait_for(lambda: tel.counters.errors >= 11)  # the online status and the ten events, each refused
    assert (tel.counters.pending, tel.counters.acked) == (10, 0)
    # Execute: the broker stops, and comes back on the same port accepting the device
    broker.stop()
    broker.extra_config = ""
    broker.restart()
    flushed = tel.flush(10.0)
    # Assert: on the new connection every message went again, in sequence order from the oldest
    assert flushed
    assert wait_for(lambda: sub.seqs() if len(sub.seqs()) >= 10 else None) == put
    assert (tel.counters.acked, tel.counters.pending) == (10, 0)


def test_a_puback_for_a_message_overflow_dropped_in_flight_changes_no_counter(broker, subscribe, make_telemetry,
                                                                             frozen, tmp_path) -> None:
    # Prepare: a connected device with room for three messages, and the broker frozen so that
    # what the device sends stays unacknowledged
    sub = subscribe(broker)
    tel = make_telemetry(broker, max_messages=3, overflow="drop_oldest")
    assert tel.wait_connected(5.0)
    with frozen(broker):
        first = tel.event(body(0))["seq"]
        wait_for(lambda: tel.counters.published >= 2)  # the first event is in flight (after the online status)
        rest = [tel.event(body(i))["seq"] for i in range(1, 4)]  # the fourth put drops the first
        dropped_in_flight = tel.counters.dropped
    # Execute: the broker wakes and acknowledges all four (leaving the block)
    flushed = tel.flush(5.0)
    wait_for(lambda: len(sub.seqs()) >= 4)  # the broker had all four, so it acknowledged all four
    counters = tel.counters
    tel.close(timeout_s=5.0)
    # Assert: the PUBACK for the dropped message deleted and counted nothing
    assert dropped_in_flight == 1 and flushed
    assert sub.seqs() == [first, *rest]
    assert (counters.acked, counters.pending, counters.dropped, counters.errors) == (3, 0, 1, 0)
    with Outbox(tmp_path / "state" / "outbox.sqlite", DEVICE) as outbox:
        counts = outbox.counts()
    assert (counts.pending, counts.sent, counts.dropped_overflow) == (0, 3, 1)


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
