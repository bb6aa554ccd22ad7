"""The locked broker of deploy/broker/, attacked and used as shipped.

Mosquitto runs the shipped ``mosquitto.conf`` and ``acl``, with certificates and passwords made
by the shipped scripts (``make-certs.sh``, ``make-users.sh``) into the test's folder; the only
changes to the config are the folder it names, the port (a free one, on loopback) and the user
it runs as. Each attack is checked where it matters: the refused message never reaches a
subscriber or the server. The legit path (a device's telemetry and the server, both over TLS
with their own credentials) is checked end to end.
"""

from __future__ import annotations

import gc
import getpass
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.broker import require_mosquitto
from support.telemetry import T0, make_event, make_status, wait_for

from edgetune.contract import messages, topics
from edgetune.localbroker import find_mosquitto, free_port

pytestmark = pytest.mark.broker

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "broker"
SERVER_USER = "edgetune-server"
DEVICE_A, DEVICE_B = "jetson-a", "jetson-b"
SHIPPED_DIR = "/etc/mosquitto/edgetune/"
SHIPPED_PERSISTENCE = "/var/lib/mosquitto/"


def _run(*cmd: str | Path) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}): {done.stderr}"


class LockedBroker:
    """The shipped config, set up by the shipped scripts in ``root``, on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, root: Path) -> None:
        self.etc = root / "etc"
        _run(DEPLOY / "make-certs.sh", self.etc)
        _run(DEPLOY / "make-users.sh", self.etc, DEVICE_A, DEVICE_B)
        shutil.copy(DEPLOY / "acl", self.etc / "acl")
        self.other_ca = root / "other"  # a CA the broker's certificate does not chain to
        _run(DEPLOY / "make-certs.sh", self.other_ca)
        self.port = free_port()
        shipped = (DEPLOY / "mosquitto.conf").read_text()
        assert SHIPPED_DIR in shipped and SHIPPED_PERSISTENCE in shipped and "\nlistener 8883\n" in shipped
        conf = (shipped.replace(SHIPPED_DIR, f"{self.etc}/").replace(SHIPPED_PERSISTENCE, f"{root}/")
                .replace("\nlistener 8883\n", f"\nlistener {self.port} {self.host}\n"))
        self.conf = root / "mosquitto.conf"
        # Started as root, mosquitto would drop to its own user, who cannot read the test's files.
        self.conf.write_text(conf + f"user {getpass.getuser()}\n")
        self.log = root / "mosquitto.log"
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen([find_mosquitto() or "mosquitto", "-c", str(self.conf)],
                                          stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.02)

    @property
    def ca(self) -> Path:
        return self.etc / "ca.crt"

    def password(self, user: str) -> str:
        return (self.etc / "secrets" / f"{user}.password").read_text().strip()

    def password_file(self, user: str) -> Path:
        return self.etc / "secrets" / f"{user}.password"

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LockedBroker]:
    require_mosquitto()
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl and mosquitto_passwd are needed to set up the locked broker")
    broker = LockedBroker(tmp_path_factory.mktemp("locked"))
    yield broker
    broker.stop()


class Client:
    """A paho MQTT v5 client that records what it receives and the result of each publish."""

    def __init__(self, broker: LockedBroker, user: str | None, password: str | None = None,
                 ca: Path | None = None, tls: bool = True, client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=mqtt.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else broker.password(user))
        if tls:
            self.client.tls_set(ca_certs=str(ca or broker.ca))
        self.received: list[tuple[str, bytes, bool]] = []
        self.connack: Any = None
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload, bool(m.retain)))
        self.broker = broker

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = reason_code
        self.connected.set()

    def connect(self) -> Any:
        """Connect and wait for the CONNACK; its reason code (``is_failure`` when refused)."""
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.connected.wait(5.0), "no CONNACK within 5 s"
        return self.connack

    def subscribe(self, *filters: str) -> list[Any]:
        """Subscribe with QoS 1 and wait for the SUBACK; its reason codes."""
        done, codes = threading.Event(), []

        def on_subscribe(client: Any, userdata: Any, mid: int, reason_codes: list[Any], properties: Any) -> None:
            codes.extend(reason_codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe([(f, 1) for f in filters])
        assert done.wait(5.0), "no SUBACK within 5 s"
        return codes

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Publish with QoS 1, wait for the PUBACK; its reason code (< 128 success, e.g. 16 "no matching
        subscribers"; 135 "not authorized")."""
        codes: list[int] = []
        self.client.on_publish = lambda c, u, mid, rc, props: codes.append(rc.value)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5.0)
        assert info.is_published(), f"no PUBACK for {topic}"
        wait_for(lambda: codes)
        return codes[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(locked: LockedBroker) -> Iterator[Any]:
    made: list[Client] = []

    def factory(user: str | None, **kwargs: Any) -> Client:
        c = Client(locked, user, **kwargs)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


def _server_sees(clients: Any, *filters: str) -> Client:
    watcher = clients(SERVER_USER)
    assert not watcher.connect().is_failure
    assert not any(rc.is_failure for rc in watcher.subscribe(*filters))
    return watcher


def _marker(client: Client, device: str, seq: int, watcher: Client) -> None:
    """Publish a legit event of ``device`` and wait until the watcher has it: what was sent before
    it on the same connection has been delivered by then, or never will be."""
    msg = make_event(device, seq=seq)
    assert client.publish(topics.device_topic(device, "events"), messages.encode(msg)) < 128
    wait_for(lambda: any(t.endswith(f"{device}/events") and json.loads(p)["seq"] == seq
                         for t, p, _ in watcher.received))


# -- refused at the door --------------------------------------------------------------------------


def test_an_anonymous_client_is_refused(clients):
    assert str(clients(None).connect()) == "Not authorized"


def test_a_wrong_password_is_refused(clients):
    assert str(clients(DEVICE_A, password="guess").connect()) in ("Bad user name or password", "Not authorized")


def test_one_devices_password_does_not_open_another_devices_account(locked, clients):
    assert clients(DEVICE_B, password=locked.password(DEVICE_A)).connect().is_failure


def test_plain_tcp_to_the_tls_listener_gets_no_session(locked, clients):
    # Prepare
    c = clients(DEVICE_A, tls=False)

    # Execute: the TCP connection opens, the MQTT CONNECT in clear text is dropped
    c.client.connect(locked.host, locked.port)
    c.client.loop_start()

    # Assert
    assert c.disconnected.wait(5.0), "the broker kept a plain TCP connection open on its TLS listener"
    assert c.connack is None


def test_tls_with_a_wrong_ca_is_refused(locked, clients):
    # Prepare
    c = clients(DEVICE_A, ca=locked.other_ca / "ca.crt")

    # Execute
    with warnings.catch_warnings():
        # paho does not close its socket when the handshake fails; that socket's ResourceWarning
        # is paho's, not what this test is about.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            c.client.connect(locked.host, locked.port)
        except ssl.SSLCertVerificationError as exc:
            error = str(exc)
        else:
            error = "connected"
        gc.collect()

    # Assert
    assert "certificate verify failed" in error


# -- a logged-in device cannot act as another, or as the server ----------------------------------


def test_device_a_cannot_publish_as_device_b(clients):
    # Prepare
    watcher = _server_sees(clients, "edgetune/v1/+/events", "edgetune/v1/+/status")
    a = clients(DEVICE_A)
    assert not a.connect().is_failure

    # Execute: B's events and a retained fake "offline" status for B, from A's account
    spoofed = make_event(DEVICE_B, seq=1)
    event_rc = a.publish(topics.device_topic(DEVICE_B, "events"), messages.encode(spoofed))
    status_rc = a.publish(topics.device_topic(DEVICE_B, "status"),
                          messages.encode(make_status(DEVICE_B, seq=2, state="offline")), retain=True)
    _marker(a, DEVICE_A, 100, watcher)

    # Assert
    assert (event_rc, status_rc) == (135, 135)  # MQTT v5 "Not authorized"
    assert [t for t, _, _ in watcher.received if DEVICE_B in t] == []
    late = _server_sees(clients, topics.device_topic(DEVICE_B, "status"))  # no retained fake status either
    _marker(a, DEVICE_A, 101, watcher)
    assert late.received == []


def test_a_device_cannot_publish_the_fleet_head_or_commands_or_acks(clients):
    # Prepare: the server publishes the real fleet head (retained)
    server = clients(SERVER_USER)
    assert not server.connect().is_failure
    assert server.publish(topics.FLEET_HEAD, b"real fleet head", retain=True) < 128
    a = clients(DEVICE_A)
    assert not a.connect().is_failure

    # Execute
    codes = [a.publish(topics.FLEET_HEAD, b"fake fleet head", retain=True),
             a.publish(f"{topics.PREFIX}/{DEVICE_B}/cmd", b"{}"),
             a.publish(f"{topics.PREFIX}/{DEVICE_A}/cmd", b"{}"),
             a.publish(f"{topics.PREFIX}/{DEVICE_B}/ack", b"{}")]

    # Assert: a device subscribing now gets the server's retained head, and nothing else arrives
    b = clients(DEVICE_B)
    assert not b.connect().is_failure
    assert not any(rc.is_failure for rc in b.subscribe(topics.FLEET_HEAD, f"{topics.PREFIX}/{DEVICE_B}/cmd",
                                                       f"{topics.PREFIX}/{DEVICE_B}/ack"))
    assert server.publish(f"{topics.PREFIX}/{DEVICE_B}/cmd", b"real cmd") < 128
    wait_for(lambda: any(p == b"real cmd" for _, p, _ in b.received))
    assert codes == [135, 135, 135, 135]
    assert sorted(p for _, p, _ in b.received) == [b"real cmd", b"real fleet head"]


def test_a_device_reads_nothing_of_another_device(clients):
    # Prepare: A subscribes to everything it might want to spy on
    a = clients(DEVICE_A)
    assert not a.connect().is_failure
    a.subscribe("#", f"{topics.PREFIX}/{DEVICE_B}/cmd", f"{topics.PREFIX}/+/events")
    server = clients(SERVER_USER)
    assert not server.connect().is_failure
    b = clients(DEVICE_B)
    assert not b.connect().is_failure
    watcher = _server_sees(clients, "edgetune/v1/+/events")

    # Execute
    assert server.publish(f"{topics.PREFIX}/{DEVICE_B}/cmd", b"for b only") < 128
    assert server.publish(f"{topics.PREFIX}/{DEVICE_A}/cmd", b"for a") < 128
    _marker(b, DEVICE_B, 200, watcher)

    # Assert: A got its own cmd (and maybe the retained fleet head), nothing of B's
    wait_for(lambda: any(p == b"for a" for _, p, _ in a.received))
    assert [t for t, _, _ in a.received if DEVICE_B in t] == []


# -- the legit path, end to end over TLS ---------------------------------------------------------


def test_a_device_and_the_server_work_end_to_end_over_tls(locked, clients, tmp_path):
    from edgetune.edge.config import MqttConfig
    from edgetune.edge.telemetry import Telemetry
    from edgetune.server.ingest import IngestConfig
    from edgetune.server.service import Server, ServerConfig

    # Prepare: the device's [mqtt] section and the server's options, as a user would write them
    mqtt_cfg = MqttConfig(host=locked.host, port=locked.port, username=DEVICE_A,
                          password_file=locked.password_file(DEVICE_A), tls={"ca_file": str(locked.ca)})
    ingest = IngestConfig(host=locked.host, port=locked.port, client_id="locked-server", username=SERVER_USER,
                          password=locked.password(SERVER_USER), tls_ca_file=str(locked.ca))
    server = Server(ServerConfig(db=str(tmp_path / "server.db"), http_port=0, ingest=ingest))
    server.start()
    try:
        assert server.wait_subscribed(10.0), "the server did not subscribe over TLS"
        tel = Telemetry(DEVICE_A, tmp_path / "state" / "outbox.sqlite", mqtt_cfg.host, mqtt_cfg.port,
                        username=mqtt_cfg.username, password=mqtt_cfg.read_password(), tls=mqtt_cfg.tls)
        spoofer = clients(DEVICE_A)  # A's credentials, trying to speak for B while A's device streams
        assert not spoofer.connect().is_failure
        try:
            # Execute
            assert spoofer.publish(topics.device_topic(DEVICE_B, "events"),
                                   messages.encode(make_event(DEVICE_B, seq=1))) == 135
            assert spoofer.publish(topics.device_topic(DEVICE_B, "status"), messages.encode(
                make_status(DEVICE_B, seq=2, state="offline")), retain=True) == 135
            for i in range(5):
                tel.event({"pipeline": "audio", "head": "keywords", "label": f"word{i}", "score": 0.9,
                           "modality": "audio", "source": "wav:clip.wav", "offset_s": float(i),
                           "bundle_id": "kws", "bundle_version": "1.0.0", "head_version": 1}, observed_at=T0 + i)

            # Assert: stored, and the outbox empties (the server's acknowledgements reach the device)
            wait_for(lambda: len(server.store.events(device=DEVICE_A, limit=10)) == 5, timeout_s=10.0)
            assert tel.flush(10.0), "the device's outbox did not empty"
        finally:
            tel.close()
        assert sorted(e["body"]["label"] for e in server.store.events(device=DEVICE_A, limit=10)) == \
            [f"word{i}" for i in range(5)]
        assert server.counters.rejected_total == 0
        assert server.store.device(DEVICE_B) is None, "the server stored what A sent as B"
    finally:
        server.stop()


def test_the_server_cli_takes_broker_credentials_and_tls(locked):
    import argparse

    from edgetune.errors import UsageError
    from edgetune.server import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["server", "--mqtt-username", SERVER_USER, "--mqtt-password-file",
                              str(locked.password_file(SERVER_USER)), "--mqtt-ca-file", str(locked.ca)])
    assert cli.read_password_file(args.mqtt_password_file) == locked.password(SERVER_USER)
    assert (args.mqtt_username, args.mqtt_ca_file) == (SERVER_USER, str(locked.ca))
    with pytest.raises(UsageError, match="--mqtt-password-file .* cannot be read"):
        cli.read_password_file(str(locked.etc / "missing.password"))


# -- the demo's broker: the same scheme -----------------------------------------------------------


def test_the_demo_broker_uses_the_shipped_acl():
    from edgetune.localbroker import ACL_RULES

    shipped = [line.strip() for line in (DEPLOY / "acl").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert shipped == list(ACL_RULES)


def test_the_demo_broker_is_locked_like_the_shipped_one(tmp_path):
    import paho.mqtt.client as mqtt

    from edgetune.localbroker import SERVER_USER as DEMO_SERVER_USER
    from edgetune.localbroker import LocalBroker

    require_mosquitto()
    with LocalBroker(tmp_path / "broker", devices=[DEVICE_A, DEVICE_B]) as broker:
        def connect(user: str | None, password: str | None = None) -> tuple[Any, Any]:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            if user is not None:
                client.username_pw_set(user, password if password is not None else broker.password(user))
            got: list[Any] = []
            client.on_connect = lambda c, u, f, rc, p: got.append(rc)
            client.connect(broker.host, broker.port)
            client.loop_start()
            wait_for(lambda: got)
            return client, got[0]

        opened: list[Any] = []
        try:
            # anonymous and wrong passwords refused
            for user, password in ((None, None), (DEVICE_A, "guess"), (DEVICE_B, broker.password(DEVICE_A))):
                client, rc = connect(user, password)
                opened.append(client)
                assert rc.is_failure, f"{user!r} got in"

            # the server sees A's own event, not the one A sent as B
            server, rc = connect(DEMO_SERVER_USER)
            opened.append(server)
            assert not rc.is_failure
            seen: list[str] = []
            subscribed: list[Any] = []
            server.on_message = lambda c, u, m: seen.append(m.topic)
            server.on_subscribe = lambda c, u, mid, rcs, p: subscribed.extend(rcs)
            server.subscribe("edgetune/v1/+/events", qos=1)
            wait_for(lambda: subscribed)
            a, rc = connect(DEVICE_A)
            opened.append(a)
            assert not rc.is_failure
            a.publish(topics.device_topic(DEVICE_B, "events"), b"spoof", qos=1).wait_for_publish(5.0)
            a.publish(topics.device_topic(DEVICE_A, "events"), b"own", qos=1).wait_for_publish(5.0)
            wait_for(lambda: seen)
            assert seen == [topics.device_topic(DEVICE_A, "events")]
            assert broker.password_file(DEVICE_A).read_text().strip() == broker.password(DEVICE_A)
        finally:
            for client in opened:
                client.disconnect()
                client.loop_stop()
