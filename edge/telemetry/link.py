"""The MQTT link under :class:`~.publisher.Telemetry`: paho, the sender thread, acknowledgements.

The :class:`~.outbox.Outbox` is the source of truth, and a message leaves it only when the
*server* says it is stored: the server publishes an end-to-end acknowledgement on
``edgetune/v1/<device>/ack`` after its database commit (:mod:`edgetune.contract.acks`). The
broker's PUBACK only frees a slot of the in-flight window. So a broker that crashes, restarts
without its persistence file, or has nobody subscribed for a moment loses nothing: what the
server has not acknowledged is sent again.

On each (re)connect the link subscribes to its ``ack`` topic, then (once the broker confirms
the subscription) sends the retained ``online`` status and every pending message in sequence
order at QoS 1. It keeps at most :data:`ACK_WINDOW` messages sent and not acknowledged by the
server, and at most the broker's Receive Maximum unconfirmed by PUBACK. A message the server has not
acknowledged ``ack_timeout_s`` seconds after it was sent is sent again (oldest first), on the same
connection: this is what recovers a message a dying server instance took with it.

Threads: paho's network thread (``loop_start``) runs the callbacks; a sender thread of ours
hands messages to paho. The callbacks take only this object's condition lock, and no lock of
ours is held while calling paho, except that each publish and the recording of its message id
happen under paho's own outgoing-message lock, the lock paho holds while it reports a PUBACK;
so a PUBACK never arrives for a message id not yet recorded. Lock order: paho's lock, then
``_cond``, then the outbox's lock.

Status and the last will: before a connection attempt two sequence numbers are reserved,
``n`` for the ``online`` status sent after the subscription and ``n + 1`` for the last will
(``offline``, retained) that the broker publishes if the device vanishes; so among one device's
status messages a higher ``seq`` is always the later state. A will's ``observed_at`` is the time
of the connection attempt, the last time the device knew anything. The server sees every
sequence number, so it can report gaps: the pair is reused until a connection succeeds (failed
attempts burn no numbers); a clean :meth:`MqttLink.close` sends the will itself (same bytes, so
it is stored once if the broker sends it too); and after a connection that ended otherwise the
previous will is sent again, not retained, in case the broker never published it.

Reconnecting: the wait doubles from ``reconnect_delay_s[0]`` up to ``reconnect_delay_s[1]``
(a few seconds by default), each wait drawn at random between half and all of it, so a fleet
that lost its broker does not come back in lock-step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Mapping

from edgetune.errors import missing_extra

from edgetune.contract import acks, messages
from edgetune.contract.errors import ContractError
from edgetune.contract.topics import device_topic
from .outbox import Outbox, OutboxError
# paho's helpers (backoff, logging, TLS, TCP_NODELAY, its outgoing lock) live beside this module.
from .paho_helpers import JitteredBackoff, no_delay, paho_logger, paho_out_lock, set_tls, status_body  # noqa: F401

if TYPE_CHECKING:
    from ..config import TlsConfig

logger = logging.getLogger(__name__)

#: Messages handed to paho and not yet acknowledged, at most (paho's in-flight window too).
#: 100 rather than paho's 20: measured 20k vs 17k msg/s against Mosquitto (FINDINGS.md). An
#: MQTT 5 broker's Receive Maximum lowers it per connection (Mosquitto's default is 20).
INFLIGHT_WINDOW = 100
#: Most messages sent and not yet acknowledged by the server: without a server (or while it
#: catches up) the device keeps at most this many in the air, not its whole backlog.
ACK_WINDOW = 1000
#: Seconds to wait for the server's acknowledgement of a sent message before sending it again.
DEFAULT_ACK_TIMEOUT_S = 5.0
#: Default (first, longest) reconnect wait, seconds.
DEFAULT_RECONNECT_DELAY_S = (0.5, 4.0)
#: How often the sender thread looks at the outbox when nothing woke it, in seconds (it also
#: fsyncs the outbox this often while there are unsynced messages, see Outbox.sync).
_IDLE_POLL_S = 1.0


class MqttLink:
    """One device's connection to the broker, fed from its outbox. See the module docstring.

    Built stopped; :meth:`start` connects in the background (``connect_async``), so a device
    whose broker is down starts anyway and keeps retrying with the given delays (seconds).
    ``ack_timeout_s``: how long a sent message waits for the server's acknowledgement before it
    is sent again.
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
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
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
        self._ack_topic = device_topic(device_id, "ack")
        self._ack_timeout_s = ack_timeout_s
        self._backoff = JitteredBackoff(*reconnect_delay_s)

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
        # The (online seq, will payload) reserved for connecting; reused until a connection succeeds.
        self._reserved: tuple[int, bytes] | None = None
        self._reserved_used = False  # a connection with the reserved will succeeded
        self._will_to_resend: bytes | None = None  # the will of a connection that ended without close()
        self._ack_mid: int | None = None  # the SUBSCRIBE for the ack topic in flight
        self._cursor = -1  # highest seq handed to paho on the current connection
        self._inflight: dict[int, int | None] = {}  # mid -> outbox seq (None: a status message)
        # seq -> monotonic time it was last handed to paho, oldest first (a resend moves to the end):
        # sent and not acknowledged by the server, at most ACK_WINDOW of them.
        self._sent_at: OrderedDict[int, float] = OrderedDict()
        self._window = INFLIGHT_WINDOW  # most messages in flight on this connection
        self._wake = False
        self._stopping = False
        self._broker_down_logged = False
        self.published = self.acked = self.errors = self.resent = self.bad_acks = 0

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or device_id, protocol=mqtt.MQTTv5)
        self._paho_lock = paho_out_lock(client)  # before any callback ties the client to us
        client.enable_logger(paho_logger())
        # An exception in one of our callbacks is logged by paho instead of ending its network
        # thread (which would end telemetry until the daemon restarts).
        client.suppress_exceptions = True
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            set_tls(client, tls)
        client.max_inflight_messages_set(INFLIGHT_WINDOW)
        client.max_queued_messages_set(0)  # the outbox bounds what waits, not paho
        first_delay = self._backoff.next_s()
        client.reconnect_delay_set(first_delay, first_delay)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
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
        """Wait until the outbox is empty (everything acknowledged by the server). False on timeout."""
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

        The offline status is this connection's will itself (same sequence number, same bytes).
        Returns True if the broker acknowledged it within ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        self._stop_sender()
        acked = False
        with self._cond:
            will = self._reserved[1] if self._reserved is not None and self._reserved_used else None
        if self.connected and will is not None:
            info = self._publish(self._status_topic, will, retain=True, seq=None)
            if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                with contextlib.suppress(RuntimeError, ValueError):  # the connection dropped meanwhile
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                acked = info.is_published()
                if acked:
                    logger.info("status offline published (seq %d)", messages.decode(will)["seq"])
        self._client.disconnect()
        self._client.loop_stop()
        # Break the client <-> link cycle, so the client is freed (and paho's __del__ closes its
        # wake-up socket pair) as soon as the Telemetry is dropped, not at some later GC.
        for callback in ("on_pre_connect", "on_connect", "on_connect_fail", "on_disconnect", "on_subscribe",
                         "on_publish", "on_message"):
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
                        break  # poll now and then: resend timer, fsync, a publish that failed for want of a wake
                self._wake = False
                if self._stopping:
                    return
                connected = self._connected
                generation = self._generation
                new_connection = self._sent_generation != generation
                status_due = new_connection or self._status_dirty
                online_seq = self._reserved[0] if new_connection and self._reserved is not None else None
                will_again = self._will_to_resend if new_connection else None
                if connected and new_connection:
                    self._cursor = -1
                    self._sent_at.clear()
                    self._status_state = "online"
                    self._will_to_resend = None
                state, extra = self._status_state, dict(self._status_extra)
                if connected:
                    self._status_dirty = False
            try:
                if not connected:
                    self._outbox.sync()  # offline for hours: keep the backlog safe from a power cut
                    continue
                if will_again is not None:
                    self._publish(self._status_topic, will_again, retain=False, seq=None)
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
        """Send what the server has not acknowledged: first what timed out, then new messages in
        seq order, within the PUBACK window and :data:`ACK_WINDOW`."""
        deadline = time.monotonic() - self._ack_timeout_s
        with self._cond:
            room = self._window - len(self._inflight)
            cursor = self._cursor
            overdue = []
            for seq, at in self._sent_at.items():  # oldest first: stop at the first one not overdue
                if at > deadline or len(overdue) >= room:
                    break
                overdue.append(seq)
            fresh_room = min(room - len(overdue), ACK_WINDOW - len(self._sent_at))
        if room <= 0:
            return
        batch: list[tuple[bool, Any]] = []
        if overdue:
            due = set(overdue)
            found = self._outbox.pending(limit=len(due) + ACK_WINDOW, after_seq=min(due) - 1, upto_seq=max(due))
            batch += [(True, m) for m in found if m.seq in due]
            with self._cond:
                for seq in due - {m.seq for _, m in batch}:
                    self._sent_at.pop(seq, None)  # acknowledged or dropped by the overflow policy meanwhile
        if fresh_room > 0:
            batch += [(False, m) for m in self._outbox.pending(limit=fresh_room, after_seq=cursor)]
        if not batch:
            return
        self._outbox.sync(max(m.seq for _, m in batch))  # nothing leaves that a power cut could take back
        resent = 0
        for again, message in batch:
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
                    self._sent_at.pop(message.seq, None)
                    self._sent_at[message.seq] = time.monotonic()
                    if again:
                        self.resent += 1
                        resent += 1
                    else:
                        self._cursor = max(self._cursor, message.seq)
        if resent:
            logger.info("sent %d message(s) again that the server had not acknowledged within %.1f s", resent,
                        self._ack_timeout_s)

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
        with self._cond:
            reserved, used = self._reserved, self._reserved_used
        if reserved is not None and not used:
            client.will_set(self._status_topic, reserved[1], qos=1, retain=True)  # no number burnt
            return
        try:
            first = self._outbox.reserve_seqs(2)
            will = messages.encode(messages.make(self.device_id, first + 1, time.time(), "status",
                                                 status_body(self.device_id, "offline", self.status_extra)))
        except OutboxError as exc:
            logger.error("cannot number the last will (%s); keeping the previous one", exc)
            with self._cond:
                self.errors += 1
                if reserved is not None:
                    self._will_to_resend = reserved[1]
                # No pair for this connection: its online status takes a number when it is sent.
                self._reserved, self._reserved_used = None, False
            return
        client.will_set(self._status_topic, will, qos=1, retain=True)
        with self._cond:
            if reserved is not None:
                self._will_to_resend = reserved[1]  # the last connection ended without close()
            self._reserved, self._reserved_used = (first, will), False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            logger.error("broker refused the connection of %s: %s", self.device_id, reason_code)
            self.count_error()
            self._schedule_reconnect(client)
            return
        # Unacknowledged messages paho kept from the last connection would be resent by paho,
        # out of order with the outbox's own resend; the outbox is the source of truth.
        client.drop_out_messages()
        no_delay(client)
        self._backoff.reset()
        first_delay = self._backoff.next_s()
        client.reconnect_delay_set(first_delay, first_delay)
        # MQTT 5: never more unacknowledged messages than the broker's Receive Maximum.
        window = min(INFLIGHT_WINDOW, getattr(properties, "ReceiveMaximum", INFLIGHT_WINDOW) or INFLIGHT_WINDOW)
        result, mid = client.subscribe(self._ack_topic, qos=1)
        with self._cond:
            self._window = window
            self._reserved_used = True
            self._inflight.clear()
            self._broker_down_logged = False
            self._ack_mid = mid if result == self._mqtt.MQTT_ERR_SUCCESS else None
        if result != self._mqtt.MQTT_ERR_SUCCESS:
            logger.error("cannot subscribe to %s: %s", self._ack_topic, self._mqtt.error_string(result))
            self.count_error()
            self._mark_connected()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._cond:
            if mid != self._ack_mid:
                return
            self._ack_mid = None
        if any(rc.is_failure for rc in reason_codes):
            logger.error("the broker refused the subscription to %s (%s): is the device allowed to read it (ACL)? "
                         "Without the server's acknowledgements nothing leaves the outbox",
                         self._ack_topic, [str(rc) for rc in reason_codes])
            self.count_error()
        self._mark_connected()

    def _mark_connected(self) -> None:
        with self._cond:
            self._connected = True
            self._generation += 1
            self._wake_sender()
        logger.info("telemetry connected to %s:%d", self._host, self._port)

    def _schedule_reconnect(self, client: Any) -> None:
        delay = self._backoff.next_s()
        client.reconnect_delay_set(delay, delay)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._schedule_reconnect(client)
        with self._cond:
            first = not self._broker_down_logged
            self._broker_down_logged = True
        (logger.warning if first else logger.debug)(
            "cannot reach the MQTT broker %s:%d; telemetry waits in the outbox", self._host, self._port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._schedule_reconnect(client)
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
            elif len(self._inflight) <= self._window // 2:
                self._wake_sender()  # refill half a window at a time, not one message per PUBACK
            if reason_code.is_failure:
                # e.g. 0x87 not authorised (the broker's ACL): kept, retried on the next connection
                logger.error("broker refused %s: %s", "a status message" if seq is None else f"telemetry seq {seq}",
                             reason_code)
                self.errors += 1
                if seq is not None:
                    self._sent_at.pop(seq, None)  # not in the air: wait for the next connection

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """The server's acknowledgement: delete what it stored (see :mod:`edgetune.contract.acks`)."""
        if message.topic != self._ack_topic:
            return
        try:
            spans = acks.decode(self.device_id, message.payload)
        except ContractError as exc:
            with self._cond:
                self.bad_acks += 1
                self.errors += 1
                first = self.bad_acks == 1
            (logger.warning if first else logger.debug)("ignored a malformed acknowledgement on %s: %s",
                                                        self._ack_topic, exc)
            return
        with self._cond:  # held across the delete: flush() never sees pending 0 before acked counts it
            try:
                deleted = self._outbox.ack_ranges(spans)
            except OutboxError as exc:
                logger.error("cannot delete acknowledged messages from the outbox (%s); they will be resent", exc)
                self.errors += 1
                return
            self.acked += deleted
            for first, last in spans:
                if last - first < len(self._sent_at):
                    for seq in range(first, last + 1):
                        self._sent_at.pop(seq, None)
                else:
                    for seq in [s for s in self._sent_at if first <= s <= last]:
                        del self._sent_at[seq]
            self._wake_sender()
