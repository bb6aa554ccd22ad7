"""Telemetry throughput through a real Mosquitto: the device's durable publisher, and server ingest.

Run: ``python benchmarks/bench_telemetry.py`` (about a minute on 2 cores; needs the ``mosquitto``
binary and the ``edge`` + ``server`` extras). It starts its own brokers on free loopback ports
(``edgetune.localbroker.LocalBroker``) and removes them and every file it wrote on exit.

Device side, N = 5,000 ``event`` messages (about 330 bytes each), QoS 1, MQTT v5, one process:

- **edgetune Telemetry, end to end**: ``Telemetry.event`` for each message (validate, take the
  next sequence number and store the message in the SQLite outbox in one transaction: WAL,
  ``synchronous=NORMAL``, so it survives a crash of the process), while the sender thread fsyncs
  the outbox before each batch it hands to paho (so nothing sent can be lost to a power cut) and
  publishes; a message is deleted only when the server (``edgetune server``, a process of its own
  on the same machine, batching its commits) acknowledges that it stored it. The clock
  stops when ``flush()`` sees the outbox empty: every message stored *and* acknowledged.
- **paho, no durability**: a plain paho-mqtt 2.x client publishing the same payloads (encoded
  beforehand, untimed) on the same topic at QoS 1 with the same in-flight window, until every
  PUBACK has arrived. Nothing is written to disk, so a crash or power cut loses what is in flight.

Latency, publish to stored: the device calls ``Telemetry.event`` 1,000 times a second for
``LATENCY_S`` seconds; for each message, the time from that call until the server's
acknowledgement that it stored it reached the device (stored and acknowledged: the round trip).

Recovery: the device streams 200 events a second; the broker is killed (SIGKILL), stays down
``OUTAGE_S`` seconds, and restarts (with its persistence file, then without it); the time from
the crash, and from the restart, to the last event observed during the outage being stored (its
acknowledgement back at the device).

Server side, N = 5,000 events published by a plain paho client:

- **edgetune Server**: ``edgetune.server.service.Server`` (SQLite, synchronous=FULL) with its MQTT
  ingest (validation, what was delivered since the last commit stored in one transaction, then
  PUBACK to the broker and the end-to-end acknowledgement to the device); the clock runs from
  the first publish until the server has stored all N (its
  ``stored`` counter, polled every 5 ms; ``store.stats()`` is checked afterwards).
- **peers**, the same payloads from memory, no MQTT: a bare ``sqlite3`` loop, same file settings
  (WAL, synchronous=FULL) and the same (device, seq) primary key, that ``json.loads`` each payload
  and commits each message on its own (what a store that acknowledges each message only once it
  is durable must do); and the same with ``executemany`` in one transaction (fast, but one fsync
  for everything: nothing could be acknowledged before the end).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from _machine import machine_info  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N = 5000
ROUNDS = 2
#: Seconds of 1,000 msg/s for the latency run; seconds the broker is down in the recovery run.
LATENCY_S = 5.0
OUTAGE_S = 5.0
T0 = 1_795_000_000.0  # a fixed, plausible observation time
#: paho's default in-flight window, and Mosquitto's default MQTT 5 Receive Maximum.
PAHO_DEFAULT_INFLIGHT = 20


def filesystem_of(path: Path) -> str:
    """The mount and file system type holding ``path`` (fsync cost depends on it)."""
    best = ("?", "?")
    try:
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, fstype = line.split()[:3]
            inside = target.startswith(mount.rstrip("/") + "/") or target == mount
            if inside and (len(mount) >= len(best[0]) or best[0] == "?"):
                best = (mount, f"{fstype} on {dev}")
    except OSError:
        pass
    return f"{best[1]} (mounted at {best[0]})"


def event_body(i: int) -> dict:
    """An ``event`` body as the device sends it (DetectionEvent.body)."""
    return {"pipeline": "audio", "head": "keywords", "label": "yes" if i % 2 else "no", "score": 0.9312,
            "modality": "audio",
            "source": "mic:hw:1,0", "offset_s": round(0.1 * i, 4), "bundle_id": "kws-demo",
            "bundle_version": "1.0.0", "head_version": 3, "latency_ms": 1.234}


class PahoPublisher:
    """A plain paho-mqtt 2.x client (MQTT v5) publishing at QoS 1; counts PUBACKs."""

    def __init__(self, host: str, port: int, client_id: str, window: int) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.acked = 0
        self.target = 0
        self.done = threading.Event()
        self.connected = threading.Event()
        self.window = window
        self.receive_maximum: int | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(window)  # paho allows this only before connecting
        self.client.max_queued_messages_set(0)  # unbounded: everything is handed over at once
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError(f"paho could not connect to {host}:{port}")
        if self.receive_maximum is not None and window > self.receive_maximum:
            raise RuntimeError(f"in-flight window {window} exceeds the broker's Receive Maximum {self.receive_maximum}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.receive_maximum = getattr(properties, "ReceiveMaximum", None)
        self.connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acked += 1
        if self.acked >= self.target:
            self.done.set()

    def publish_all(self, topic: str, payloads: list[bytes], timeout_s: float = 120.0) -> tuple[float, float]:
        """Publish every payload; (seconds until the last publish() returned, until the last PUBACK)."""
        self.acked, self.target = 0, len(payloads)
        self.done.clear()
        t0 = time.perf_counter()
        for payload in payloads:
            info = self.client.publish(topic, payload, qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {self._mqtt.error_string(info.rc)}")
        t_handed = time.perf_counter() - t0
        if not self.done.wait(timeout_s):
            raise RuntimeError(f"only {self.acked} of {len(payloads)} PUBACKs within {timeout_s} s")
        return t_handed, time.perf_counter() - t0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def payloads_for(device: str, n: int) -> list[bytes]:
    from edgetune.contract import messages

    return [messages.encode(messages.make(device, seq, T0 + 0.1 * seq, "event", event_body(seq)))
            for seq in range(1, n + 1)]


def bench_device(tmp: Path, n: int) -> dict[str, list[dict]]:
    """Telemetry vs plain paho, alternating, ROUNDS rounds after a short warm-up of each."""
    from edgetune.contract import topics
    from edgetune.edge.telemetry import Outbox, Telemetry

    from edgetune.localbroker import LocalBroker

    results: dict[str, list[dict]] = {"edgetune Telemetry": [], "paho, no durability": [],
                                      "(edgetune Outbox.put only)": []}

    def run_outbox(tag: str, count: int) -> dict:
        """The durable write alone, no network: where the Telemetry row's time goes."""
        outbox = Outbox(tmp / f"outbox-only-{tag}.sqlite", f"bench-{tag}", first_seq=1)
        try:
            bodies = [event_body(i) for i in range(count)]
            t0 = time.perf_counter()
            for i, body in enumerate(bodies):
                outbox.put("event", body, T0 + 0.1 * i)
            t_all = time.perf_counter() - t0
        finally:
            outbox.close()
        return {"handed_s": t_all, "total_s": t_all, "window": "-"}

    with LocalBroker() as broker, server_process(broker, tmp / "device-bench-server.db"):
        host, port = broker.address

        def run_edgetune(tag: str, count: int) -> dict:
            device = f"bench-{tag}"
            telemetry = Telemetry(device, tmp / f"outbox-{tag}.sqlite", host, port,
                                  status_extra={"bundle_id": "kws-demo", "bundle_version": "1.0.0"})
            try:
                if not telemetry.wait_connected(10):
                    raise RuntimeError("Telemetry did not connect")
                bodies = [event_body(i) for i in range(count)]
                t0 = time.perf_counter()
                for i, body in enumerate(bodies):
                    if telemetry.event(body, observed_at=T0 + 0.1 * i) is None:
                        raise RuntimeError("Telemetry refused a message")
                t_put = time.perf_counter() - t0
                if not telemetry.flush(timeout_s=120):
                    raise RuntimeError(f"Telemetry did not flush: {telemetry.counters}")
                t_all = time.perf_counter() - t0
                counters = telemetry.counters
                if counters.acked != count or counters.pending:
                    raise RuntimeError(f"Telemetry counters after flush: {counters}")
                window = telemetry._link._window
            finally:
                telemetry.close()
            return {"handed_s": t_put, "total_s": t_all, "window": window}

        def run_paho(tag: str, count: int) -> dict:
            device = f"bench-{tag}"
            payloads = payloads_for(device, count)
            pub = PahoPublisher(host, port, f"bench-paho-{tag}", window)
            try:
                t_handed, t_all = pub.publish_all(topics.device_topic(device, "events"), payloads)
            finally:
                pub.close()
            return {"handed_s": t_handed, "total_s": t_all, "window": pub.window}

        # The peer gets the in-flight window edgetune's link settled on (its INFLIGHT_WINDOW, lowered
        # to the broker's MQTT 5 Receive Maximum).
        window = run_edgetune("warm-e", 300)["window"]
        run_paho("warm-p", 300)
        runners = {"edgetune Telemetry": run_edgetune, "paho, no durability": run_paho,
                   "(edgetune Outbox.put only)": run_outbox}
        for r in range(ROUNDS):
            names = list(runners) if r % 2 == 0 else list(runners)[::-1]
            for name in names:
                results[name].append(runners[name](f"r{r}-{list(runners).index(name)}", n))
    return results


def bench_server(tmp: Path, n: int) -> dict[str, list[dict]]:
    """edgetune Server ingest vs bare sqlite3 inserts of the same payloads."""
    from edgetune.contract import messages, topics
    from edgetune.server.ingest import IngestConfig
    from edgetune.server.service import Server, ServerConfig
    from edgetune.server.store import Store

    from edgetune.localbroker import LocalBroker

    results: dict[str, list[dict]] = {"edgetune Server (MQTT ingest)": [], "sqlite3, commit per message": [],
                                      "sqlite3, executemany, 1 commit": [], "(edgetune decode + Store.add only)": []}

    def run_server(tag: str, count: int) -> dict:
        device = f"bench-{tag}"
        payloads = payloads_for(device, count)
        with LocalBroker() as broker:
            host, port = broker.address
            server = Server(ServerConfig(db=str(tmp / f"server-{tag}.db"), http_port=0,
                                         ingest=IngestConfig(host=host, port=port, client_id=f"bench-server-{tag}")))
            server.start()
            pub = None
            try:
                if not server.wait_subscribed(10):
                    raise RuntimeError("the server did not subscribe")
                pub = PahoPublisher(host, port, f"bench-pub-{tag}", PAHO_DEFAULT_INFLIGHT)
                topic = topics.device_topic(device, "events")
                t0 = time.perf_counter()
                for payload in payloads:
                    pub.client.publish(topic, payload, qos=1)
                deadline = time.monotonic() + 120
                while server.counters.stored < count:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"server stored {server.counters.stored} of {count} in 120 s")
                    time.sleep(0.005)
                t_all = time.perf_counter() - t0
                stats = server.store.stats()
                if stats["stored"].get("event") != count:
                    raise RuntimeError(f"store.stats() after the run: {stats['stored']}")
                counters = server.counters
            finally:
                if pub is not None:
                    pub.close()
                server.stop()
        return {"total_s": t_all, "rejected": counters.rejected_total, "duplicates": counters.duplicates}

    def sqlite_db(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE messages (device TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, "
                     "observed_at REAL NOT NULL, received_at REAL NOT NULL, topic TEXT NOT NULL, "
                     "body TEXT NOT NULL, PRIMARY KEY (device, seq))")
        return conn

    insert = ("INSERT INTO messages (device, seq, type, observed_at, received_at, topic, body) "
              "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING")

    def row(payload: bytes, topic: str) -> tuple:
        msg = json.loads(payload)
        return (msg["device"], msg["seq"], msg["type"], msg["observed_at"], time.time(), topic,
                json.dumps(msg["body"], sort_keys=True, separators=(",", ":")))

    def run_sqlite_each(tag: str, count: int) -> dict:
        device = f"bench-{tag}"
        payloads = payloads_for(device, count)
        topic = topics.device_topic(device, "events")
        conn = sqlite_db(tmp / f"bare-{tag}.db")
        try:
            t0 = time.perf_counter()
            for payload in payloads:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(insert, row(payload, topic))
                conn.execute("COMMIT")
            t_all = time.perf_counter() - t0
        finally:
            conn.close()
        return {"total_s": t_all}

    def run_sqlite_many(tag: str, count: int) -> dict:
        device = f"bench-{tag}"
        payloads = payloads_for(device, count)
        topic = topics.device_topic(device, "events")
        conn = sqlite_db(tmp / f"many-{tag}.db")
        try:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, (row(p, topic) for p in payloads))
            conn.execute("COMMIT")
            t_all = time.perf_counter() - t0
        finally:
            conn.close()
        return {"total_s": t_all}

    def run_store_only(tag: str, count: int) -> dict:
        """The server's validation and store alone, no MQTT: where the Server row's time goes."""
        device = f"bench-{tag}"
        payloads = payloads_for(device, count)
        topic = topics.device_topic(device, "events")
        store = Store.open(str(tmp / f"store-only-{tag}.db"))
        try:
            t0 = time.perf_counter()
            for payload in payloads:
                store.add(messages.decode_for_topic(device, "events", payload), topic, received_at=time.time())
            t_all = time.perf_counter() - t0
        finally:
            store.close()
        return {"total_s": t_all}

    runners = {"edgetune Server (MQTT ingest)": run_server, "sqlite3, commit per message": run_sqlite_each,
               "sqlite3, executemany, 1 commit": run_sqlite_many, "(edgetune decode + Store.add only)": run_store_only}
    for name, fn in runners.items():
        fn(f"warm-{len(name)}", 300)
    for r in range(ROUNDS):
        names = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in names:
            results[name].append(runners[name](f"r{r}-{list(runners).index(name)}", n))
    return results


@contextmanager
def server_process(broker, db: Path):
    """``edgetune server`` as a process of its own on ``broker`` (as in production, where it runs on
    another machine): the device's process pays only for the device's work."""
    import subprocess
    import urllib.request

    from edgetune.localbroker import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "-q", "server", "--broker",
                             f"{broker.host}:{broker.port}", "--db", str(db), "--http", f"127.0.0.1:{port}",
                             "--client-id", f"bench-server-{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:  # /api/health answers 200 once the server is subscribed
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("edgetune server did not come up")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(20)


def record_acks(telemetry) -> dict[int, float]:
    """seq -> time.time() when the server's acknowledgement of it reached the device (stored, and
    the device told so): wraps this telemetry's outbox's ``ack_ranges``."""
    outbox = telemetry._link._outbox
    real = outbox.ack_ranges
    acked: dict[int, float] = {}

    def ack_ranges(ranges):
        now = time.time()
        for first, last in ranges:
            for seq in range(first, last + 1):
                acked.setdefault(seq, now)
        return real(ranges)

    outbox.ack_ranges = ack_ranges  # an instance attribute: what the link calls
    return acked


def bench_latency(tmp: Path) -> dict:
    """Publish-to-stored latency at 1,000 msg/s (see the module docstring)."""
    from edgetune.edge.telemetry import Telemetry

    from edgetune.localbroker import LocalBroker

    rate, n = 1000, int(1000 * LATENCY_S)
    with LocalBroker() as broker, server_process(broker, tmp / "latency.db"):
        telemetry = Telemetry("bench-latency", tmp / "outbox-latency.sqlite", broker.host, broker.port)
        acked = record_acks(telemetry)
        try:
            if not telemetry.wait_connected(10):
                raise RuntimeError("Telemetry did not connect")
            put: dict[int, float] = {}
            t0 = time.perf_counter()
            for i in range(n):
                target = t0 + i / rate
                while (ahead := target - time.perf_counter()) > 0:
                    time.sleep(ahead)
                at = time.time()
                put[telemetry.event(event_body(i), observed_at=at)["seq"]] = at
            achieved = n / (time.perf_counter() - t0)
            if not telemetry.flush(60):
                raise RuntimeError(f"Telemetry did not flush: {telemetry.counters}")
        finally:
            telemetry.close()
    lat_ms = sorted(1000 * (acked[seq] - at) for seq, at in put.items())
    pick = lambda q: lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))]  # noqa: E731
    return {"n": n, "rate": achieved, "p50": pick(0.50), "p99": pick(0.99), "max": lat_ms[-1]}


def bench_recovery(tmp: Path, keep_file: bool) -> dict:
    """Broker SIGKILL'd mid-stream, down OUTAGE_S, restarted: time to the last backlogged event stored."""
    from edgetune.edge.telemetry import Telemetry

    from edgetune.localbroker import LocalBroker

    tag = "kept" if keep_file else "wiped"
    db = tmp / f"recovery-{tag}.db"
    with LocalBroker(tmp / f"broker-{tag}", persistence=True) as broker, server_process(broker, db):
        telemetry = Telemetry(f"bench-recovery-{tag}", tmp / f"outbox-recovery-{tag}.sqlite", broker.host, broker.port)
        acked = record_acks(telemetry)
        stop = threading.Event()
        put: list[int] = []

        def stream() -> None:
            i = 0
            while not stop.is_set():
                put.append(telemetry.event(event_body(i))["seq"])
                i += 1
                stop.wait(0.005)

        streamer = threading.Thread(target=stream, daemon=True)
        try:
            if not telemetry.wait_connected(10):
                raise RuntimeError("Telemetry did not connect")
            streamer.start()
            time.sleep(3.0)  # the broker saves its state every second: let it have saved some
            crash = time.time()
            broker.kill()
            if not keep_file:
                (broker.workdir / "mosquitto.db").unlink(missing_ok=True)
            time.sleep(OUTAGE_S)
            backlog = list(put)
            restart = time.time()
            broker.restart()
            deadline = time.monotonic() + 120
            while not all(seq in acked for seq in backlog):
                if time.monotonic() > deadline:
                    raise RuntimeError("the backlog was not stored within 120 s")
                time.sleep(0.01)
            last = max(acked[seq] for seq in backlog)
            stop.set()
            streamer.join(5)
            if not telemetry.flush(60):
                raise RuntimeError(f"Telemetry did not flush: {telemetry.counters}")
        finally:
            stop.set()
            telemetry.close()
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT COUNT(*) FROM messages WHERE type = 'event'").fetchone()[0]
    conn.close()
    if stored != len(put):
        raise RuntimeError(f"{stored} stored of {len(put)} observed")
    return {"from_crash_s": last - crash, "from_restart_s": last - restart, "backlog": len(backlog),
            "observed": len(put), "stored": stored}


def main() -> None:
    # The server warns that it has no token, paho that the killed broker reset its socket: not the point here.
    logging.disable(logging.CRITICAL)
    import paho.mqtt

    from edgetune.localbroker import find_mosquitto

    mosquitto = find_mosquitto()
    if mosquitto is None:
        sys.exit("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    import subprocess

    mosq_version = subprocess.run([mosquitto, "-h"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    tmp = Path(tempfile.mkdtemp(prefix="edgetune-bench-telemetry-"))
    try:
        print(f"Telemetry throughput, N = {N} event messages, QoS 1, MQTT v5, broker and clients on this machine; "
              f"{ROUNDS} rounds each (alternating), medians")
        print(machine_info(**{"paho-mqtt": paho.mqtt.__version__, "sqlite": sqlite3.sqlite_version,
                              "broker": mosq_version.replace("mosquitto version ", "mosquitto ")}))
        print(f"outbox and databases on: {filesystem_of(tmp)}")
        print(f"payload: {len(payloads_for('bench-r0-e', 1)[0])} bytes per message")
        print()

        device = bench_device(tmp, N)
        print("Device -> server (edgetune: until the server acknowledged every message as stored; "
              "paho: until every PUBACK)")
        header = (f"{'publisher':<27} {'msg/s':>8} {'total s':>8} {'handed over s':>13} {'in-flight window':>16}"
                  "  durable")
        print(header)
        print("-" * len(header))
        rates = {}
        for name, runs in device.items():
            total = statistics.median(r["total_s"] for r in runs)
            handed = statistics.median(r["handed_s"] for r in runs)
            rates[name] = N / total
            durable = {"edgetune Telemetry": "yes: fsync per batch, deleted on the server's acknowledgement",
                       "paho, no durability": "no: in memory only",
                       "(edgetune Outbox.put only)": "the outbox write alone, no network"}[name]
            print(f"{name:<27} {N / total:>8.0f} {total:>8.3f} {handed:>13.3f} {runs[0]['window']:>16}  {durable}")
        e, p = rates["edgetune Telemetry"], rates["paho, no durability"]
        print(f"ratio edgetune / paho: {e / p:.2f}x the throughput (paho is {p / e:.1f}x faster)")
        print("(handed over: when the last Telemetry.event() / paho publish() call returned; rows in parentheses are"
              " parts of edgetune timed alone, to show where the time goes)")
        print()

        lat = bench_latency(tmp)
        print(f"Publish to stored, {lat['n']} events at {lat['rate']:.0f} msg/s (Telemetry.event -> the server's "
              "acknowledgement back at the device)")
        print(f"p50 {lat['p50']:.1f} ms   p99 {lat['p99']:.1f} ms   max {lat['max']:.1f} ms")
        print()

        print(f"Broker SIGKILL'd mid-stream (200 events/s), down {OUTAGE_S:.0f} s, restarted: the last event "
              "observed during the outage stored after")
        header = f"{'restarted':<30} {'from crash s':>12} {'from restart s':>14} {'backlog':>8}  observed / stored"
        print(header)
        print("-" * len(header))
        for keep in (True, False):
            rec = bench_recovery(tmp, keep)
            label = "with its persistence file" if keep else "without it (wiped)"
            print(f"{label:<30} {rec['from_crash_s']:>12.2f} {rec['from_restart_s']:>14.2f} {rec['backlog']:>8}"
                  f"  {rec['observed']} / {rec['stored']}")
        print()

        server = bench_server(tmp, N)
        print("Server ingest (until all N are stored)")
        header = f"{'store':<35} {'msg/s':>8} {'total s':>8}  what it does per message"
        print(header)
        print("-" * len(header))
        what = {
            "edgetune Server (MQTT ingest)": "MQTT delivery, validate, store in batches (1 commit per batch), "
                                             "PUBACK + acknowledgement to the device",
            "sqlite3, commit per message": "json.loads, INSERT, COMMIT (fsync); no MQTT, no validation",
            "sqlite3, executemany, 1 commit": "json.loads, INSERT; one COMMIT for all N (not per-message durable)",
            "(edgetune decode + Store.add only)": "the server's validate + transaction + commit, from memory, no MQTT",
        }
        srates = {}
        for name, runs in server.items():
            total = statistics.median(r["total_s"] for r in runs)
            srates[name] = N / total
            print(f"{name:<35} {N / total:>8.0f} {total:>8.3f}  {what[name]}")
        s = srates["edgetune Server (MQTT ingest)"]
        print(f"ratio edgetune Server / sqlite3 commit per message: {s / srates['sqlite3, commit per message']:.2f}x; "
              f"/ executemany: {s / srates['sqlite3, executemany, 1 commit']:.3f}x")
        rejected = sum(r.get("rejected", 0) for r in server["edgetune Server (MQTT ingest)"])
        print("(the plain paho publisher runs in this process too; it hands all N to the broker in a fraction of the"
              " total)")
        print(f"check: server rejected {rejected} messages; store.stats() showed all {N} events stored each round")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
