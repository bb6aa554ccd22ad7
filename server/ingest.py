"""MQTT ingest: subscribe to every device's telemetry, validate each message, store it once.

Delivery guarantees, with paho-mqtt 2.x, MQTT v5 and QoS 1:

- End to end: after each database commit the server publishes, per device, an acknowledgement
  on ``edgetune/v1/<device>/ack`` naming every sequence number of the batch it now holds (new,
  duplicate, or refused for good; :mod:`edgetune.contract.acks`). The device deletes a message
  from its outbox only then, and sends again what is not acknowledged. So what a broker loses (a
  crash, a restart without its persistence file, a moment with no subscriber) or what a dying
  server instance took with it is not lost: the device still has it.
- Messages are stored in batches: everything delivered since the last commit (up to
  ``batch_max``) goes in one transaction, one fsync (see :meth:`Store.batch`).
- With plain subscriptions a persistent session (fixed client id, ``clean_start=False``, a
  session expiry) makes the broker queue messages while the server is down. With shared
  subscriptions (several instances splitting the load) the session is not kept by default
  (``session_expiry_s`` 0): a member that dies leaves the group at once, so the others get its
  share within seconds instead of it waiting in the dead member's session; what was in flight to
  it comes back from the devices.
- A message is acknowledged (PUBACK) only once it is committed to the database, or once it is
  known to be invalid. If the database refuses the write, the batch is retried whole with a
  growing delay (counted in ``store_errors``, logged at ERROR; the counters roll back with it) and
  nothing in it is acknowledged before it is stored; if the server stops meanwhile, the broker
  (persistent session) or the devices (end to end) send it again. Holding the batch is
  deliberate: nothing else could be stored either, and the broker stops sending once its
  in-flight window to us is full.
- Each (device, seq) is stored once (see :class:`~edgetune.server.store.Store`), so the
  redeliveries that follow reconnections are harmless: they are counted as duplicates.
- Sequence numbers are contiguous per device: every ``gap_check_interval_s`` the devices heard
  from are checked, and one whose stored numbers have holes is logged (WARNING) with how many are
  missing; the count is in the API (``missing``) and in :class:`IngestCounters`.
- Reconnecting to the broker waits ``reconnect_min_delay_s``, doubling up to
  ``reconnect_max_delay_s`` (a few seconds), each wait drawn between half and all of it.
- An invalid message (bad topic, oversized, not UTF-8 JSON, wrong schema, device or type not
  matching its topic, a head whose embedding size is not its bundle's) is counted by reason, in
  this process and in the database's ``rejects`` table alike, logged at WARNING with its topic
  (at most one line per reason every ``reject_log_interval_s``), acknowledged and never stored.
  Validation is total (any payload gives a message or a reason); should a bug still raise, the
  message is counted as ``internal_error`` the same way, and its traceback logged at most once
  per interval.

Device topics are read through an MQTT v5 shared subscription (``$share/edgetune-server/…``) so
that several server instances split the load; ``status`` is read through a plain subscription by
every instance, because brokers that follow the MQTT v5 specification do not send retained
messages to shared subscriptions, and the retained status is how a new instance learns each
device's state.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, Callable

from edgetune.backoff import JitteredBackoff
from edgetune.contract import acks, messages, topics
from edgetune.contract.errors import ContractError

# IngestConfig and the reject bookkeeping live in their own modules; importable from here too.
from .ingest_config import (MAX_PACKET_BYTES, QOS, IngestConfig, default_client_id,  # noqa: F401
                            set_credentials, subscription_filters)
from .rejects import REASONS, IngestCounters, RateLimit, classify  # noqa: F401
from .store import HeadShapeError, Outcome, Store, StoreError

log = logging.getLogger(__name__)

def _describe(items: list[tuple[str | None, bytes, int, int]]) -> str:
    """``device/seq (topic)`` of the first decodable message of a batch, and how many more, for logs."""
    for i, (topic, payload, _mid, _qos) in enumerate(items):
        try:
            msg = messages.decode(payload)
        except (ValueError, TypeError, RecursionError):  # ContractError is a ValueError
            continue
        more = len(items) - 1
        return f"{msg['device']}/{msg['seq']} ({topic})" + (f" and {more} more message(s)" if more else "")
    return f"a batch of {len(items)} message(s)"


class _PahoLog:
    """paho's logger, minus the ERROR it logs when its loop thread outlives our own disconnect()."""

    def __init__(self, logger: logging.Logger, stopping: threading.Event) -> None:
        self._logger = logger
        self._stopping = stopping

    def log(self, level: int, msg: str, *args: Any) -> None:
        if self._stopping.is_set() and msg.startswith("Client is not connected"):
            return
        self._logger.log(level, msg, *args)


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
        self._counts: dict[str, int] = {"received": 0, "stored": 0, "duplicates": 0, "conflicts": 0, "store_errors": 0,
                                        "acks_sent": 0, "batches": 0, "missing": 0}
        self._rejected: dict[str, int] = {}
        self._store_failing = False
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._pending_subs: dict[int, list[str]] = {}
        self._log_limit = RateLimit(self.config.reject_log_interval_s, time.monotonic)
        self._client: Any = None
        # Deliveries from paho's network thread to the batching worker: (topic, payload, mid, qos).
        self._inbox: queue.Queue[tuple[str | None, bytes, int, int]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._backoff = JitteredBackoff(self.config.reconnect_min_delay_s, self.config.reconnect_max_delay_s)
        self._heard: set[str] = set()  # devices settled since the last gap check (worker thread only)
        self._missing_by_device: dict[str, int] = {}
        self._next_gap_check = 0.0
        self._frozen: tuple[dict[str, int], dict[str, int]] | None = None  # counts shown while a batch runs

    # -- counters ------------------------------------------------------------------------------

    @property
    def counters(self) -> IngestCounters:
        """A snapshot; while a batch is being stored, the counts as of the last commit, so that
        what the counters say is stored is in the database."""
        with self._lock:
            counts, rejected = self._frozen if self._frozen is not None else (self._counts, self._rejected)
            return IngestCounters(rejected=dict(rejected), store_failing=self._store_failing,
                                  subscribed=self._subscribed.is_set(), **counts)

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

    def store(self, msg: dict[str, Any], topic: str) -> Outcome | None:
        """Store a valid envelope once; count the outcome. Raises StoreError (counted) on failure.

        ``None``: refused by the store (a head whose embedding size is not its bundle's; counted
        as a ``head_shape`` reject), to be acknowledged like any invalid message.
        """
        try:
            outcome = self._store.add(msg, topic, received_at=self._clock())
        except HeadShapeError as exc:
            self._reject("head_shape", topic, str(exc))
            return None
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

    def _reject(self, reason: str, topic: str, error: str, exc_info: BaseException | None = None) -> None:
        """Count a refused message under ``reason`` here and in the database; log it, rate-limited.

        ``exc_info``: for ``internal_error``, the exception, whose traceback goes with the one
        line logged per interval (never one per message).

        Raises:
            StoreError: the database could not count it. Nothing is counted here either, so the
                two keep agreeing; inside a batch the whole batch is rolled back and retried.
        """
        allowed, suppressed = self._log_limit.allow(f"reject:{reason}")
        if allowed:
            log.log(logging.ERROR if exc_info is not None else logging.WARNING,
                    "rejected a message on %r (%s)%s: %s", topic, reason,
                    f"; {suppressed} more {reason} rejects not logged" if suppressed else "", error,
                    exc_info=exc_info)
        try:
            self._store.count_reject(reason, topic, error, at=self._clock())
        except StoreError as exc:
            allowed, suppressed = self._log_limit.allow("reject_record_error")
            if allowed:
                log.error("cannot record a %s reject in the database%s: %s", reason,
                          f"; {suppressed} more not logged" if suppressed else "", exc)
            raise
        # Counted here last: once this process shows a reject, the database has it too.
        with self._lock:
            self._rejected[reason] = self._rejected.get(reason, 0) + 1

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
        set_credentials(client, cfg)
        self._backoff.reset()
        first_delay = self._backoff.next_s()
        client.reconnect_delay_set(first_delay, first_delay)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        expiry_s = cfg.resolved_session_expiry_s
        props.SessionExpiryInterval = expiry_s
        props.MaximumPacketSize = MAX_PACKET_BYTES
        # No session kept: nothing to resume, and no stale shared subscription left behind.
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=expiry_s == 0,
                             properties=props)
        self._client = client
        self._worker = threading.Thread(target=self._run_worker, args=(client,), name="edgetune-ingest", daemon=True)
        self._worker.start()
        client.loop_start()
        log.info("ingest: connecting to %s://%s:%d as %r (%s subscriptions, session expiry %d s)",
                 "mqtts" if cfg.uses_tls else "mqtt", cfg.host,
                 cfg.port, cfg.resolved_client_id, "shared" if cfg.shared else "plain", expiry_s)

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the broker to accept our subscriptions."""
        return self._subscribed.wait(timeout_s)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def stop(self) -> None:
        """Disconnect (keeping the broker session, if any) and stop the network and worker threads.

        Deliveries not yet committed are not acknowledged: the broker (persistent session) or
        the devices (end-to-end acknowledgement) send them again.
        """
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        client.disconnect()
        client.loop_stop()
        self._subscribed.clear()
        while not self._inbox.empty():
            self._inbox.get_nowait()
        log.info("ingest: disconnected")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker mqtt://%s:%d refused the connection: %s; retrying",
                      self.config.host, self.config.port, reason_code)
            return
        import paho.mqtt.client as mqtt

        self._backoff.reset()
        sock = client.socket()
        if sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            try:  # send PUBACKs and acknowledgements at once, not after Nagle's wait
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                log.debug("cannot set TCP_NODELAY on the broker connection")
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

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        delay = self._backoff.next_s()
        client.reconnect_delay_set(delay, delay)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        delay = self._backoff.next_s()
        client.reconnect_delay_set(delay, delay)
        self._subscribed.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """Hand the delivery to the worker, which stores it with others in one transaction."""
        try:
            topic: str | None = message.topic
        except UnicodeDecodeError:
            topic = None
        self._inbox.put((topic, message.payload, message.mid, message.qos))

    # -- the batching worker --------------------------------------------------------------------

    def _run_worker(self, client: Any) -> None:
        """Take what has been delivered (up to ``batch_max``), store it in one transaction, then
        PUBACK it and publish the devices' end-to-end acknowledgements."""
        while not self._stopping.is_set():
            try:
                items = [self._inbox.get(timeout=0.2)]
            except queue.Empty:
                self._check_gaps()
                continue
            while len(items) < self.config.batch_max:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            settled = self._commit(items)
            if settled is None:
                return  # stopping with the batch not stored: nothing acknowledged
            for _topic, _payload, mid, qos in items:
                client.ack(mid, qos)
            self._acknowledge(client, settled)
            self._check_gaps()

    def _commit(self, items: list[tuple[str | None, bytes, int, int]]) -> list[tuple[str, int]] | None:
        """Validate and store ``items`` in one transaction, retrying it (with a growing delay)
        while the database fails; the (device, seq) settled, or None if stopped first."""
        delay_s = self.config.store_retry_s
        while True:
            with self._lock:
                before = dict(self._counts), dict(self._rejected)
                self._frozen = before
            try:
                with self._store.batch():
                    settled = self._settle(items)
            except StoreError as exc:
                with self._lock:  # the batch was rolled back: so are its counts
                    self._counts, self._rejected = before
                    self._frozen = None
                    self._counts["store_errors"] += 1
                    self._store_failing = True
                allowed, suppressed = self._log_limit.allow("store_error")
                if allowed:
                    log.error("cannot store %s; not acknowledged; retrying, at most %.1f s "
                              "apart%s: %s", _describe(items), self.config.store_retry_max_s,
                              f" ({suppressed} more failures not logged)" if suppressed else "", exc)
                if self._stopping.wait(delay_s):
                    log.warning("stopping with %d message(s) not stored; the broker or the devices send them again",
                                len(items))
                    return None
                delay_s = min(delay_s * 2, self.config.store_retry_max_s)
                continue
            except BaseException:
                with self._lock:
                    self._frozen = None
                raise
            with self._lock:
                self._counts["batches"] += 1
                self._store_failing = False
                self._frozen = None
            return settled

    def _settle(self, items: list[tuple[str | None, bytes, int, int]]) -> list[tuple[str, int]]:
        """Inside a batch: validate and store each item; the (device, seq) of every valid one that is
        now decided for good (stored now or before, a conflict, refused by the store), statuses
        excepted (they are not in the devices' outboxes). StoreError aborts the batch."""
        settled: list[tuple[str, int]] = []
        for topic, payload, _mid, _qos in items:
            try:
                msg = self.validate(topic, payload)
                if msg is None:
                    continue
                outcome = self.store(msg, topic or "")
                if outcome is Outcome.STORED and msg["type"] == "status" and msg["body"]["state"] == "online":
                    self._store.expect_will(msg["device"], msg["seq"] + 1)  # see edge/telemetry/link.py
            except StoreError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a bug must not end ingest
                self._reject("internal_error", topic if topic is not None else "<not UTF-8>",
                             f"internal error ({type(exc).__name__}: {exc}); acknowledged and dropped", exc_info=exc)
                continue
            if msg["type"] != "status":
                settled.append((msg["device"], msg["seq"]))
        return settled

    def _acknowledge(self, client: Any, settled: list[tuple[str, int]]) -> None:
        """Publish each device's end-to-end acknowledgement (QoS 1): the seqs of this batch."""
        by_device: dict[str, list[int]] = {}
        for device, seq in settled:
            by_device.setdefault(device, []).append(seq)
        sent = 0
        for device, seqs in by_device.items():
            self._heard.add(device)
            topic = topics.device_topic(device, "ack")
            for payload in acks.encode(device, seqs):
                info = client.publish(topic, payload, qos=QOS)
                sent += info.rc == 0  # not connected: the device sends again and is acknowledged then
        with self._lock:
            self._counts["acks_sent"] += sent

    def _check_gaps(self) -> None:
        """Every ``gap_check_interval_s``: log devices whose missing sequence numbers grew."""
        now = time.monotonic()
        if now < self._next_gap_check or not self._heard:
            return
        self._next_gap_check = now + self.config.gap_check_interval_s
        heard, self._heard = self._heard, set()
        for device in sorted(heard):
            try:
                gaps = self._store.gaps(device)
            except StoreError as exc:
                log.debug("gap check of %s failed: %s", device, exc)
                continue
            if gaps is None:
                continue
            before = self._missing_by_device.get(device, 0)
            self._missing_by_device[device] = gaps["missing"]
            if gaps["missing"] > before:
                log.warning("device %s: %d sequence number(s) between %d and %d not stored (lost on the device, "
                            "e.g. its outbox overflowed, or still on their way)", device, gaps["missing"],
                            gaps["seq_first"], gaps["seq_last"])
        with self._lock:
            self._counts["missing"] = sum(self._missing_by_device.values())
