"""MQTT ingest: subscribe to every device's telemetry, validate each message, store it once.

Delivery guarantees, with paho-mqtt 2.x, MQTT v5 and QoS 1:

- A persistent session (fixed client id, ``clean_start=False``, a session expiry) makes the
  broker queue messages while the server is down and deliver them when it comes back.
- A message is acknowledged (PUBACK) only once it is committed to the database, or once it is
  known to be invalid. If the database refuses the write, the message is retried in place with
  a growing delay (counted in ``store_errors``, logged at ERROR) and is never acknowledged before
  it is stored; if the server stops meanwhile, the broker still holds it for the next session.
  Blocking the network loop is deliberate: nothing else could be stored either, and the
  broker queues what arrives meanwhile.
- Each (device, seq) is stored once (see :class:`~edgetune.server.store.Store`), so the
  redeliveries that follow reconnections are harmless: they are counted as duplicates.
- An invalid message (bad topic, oversized, not UTF-8 JSON, wrong schema, device or type not
  matching its topic) is counted by reason, logged at WARNING with its topic (at most one line
  per reason every ``reject_log_interval_s``), acknowledged and never stored.

Device topics are read through an MQTT v5 shared subscription (``$share/edgetune-server/…``) so
that several server instances split the load; ``status`` is read through a plain subscription by
every instance, because brokers that follow the MQTT v5 specification do not send retained
messages to shared subscriptions, and the retained status is how a new instance learns each
device's state.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgetune.contract import messages, topics
from edgetune.contract.errors import ContractError
from edgetune.errors import UsageError

from .store import Outcome, Store, StoreError

log = logging.getLogger(__name__)

#: Why a message was refused; the keys of ``IngestCounters.rejected``.
REASONS = ("topic", "oversized", "not_json", "schema", "device_mismatch", "type_mismatch", "internal_error")
#: The broker is asked (MQTT v5 Maximum Packet Size) never to send us packets larger than this, in
#: bytes: payloads up to it are refused and counted as ``oversized``; larger ones are dropped by
#: the broker before they cost us memory.
MAX_PACKET_BYTES = 4 * messages.MAX_PAYLOAD_BYTES
QOS = 1


def default_client_id() -> str:
    """``edgetune-server-<hostname>``: stable across restarts (so the session resumes), different per host."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"edgetune-server-{host}"


def subscription_filters(shared: bool = True) -> list[str]:
    """The topic filters to subscribe to: shared ones for load-splitting, except a plain ``status``.

    Built from ``topics.server_subscriptions``; with ``shared=False`` exactly its plain list.
    """
    plain = topics.server_subscriptions(shared=False)
    if not shared:
        return plain
    return [p if p.endswith("/status") else s for p, s in zip(plain, topics.server_subscriptions(shared=True))]


@dataclass(frozen=True)
class IngestConfig:
    """How to reach the broker and how to behave when things fail.

    Times are in seconds.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    #: Fixed, so that the broker keeps our session (and queues messages) across restarts. Two
    #: server instances on one broker need two ids. ``None``: :func:`default_client_id`.
    client_id: str | None = None
    #: MQTT v5 shared subscriptions, so that several instances split the load. Off by default:
    #: Mosquitto 2.0.11 does not restore shared subscriptions from its persistence file, so after
    #: a broker restart what devices publish before the servers reconnect is lost (measured in
    #: tests/test_end_to_end.py); plain subscriptions of a persistent session survive it.
    shared: bool = False
    keepalive_s: int = 30
    #: How long the broker keeps our session (and queues QoS 1 messages) while we are away.
    session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_delay_s: int = 1
    reconnect_max_delay_s: int = 30
    #: First and largest delay between attempts to store a message the database refused.
    store_retry_s: float = 0.5
    store_retry_max_s: float = 10.0
    #: At most one WARNING per reject reason (and one ERROR for store failures) per this many seconds.
    reject_log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.host:
            raise UsageError("broker host is empty; expected a host name or address such as '127.0.0.1'")
        if not 0 < self.port < 65536:
            raise UsageError(f"broker port is {self.port}; expected 1-65535 (MQTT's default is 1883)")
        if self.client_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.client_id):
            raise UsageError(f"client id {self.client_id!r} is not allowed; expected 1-64 letters, digits, '_', '.', '-'")
        for name in ("keepalive_s", "session_expiry_s", "reconnect_min_delay_s", "reconnect_max_delay_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} is {getattr(self, name)}; expected an integer > 0")
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise UsageError(f"reconnect_max_delay_s ({self.reconnect_max_delay_s}) is below "
                             f"reconnect_min_delay_s ({self.reconnect_min_delay_s})")
        if not 0 < self.store_retry_s <= self.store_retry_max_s:
            raise UsageError(f"store_retry_s is {self.store_retry_s} and store_retry_max_s is {self.store_retry_max_s}; "
                             "expected 0 < store_retry_s <= store_retry_max_s")
        if self.reject_log_interval_s < 0:
            raise UsageError(f"reject_log_interval_s is {self.reject_log_interval_s}; expected >= 0")

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or default_client_id()


@dataclass(frozen=True)
class IngestCounters:
    """What this process's ingest has done since it started (a snapshot)."""

    #: Every message delivered by the broker, valid or not, redeliveries included.
    received: int = 0
    #: New (device, seq), committed.
    stored: int = 0
    #: Already stored with the same content (broker or outbox replays, retained status on reconnect).
    duplicates: int = 0
    #: Already stored with different content: a device reused a seq (logged at WARNING).
    conflicts: int = 0
    #: reason (see :data:`REASONS`) -> messages refused.
    rejected: Mapping[str, int] = field(default_factory=dict)
    #: Failed attempts to write to the database (each retried).
    store_errors: int = 0
    #: True while the last write attempt failed.
    store_failing: bool = False
    #: Connected to the broker with our subscriptions in place.
    subscribed: bool = False

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "stored": self.stored, "duplicates": self.duplicates,
            "conflicts": self.conflicts, "rejected": dict(self.rejected), "rejected_total": self.rejected_total,
            "store_errors": self.store_errors, "store_failing": self.store_failing, "subscribed": self.subscribed,
        }


class _RateLimit:
    """Say yes at most once per ``interval_s`` per key; count the no's in between."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        """(log now?, how many were suppressed since the last one logged)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


class _PahoLog:
    """paho's logger, minus the ERROR it logs when its loop thread outlives our own disconnect()."""

    def __init__(self, logger: logging.Logger, stopping: threading.Event) -> None:
        self._logger = logger
        self._stopping = stopping

    def log(self, level: int, msg: str, *args: Any) -> None:
        if self._stopping.is_set() and msg.startswith("Client is not connected"):
            return
        self._logger.log(level, msg, *args)


def classify(device: str, kind: str, payload: bytes) -> str:
    """Why ``payload`` on a ``device``/``kind`` topic fails ``messages.decode_for_topic`` (a reason).

    Only called after ``decode_for_topic`` refused the payload: it decides nothing, it names the
    failure for the counters.
    """
    if len(payload) > messages.MAX_PAYLOAD_BYTES:
        return "oversized"
    try:
        msg = messages.decode(payload)
    except messages.NotJsonError:
        return "not_json"
    except ContractError:
        return "schema"
    if msg["device"] != device:
        return "device_mismatch"
    return "type_mismatch"


class Ingest:
    """Subscribes to device telemetry and feeds :class:`Store`; see the module docstring.

    ``start()`` returns at once and connects in the background, retrying with backoff;
    ``wait_subscribed()`` waits for the subscriptions; ``stop()`` disconnects and keeps the
    broker session, so messages published meanwhile are delivered at the next start.
    """

    def __init__(self, store: Store, config: IngestConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.config = config or IngestConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {"received": 0, "stored": 0, "duplicates": 0, "conflicts": 0, "store_errors": 0}
        self._rejected: dict[str, int] = {}
        self._store_failing = False
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._pending_subs: dict[int, list[str]] = {}
        self._log_limit = _RateLimit(self.config.reject_log_interval_s, time.monotonic)
        self._client: Any = None

    # -- counters ------------------------------------------------------------------------------

    @property
    def counters(self) -> IngestCounters:
        with self._lock:
            return IngestCounters(rejected=dict(self._rejected), store_failing=self._store_failing,
                                  subscribed=self._subscribed.is_set(), **self._counts)

    def _bump(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- the message path (no MQTT in here: testable on its own) -------------------------------

    def validate(self, topic: str | None, payload: bytes) -> dict[str, Any] | None:
        """The envelope if ``payload`` on ``topic`` is valid; else count, log and return ``None``.

        ``topic`` is ``None`` when it was not UTF-8.
        """
        self._bump("received")
        if topic is None:
            self._reject("topic", "<not UTF-8>", "the topic is not UTF-8")
            return None
        try:
            device, kind = topics.parse_device_topic(topic)
        except ContractError as exc:
            self._reject("topic", topic, str(exc))
            return None
        try:
            return messages.decode_for_topic(device, kind, payload)
        except ContractError as exc:
            self._reject(classify(device, kind, payload), topic, str(exc))
        return None

    def store(self, msg: dict[str, Any], topic: str) -> Outcome:
        """Store a valid envelope once; count the outcome. Raises StoreError (counted) on failure."""
        try:
            outcome = self._store.add(msg, topic, received_at=self._clock())
        except StoreError:
            with self._lock:
                self._counts["store_errors"] += 1
                self._store_failing = True
            raise
        with self._lock:
            self._store_failing = False
            self._counts[{Outcome.STORED: "stored", Outcome.DUPLICATE: "duplicates",
                          Outcome.CONFLICT: "conflicts"}[outcome]] += 1
        if outcome is Outcome.CONFLICT:
            log.warning("device %s sent seq %d again with different content (on %r); kept the first, "
                        "ignored this one: the device's sequence number went backwards",
                        msg["device"], msg["seq"], topic)
        return outcome

    def deliver(self, topic: str | None, payload: bytes) -> bool:
        """Validate and store one delivery; True when it may be acknowledged.

        A database failure is retried (with a growing delay) until it succeeds or ``stop()`` is
        called; in that case False: the broker keeps the message for the next session.
        """
        msg = self.validate(topic, payload)
        if msg is None:
            return True
        delay_s = self.config.store_retry_s
        while True:
            try:
                self.store(msg, topic or "")
                return True
            except StoreError as exc:
                allowed, suppressed = self._log_limit.allow("store_error")
                if allowed:
                    log.error("cannot store %s/%d (%s); not acknowledged; retrying, at most %.1f s apart%s: %s",
                              msg["device"], msg["seq"], topic, self.config.store_retry_max_s,
                              f" ({suppressed} more failures not logged)" if suppressed else "", exc)
            if self._stopping.wait(delay_s):
                log.warning("stopping with %s/%d not stored; the broker keeps it for the next session",
                            msg["device"], msg["seq"])
                return False
            delay_s = min(delay_s * 2, self.config.store_retry_max_s)

    def _reject(self, reason: str, topic: str, error: str) -> None:
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1
        allowed, suppressed = self._log_limit.allow(f"reject:{reason}")
        if allowed:
            log.warning("rejected a message on %r (%s)%s: %s", topic, reason,
                        f"; {suppressed} more {reason} rejects not logged" if suppressed else "", error)
        try:
            self._store.count_reject(reason, topic, error, at=self._clock())
        except StoreError as exc:
            log.error("cannot record a %s reject in the database: %s", reason, exc)

    # -- MQTT ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and subscribe; returns at once."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self._client is not None:
            raise RuntimeError("ingest already started")
        cfg = self.config
        self._stopping.clear()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.resolved_client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.enable_logger(_PahoLog(logging.getLogger(f"{__name__}.paho"), self._stopping))  # type: ignore[arg-type]
        client.reconnect_delay_set(min_delay=cfg.reconnect_min_delay_s, max_delay=cfg.reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.MaximumPacketSize = MAX_PACKET_BYTES
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props)
        self._client = client
        client.loop_start()
        log.info("ingest: connecting to mqtt://%s:%d as %r (%s subscriptions)", cfg.host, cfg.port,
                 cfg.resolved_client_id, "shared" if cfg.shared else "plain")

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the broker to accept our subscriptions."""
        return self._subscribed.wait(timeout_s)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def stop(self) -> None:
        """Disconnect (keeping the broker session) and stop the network thread."""
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping.set()
        client.disconnect()
        client.loop_stop()
        self._subscribed.clear()
        log.info("ingest: disconnected")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker mqtt://%s:%d refused the connection: %s; retrying",
                      self.config.host, self.config.port, reason_code)
            return
        import paho.mqtt.client as mqtt

        filters = subscription_filters(self.config.shared)
        log.info("connected to the broker (session %s); subscribing to %s",
                 "resumed" if flags.session_present else "new", filters)
        result, mid = client.subscribe([(f, mqtt.SubscribeOptions(qos=QOS)) for f in filters])
        if result != mqtt.MQTT_ERR_SUCCESS:
            log.error("cannot subscribe: %s", mqtt.error_string(result))
            return
        with self._lock:
            self._pending_subs[mid] = filters

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: list[Any], properties: Any) -> None:
        with self._lock:
            filters = self._pending_subs.pop(mid, [])
        refused = [(f, str(rc)) for f, rc in zip(filters, reason_codes) if rc.is_failure]
        if refused:
            log.error("the broker refused subscriptions %s; is this client allowed to read them (ACL)?", refused)
            return
        self._subscribed.set()
        log.info("subscribed")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None
        try:
            ack = self.deliver(topic, message.payload)
        except Exception:  # noqa: BLE001 -- a bug must not kill paho's network thread
            log.exception("internal error while handling a message on %r; acknowledged and dropped", topic)
            with self._lock:
                self._rejected["internal_error"] = self._rejected.get("internal_error", 0) + 1
            ack = True
        if ack:
            client.ack(message.mid, message.qos)
