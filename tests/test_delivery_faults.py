"""Faults a careful operator tries, with a real Mosquitto, the real server and the real device
telemetry: the broker stopped, killed (with and without its persistence file), the device killed
(mid-stream and with a backlog), the server killed, one of two load-sharing servers killed for
good. Each test ends with every event the device observed stored exactly once, read from the
server's database.

Why nothing is lost: a message leaves the device's outbox only when the server says it stored it
(an end-to-end acknowledgement on ``edgetune/v1/<device>/ack``); whatever a broker or a server
instance loses, the device still holds and sends again, after a reconnect or when the
acknowledgement is ``ACK_TIMEOUT_S`` late.

Outages last ``OUTAGE_S``, longer than the longest reconnect wait of the device and the server
(both capped at 4 s), so each side has been through its whole backoff: a longer outage (30 s)
exercises nothing more and would only make the suite slower.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from support.broker import require_mosquitto
from support.telemetry import event_body, stored_seqs, wait_for

from edgetune.edge.telemetry import Telemetry
from edgetune.edge.telemetry.link import DEFAULT_RECONNECT_DELAY_S
from edgetune.localbroker import LocalBroker, free_port
from edgetune.server.ingest import IngestConfig
from edgetune.server.service import Server, ServerConfig

pytestmark = [pytest.mark.slow, pytest.mark.broker]

DEVICE = "fault-jetson-01"
#: Longer than any reconnect wait (the caps, device and server: 4 s).
OUTAGE_S = DEFAULT_RECONNECT_DELAY_S[1] + 2.0
#: The device sends a message again when the server has not acknowledged it this long after.
ACK_TIMEOUT_S = 2.0
#: Generous bounds for "eventually"; the speed of recovery is measured in the benchmark.
SETTLE_S = 60.0

ROOT = Path(__file__).resolve().parents[1]

#: The device as a process of its own, so it can be killed: streams events, printing each seq once
#: Telemetry.event has returned (an observation the device has kept), then holds or closes.
DEVICE_SCRIPT = textwrap.dedent("""
    import sys, time
    from edgetune.edge.telemetry import Telemetry
    outbox, port, count, interval_s, then = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
        sys.argv[5]
    tel = Telemetry("%(device)s", outbox, "127.0.0.1", port, ack_timeout_s=%(ack)s)
    print("ready", flush=True)
    for i in range(count):
        body = {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.9, "modality": "audio",
                "source": "wav:/data/clip.wav", "offset_s": 0.1 * i, "bundle_id": "kws-demo",
                "bundle_version": "1.0.0", "head_version": 0}
        print(tel.event(body)["seq"], flush=True)
        time.sleep(interval_s)
    print("done", flush=True)
    if then == "close":
        sys.exit(0 if tel.flush(%(settle)s) and tel.close() else 1)
    time.sleep(3600)
""") % {"device": DEVICE, "ack": ACK_TIMEOUT_S, "settle": SETTLE_S}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """Mosquitto as the project runs it: persistent, saving on every change."""
    require_mosquitto()
    with LocalBroker(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "server.db"


@pytest.fixture
def server(broker: LocalBroker, db: Path) -> Iterator[Server]:
    """The server in this process, with its defaults (plain subscriptions, persistent session)."""
    s = Server(ServerConfig(db=str(db), http_port=0, ingest=IngestConfig(host=broker.host, port=broker.port,
                                                                          client_id="fault-server")))
    s.start()
    assert s.wait_subscribed(10.0)
    yield s
    s.stop()


@pytest.fixture
def telemetry(tmp_path: Path, broker: LocalBroker) -> Iterator[Telemetry]:
    """The device's telemetry in this process, with its default reconnect waits."""
    tel = Telemetry(DEVICE, tmp_path / "device" / "outbox.sqlite", broker.host, broker.port,
                    ack_timeout_s=ACK_TIMEOUT_S)
    yield tel
    tel.close(timeout_s=1.0)


class Stream:
    """Puts an event into ``telemetry`` every ``interval_s`` on a thread; ``put``: their seqs."""

    def __init__(self, telemetry: Telemetry, interval_s: float = 0.01) -> None:
        self.put: list[int] = []
        self._telemetry, self._interval_s = telemetry, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            envelope = self._telemetry.event(event_body(i))
            assert envelope is not None
            self.put.append(envelope["seq"])
            i += 1
            self._stop.wait(self._interval_s)

    def wait_for_more(self, n: int) -> None:
        target = len(self.put) + n
        wait_for(lambda: len(self.put) >= target, 30.0)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10.0)
        return list(self.put)


def assert_stored_once(db: Path, observed: list[int]) -> None:
    """Every observed event is in the database, and nothing else (a (device, seq) is a key: once)."""
    stored = stored_seqs(db, DEVICE)
    assert len(stored) == len(set(stored))
    missing, extra = sorted(set(observed) - set(stored)), sorted(set(stored) - set(observed))
    assert (missing, extra) == ([], []), f"{len(missing)} observed events not stored, {len(extra)} unexpected"


def wait_stored(db: Path, observed: list[int]) -> None:
    wait_for(lambda: set(observed) <= set(stored_seqs(db, DEVICE)), SETTLE_S, 0.2)


# -- the broker ---------------------------------------------------------------------------------


def test_broker_stopped_for_longer_than_any_backoff_step(broker, server, telemetry, db) -> None:
    # Prepare: the device streams events to the server
    stream = Stream(telemetry)
    stream.wait_for_more(50)
    # Execute: the broker stops cleanly, stays down, comes back on the same port
    broker.stop()
    time.sleep(OUTAGE_S)
    broker.restart()
    stream.wait_for_more(50)
    put = stream.stop()
    # Assert
    assert telemetry.flush(SETTLE_S)
    assert_stored_once(db, put)


@pytest.mark.parametrize("keep_file", [True, False], ids=["with-its-persistence-file", "without-it"])
def test_broker_killed_mid_stream_and_restarted(broker, server, telemetry, db, keep_file: bool) -> None:
    # Prepare: a stream, and the broker has saved its state once (it does every second)
    stream = Stream(telemetry)
    wait_for(lambda: (broker.workdir / "mosquitto.db").exists(), 10.0)
    stream.wait_for_more(50)
    # Execute: SIGKILL (nothing saved at exit), down for longer than any backoff step, restarted
    # with what it had saved, or with nothing at all (a new machine, a wiped volume)
    broker.kill()
    if not keep_file:
        (broker.workdir / "mosquitto.db").unlink(missing_ok=True)
    time.sleep(OUTAGE_S)
    broker.restart()
    stream.wait_for_more(50)
    put = stream.stop()
    # Assert: what the broker lost (queued for the server, or acknowledged to the device before
    # the server had it) came again from the device's outbox
    assert telemetry.flush(SETTLE_S)
    assert_stored_once(db, put)


# -- the device -----------------------------------------------------------------------------------


def _device(outbox: Path, broker: LocalBroker, count: int, then: str, interval_s: float = 0.01) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", DEVICE_SCRIPT, str(outbox), str(broker.port), str(count),
                             str(interval_s), then], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _read_seqs(proc: subprocess.Popen, until: int | None = None) -> list[int]:
    """Seqs the device printed: ``until`` of them, or (after it ended) all that remain."""
    seqs = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "done":
            break
        seqs.append(int(line))
        if until is not None and len(seqs) >= until:
            break
    return seqs


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def test_device_killed_mid_stream_then_restarted(broker, server, db, tmp_path) -> None:
    # Prepare: the device streams from its own process
    outbox = tmp_path / "device" / "outbox.sqlite"
    first = _device(outbox, broker, 10**6, "hold")
    observed = _read_seqs(first, until=100)
    # Execute: SIGKILL mid-stream; what it printed before dying still counts; then it starts again
    _kill(first)
    observed += _read_seqs(first)
    first.stdout.close()
    second = _device(outbox, broker, 20, "close")
    after = _read_seqs(second)
    assert second.wait(SETTLE_S + 10) == 0
    second.stdout.close()
    # Assert: everything observed before and after the kill is stored once; at most the one event
    # whose print the kill cut short may be stored too, between the two runs
    wait_stored(db, observed + after)
    stored = stored_seqs(db, DEVICE)
    unprinted = sorted(set(stored) - set(observed) - set(after))
    assert all(observed[-1] < seq < after[0] for seq in unprinted) and len(unprinted) <= 1
    assert_stored_once(db, observed + after + unprinted)


def test_device_killed_with_a_backlog_delivers_it_after_restart(broker, server, db, tmp_path) -> None:
    # Prepare: the broker is down; the device observes 200 events into its outbox
    broker.stop()
    outbox = tmp_path / "device" / "outbox.sqlite"
    first = _device(outbox, broker, 200, "hold", interval_s=0.0)
    observed = _read_seqs(first)
    # Execute: SIGKILL the device with its backlog; the broker returns; the device starts again
    _kill(first)
    first.stdout.close()
    broker.restart()
    second = _device(outbox, broker, 0, "close")
    assert second.wait(SETTLE_S + 10) == 0
    second.stdout.close()
    # Assert
    assert len(observed) == 200
    wait_stored(db, observed)
    assert_stored_once(db, observed)


# -- the server -----------------------------------------------------------------------------------


def _server_process(broker: LocalBroker, db: Path, client_id: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """``edgetune server`` as a process; returns it and its base URL once it is subscribed."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "-q", "server", "--broker",
                             f"127.0.0.1:{broker.port}", "--db", str(db), "--http", f"127.0.0.1:{port}",
                             "--client-id", client_id, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _health(url), 30.0, 0.1)
    except AssertionError:
        _kill(proc)
        raise
    return proc, url


def _health(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(url + "/api/health", timeout=2)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def test_server_killed_mid_ingest_then_restarted(broker, telemetry, db) -> None:
    # Prepare: `edgetune server` as a process, its persistent session on the broker
    proc, _ = _server_process(broker, db, "fault-server-proc")
    stream = Stream(telemetry)
    try:
        wait_for(lambda: len(stored_seqs(db, DEVICE)) >= 50, 30.0, 0.1)
        # Execute: SIGKILL mid-ingest, then the same server (id, database) again
        _kill(proc)
        stream.wait_for_more(50)
        proc, _ = _server_process(broker, db, "fault-server-proc")
        stream.wait_for_more(50)
        put = stream.stop()
        # Assert
        assert telemetry.flush(SETTLE_S)
        assert_stored_once(db, put)
    finally:
        stream.stop()
        _kill(proc)


def test_one_of_two_sharing_servers_killed_for_good(broker, telemetry, db) -> None:
    # Prepare: two `edgetune server --shared` instances on one database, splitting the load
    (a, url_a), (b, url_b) = (_server_process(broker, db, f"fault-share-{x}", "--shared") for x in "ab")
    stream = Stream(telemetry, interval_s=0.005)
    try:
        wait_for(lambda: all(_health(u)["counters"]["stored"] >= 20 for u in (url_a, url_b)), 30.0, 0.2)
        # Execute: one instance dies and never returns; the device keeps observing
        _kill(a)
        stream.wait_for_more(200)
        put = stream.stop()
        # Assert: the survivor took the dead one's share and what was in flight to it
        assert telemetry.flush(SETTLE_S)
        assert_stored_once(db, put)
        assert _health(url_b)["counters"]["stored"] > 0
    finally:
        stream.stop()
        _kill(a)
        _kill(b)
