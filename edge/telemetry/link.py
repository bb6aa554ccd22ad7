"""The MQTT link under :class:`~.publisher.Telemetry`: paho, the sender thread, PUBACK bookkeeping.

The :class:`~.outbox.Outbox` is the source of truth. On each (re)connect the link sends the
retained ``online`` status, then every pending message in sequence order at QoS 1, keeping at
most a window of them unacknowledged; a message leaves the outbox only on its PUBACK.

Threads: paho's network thread (``loop_start``) runs the callbacks; a sender thread of ours
hands messages to paho. The callbacks take only this object's condition lock, and no lock of
ours is held while calling paho, except that each publish and the recording of its message id
happen under paho's own outgoing-message lock, the lock paho holds while it reports a PUBACK;
so a PUBACK never arrives for a message id not yet recorded. Lock order: paho's lock, then
``_cond``, then the outbox's lock.

Status and the last will: before each connection attempt two sequence numbers are reserved,
``n`` for the ``online`` status sent after CONNACK and ``n + 1`` for the last will (``offline``,
retained) that the broker publishes if the device vanishes; so among one device's status
messages a higher ``seq`` is always the later state. A will's ``observed_at`` is the time of the
connection attempt, the last time the device knew anything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

from edgetune.errors import UsageError, missing_extra

from edgetune.contract import messages
from edgetune.contract.topics import device_topic
from .outbox import Outbox, OutboxError

if TYPE_CHECKING:
    from ..config import TlsConfig

logger = logging.getLogger(__name__)

#: Messages handed to paho and not yet acknowledged, at most (paho's in-flight window too).
#: 100 rather than paho's 20: measured 20k vs 17k msg/s against Mosquitto (FINDINGS.md). An
#: MQTT 5 broker's Receive Maximum lowers it per connection (Mosquitto's default is 20).
INFLIGHT_WINDOW = 100
#: How often the sender thread looks at the outbox when nothing woke it, in seconds.
_IDLE_POLL_S = 1.0


def status_body(device_id: str, state: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """A ``status`` body; raises :class:`ContractError` on a bad state or field."""
    body = {"state": state, **extra}
    messages.make(device_id, 0, 0.0, "status", body)
    return body


class _QuietWhileOffline(logging.Filter):
    """paho logs "Client is not connected" at ERROR on every retry while the broker is down;
    the link's own warning already says so once, so this becomes DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def _paho_logger() -> logging.Logger:
    paho_logger = logging.getLogger(logger.name + ".paho")
    if not any(isinstance(f, _QuietWhileOffline) for f in paho_logger.filters):
        paho_logger.addFilter(_QuietWhileOffline())
    return paho_logger


class MqttLink:
    """One device's connection to the broker, fed from its outbox. See the module docstring.

    Built stopped; :meth:`start` connects in the background (``connect_async``), so a device
    whose broker is down starts anyway and keeps retrying with the given delays (seconds).
    """

    def __init__(
        self,
        device_id: str,
        outbox: Outbox,
        host: str,
        port: int,
        *,
        client_id: str | None,
        username: str | None,
        password: str | None,
        tls: TlsConfig | None,
        keepalive_s: int,
        status_extra: Mapping[str, Any],
        reconnect_delay_s: tuple[float, float],
    ) -> None:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise missing_extra("paho-mqtt", "edge") from None
        self.device_id = device_id
        self._outbox = outbox
        self._host, self._port, self._keepalive_s = host, port, keepalive_s
        self._mqtt = mqtt
        self._status_topic = device_topic(device_id, "status")

        self._cond = threading.Condition()
        # Everything below is guarded by self._cond.
        self._status_extra = dict(status_extra)
        self._status_state = "online"
        self._status_dirty = False
        self._connected = False
        self._generation = 0  # connections made so far; the sender starts over on each
        self._sent_generation = 0  # the connection the sender last set up (status sent, cursor reset)
        self._announced_generation = 0  # the last connection whose online status the broker acknowledged
        self._online_mid: tuple[int, int] | None = None  # (mid, generation) of the online status in flight
        self._online_seq: int | None = None  # reserved before connecting, sent after CONNACK
        self._cursor = -1  # highest seq handed to paho on the current connection
        self._inflight: dict[int, int | None] = {}  # mid -> outbox seq (None: a status message)
        self._window = INFLIGHT_WINDOW  # most messages in flight on this connection
        self._wake = False
        self._stopping = False
        self._broker_down_logged = False
        self.published = self.acked = self.errors = 0

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or device_id, protocol=mqtt.MQTTv5)
        self._paho_lock = _paho_out_lock(client)  # before any callback ties the client to us
        client.enable_logger(_paho_logger())
        # An exception in one of our callbacks is logged by paho instead of ending its network
        # thread (which would end telemetry until the daemon restarts).
        client.suppress_exceptions = True
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            _set_tls(client, tls)
        client.max_inflight_messages_set(INFLIGHT_WINDOW)
        client.max_queued_messages_set(0)  # the outbox bounds what waits, not paho
        client.reconnect_delay_set(*reconnect_delay_s)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._sender = threading.Thread(target=self._send_loop, name=f"edgetune-telemetry-{device_id}", daemon=True)

    # -- what Telemetry calls --------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread and paho's network thread, and connect in the background."""
        self._sender.start()
        try:
            self._client.connect_async(self._host, self._port, keepalive=self._keepalive_s, clean_start=True)
            self._client.loop_start()
        except BaseException:
            self._stop_sender()
            raise

    def wake(self) -> None:
        """Something was put in the outbox: have the sender look."""
        with self._cond:
            self._wake_sender()

    def count_error(self) -> None:
        with self._cond:
            self.errors += 1

    @property
    def status_extra(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._status_extra)

    def set_status(self, state: str, extra: Mapping[str, Any]) -> None:
        """Replace the status fields and send the status now if connected, else on connect."""
        with self._cond:
            self._status_extra = dict(extra)
            self._status_state = state
            self._status_dirty = True
            self._wake_sender()

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def wait_announced(self, timeout_s: float) -> bool:
        """Wait until connected and the broker acknowledged this connection's online status."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (self._connected and self._announced_generation == self._generation):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (everything acknowledged). False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                try:
                    if self._outbox.counts().pending == 0:
                        return True
                except OutboxError as exc:
                    logger.error("cannot read the telemetry outbox: %s", exc)
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))

    def close(self, timeout_s: float) -> bool:
        """Stop sending, publish the retained offline status, disconnect cleanly (no last will).

        Returns True if the broker acknowledged the offline status within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        self._stop_sender()
        acked = False
        if self.connected:
            try:
                info = self._publish_status("offline", self.status_extra)
            except OutboxError as exc:
                logger.error("cannot take a sequence number for the offline status: %s", exc)
                info = None
            if info is not None and info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                with contextlib.suppress(RuntimeError, ValueError):  # the connection dropped meanwhile
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                acked = info.is_published()
        self._client.disconnect()
        self._client.loop_stop()
        # Break the client <-> link cycle, so the client is freed (and paho's __del__ closes its
        # wake-up socket pair) as soon as the Telemetry is dropped, not at some later GC.
        for callback in ("on_pre_connect", "on_connect", "on_connect_fail", "on_disconnect", "on_publish"):
            setattr(self._client, callback, None)
        return acked

    # -- the sender thread -----------------------------------------------------------------

    def _wake_sender(self) -> None:
        """Called with self._cond held."""
        self._wake = True
        self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not (self._wake or self._stopping):
                    if not self._cond.wait(_IDLE_POLL_S):
                        break  # poll now and then: retries a publish that failed for want of a wake
                self._wake = False
                if self._stopping:
                    return
                if not self._connected:
                    continue
                generation = self._generation
                new_connection = self._sent_generation != generation
                status_due = new_connection or self._status_dirty
                online_seq = self._online_seq if new_connection else None
                if new_connection:
                    self._cursor = -1
                    self._status_state = "online"
                state, extra = self._status_state, dict(self._status_extra)
                self._status_dirty = False
            try:
                if status_due:
                    self._publish_status(state, extra, online_seq, generation=generation if new_connection else None)
                    if new_connection:
                        with self._cond:
                            self._sent_generation = generation
                self._pump(generation)
            except OutboxError as exc:
                logger.error("telemetry outbox failed: %s", exc)
                self.count_error()
            except Exception:  # a bug must not end telemetry for the life of the daemon
                logger.exception("telemetry sender failed; retrying in %.0f s", _IDLE_POLL_S)
                with self._cond:
                    self.errors += 1
                    self._cond.wait(_IDLE_POLL_S)

    def _pump(self, generation: int) -> None:
        """Hand pending messages to paho in seq order, up to the in-flight window."""
        with self._cond:
            room = self._window - len(self._inflight)
            cursor = self._cursor
        if room <= 0:
            return
        for message in self._outbox.pending(limit=room, after_seq=cursor):
            with self._cond:
                if self._generation != generation or not self._connected or self._stopping:
                    return  # the connection changed: the next one starts again from the oldest
            info = self._publish(message.topic, message.payload, retain=False, seq=message.seq)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                logger.warning("telemetry publish of seq %d failed (%s); it stays in the outbox", message.seq,
                               self._mqtt.error_string(info.rc))
                return
            with self._cond:
                if self._generation == generation:
                    self._cursor = message.seq

    def _publish_status(self, state: str, extra: Mapping[str, Any], seq: int | None = None, *,
                        generation: int | None = None) -> Any:
        """Publish a retained status; ``generation``: it is that connection's online announcement."""
        if seq is None:
            seq = self._outbox.reserve_seqs(1)
        envelope = messages.make(self.device_id, seq, time.time(), "status", status_body(self.device_id, state, extra))
        info = self._publish(self._status_topic, messages.encode(envelope), retain=True, seq=None,
                             generation=generation)
        if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
            logger.info("status %s published (seq %d)", state, seq)
        return info

    def _publish(self, topic: str, payload: bytes, *, retain: bool, seq: int | None,
                 generation: int | None = None) -> Any:
        """Publish at QoS 1 and record mid -> seq before paho can report the PUBACK."""
        with self._paho_lock:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            with self._cond:
                if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                    self._inflight[info.mid] = seq
                    self.published += 1
                    if generation is not None:
                        self._online_mid = (info.mid, generation)
                else:
                    self.errors += 1
        return info

    def _stop_sender(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._sender.is_alive() and self._sender is not threading.current_thread():
            self._sender.join()

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _on_pre_connect(self, client: Any, userdata: Any) -> None:
        try:
            first = self._outbox.reserve_seqs(2)
            will = messages.make(self.device_id, first + 1, time.time(), "status",
                                 status_body(self.device_id, "offline", self.status_extra))
        except OutboxError as exc:
            logger.error("cannot number the last will (%s); keeping the previous one", exc)
            with self._cond:
                self.errors += 1
                self._online_seq = None
            return
        client.will_set(self._status_topic, messages.encode(will), qos=1, retain=True)
        with self._cond:
            self._online_seq = first

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.error("broker refused the connection of %s: %s", self.device_id, reason_code)
            self.count_error()
            return
        # Unacknowledged messages paho kept from the last connection would be resent by paho,
        # out of order with the outbox's own resend; the outbox is the source of truth.
        client.drop_out_messages()
        # MQTT 5: never more unacknowledged messages than the broker's Receive Maximum.
        window = min(INFLIGHT_WINDOW, getattr(properties, "ReceiveMaximum", INFLIGHT_WINDOW) or INFLIGHT_WINDOW)
        with self._cond:
            self._window = window
            self._connected = True
            self._generation += 1
            self._inflight.clear()
            self._broker_down_logged = False
            self._wake_sender()
        logger.info("telemetry connected to %s:%d", self._host, self._port)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._cond:
            first = not self._broker_down_logged
            self._broker_down_logged = True
        (logger.warning if first else logger.debug)(
            "cannot reach the MQTT broker %s:%d; telemetry waits in the outbox", self._host, self._port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._cond.notify_all()
            stopping = self._stopping
        if was_connected and not stopping:
            logger.warning("telemetry disconnected (%s); reconnecting", reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if mid not in self._inflight:
                return  # a message from an earlier connection, already resent
            seq = self._inflight.pop(mid)
            if self._online_mid is not None and self._online_mid[0] == mid:
                if not reason_code.is_failure:
                    self._announced_generation = self._online_mid[1]
                self._online_mid = None
            self._wake_sender()
            if reason_code.is_failure:
                # e.g. 0x87 not authorised (the broker's ACL): kept, retried on the next connection
                logger.error("broker refused %s: %s", "a status message" if seq is None else f"telemetry seq {seq}",
                             reason_code)
                self.errors += 1
            elif seq is not None:  # held across the delete: flush() never sees pending 0 before acked counts it
                try:
                    self.acked += int(self._outbox.ack(seq))
                except OutboxError as exc:
                    logger.error("cannot delete acknowledged seq %d from the outbox (%s); it will be resent",
                                 seq, exc)
                    self.errors += 1


def _paho_out_lock(client: Any) -> Any:
    """paho's outgoing-message lock, which it holds while calling ``on_publish``.

    Holding it across ``publish()`` and the mid bookkeeping means a PUBACK is never handled
    between the two. It is a private attribute of paho's client: a paho that renamed it is
    refused here, loudly, rather than run without the lock (where a PUBACK that beats the
    bookkeeping leaves its message unacknowledged, and its slot of the in-flight window taken,
    until the next connection).
    """
    lock = getattr(client, "_out_message_mutex", None)
    if lock is None or not (hasattr(lock, "__enter__") and hasattr(lock, "__exit__")):
        from paho.mqtt import __version__ as paho_version

        raise UsageError(f"paho-mqtt {paho_version} has no Client._out_message_mutex, the lock edgetune's "
                         "telemetry holds so that no PUBACK is handled before its message is recorded; "
                         "install a supported paho-mqtt: pip install 'paho-mqtt>=2.0,<3'")
    return lock


def _set_tls(client: Any, tls: TlsConfig) -> None:
    import ssl

    def name(p: Any) -> str | None:
        return None if p is None else str(p)

    try:
        client.tls_set(ca_certs=name(tls.ca_file), certfile=name(tls.cert_file), keyfile=name(tls.key_file),
                       cert_reqs=ssl.CERT_REQUIRED)
    except (OSError, ssl.SSLError) as exc:  # FileNotFoundError, a PEM that does not parse
        raise UsageError(f"MQTT TLS files (ca {tls.ca_file}, cert {tls.cert_file}, key {tls.key_file}) "
                         f"cannot be loaded: {exc}") from None
