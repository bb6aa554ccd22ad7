"""Telemetry from the device to the broker over MQTT: events, metrics, heads and the status.

Every observation is first stored in the :class:`~.outbox.Outbox` (which numbers it), then
sent at QoS 1 by the :class:`~.link.MqttLink`, and deleted from the outbox only when the
*server* acknowledges that it stored it (end to end, on ``edgetune/v1/<device>/ack``; the
broker's PUBACK is not enough, a broker can crash or restart without its sessions). If the broker
is down, the device starts anyway and the outbox fills; on each (re)connect the retained
``online`` status goes first, then everything pending in sequence order, and a message the
server does not acknowledge in ``ack_timeout_s`` is sent again. A resend may duplicate a message
the server already had: the server stores each ``(device, seq)`` once, and acknowledges it again.

    with Telemetry("jetson-07", state_dir / "outbox.sqlite", "broker.local", 1883,
                   status_extra={"bundle_id": "kws", "bundle_version": "1.0.0"}) as telemetry:
        telemetry.event({"label": "yes", "score": 0.93, ...})
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import edgetune
from edgetune.errors import UsageError

from edgetune.contract.errors import ContractError
from edgetune.contract.topics import check_device_id
from .link import DEFAULT_ACK_TIMEOUT_S, DEFAULT_RECONNECT_DELAY_S, MqttLink, status_body
from .outbox import Outbox, OutboxError

if TYPE_CHECKING:
    from ..config import DaemonConfig, TlsConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TelemetryCounters:
    """What this :class:`Telemetry` did since it started (``pending``/``dropped``: from the file).

    - ``published``: messages handed to the network (including resends and status messages).
    - ``acked``: outbox messages the server acknowledged as stored (and that were deleted).
    - ``pending``: messages in the outbox now.
    - ``dropped``: messages the overflow policy dropped, since the outbox file was created.
    - ``errors``: failed publishes, refused PUBACKs, refused connections, outbox failures.
    - ``connected``: whether the broker connection is up now.
    """

    published: int
    acked: int
    pending: int
    dropped: int
    errors: int
    connected: bool
    #: messages sent again because the server had not acknowledged them in ``ack_timeout_s``.
    resent: int = 0


class Telemetry:
    """Publish a device's telemetry to an MQTT broker, through a disk-backed outbox.

    Args:
        device_id: this device's id (a topic level: ``edgetune/v1/<device_id>/...``).
        outbox_path: the outbox SQLite file (created with its folder if missing).
        broker_host: the broker's host name or address.
        broker_port: the broker's TCP port.
        client_id: MQTT client id; None uses ``device_id`` (so broker ACLs can use ``%c``).
        username: broker user name (per-device credentials), or None.
        password: broker password, or None.
        tls: a :class:`~edgetune.edge.config.TlsConfig` (``ca_file``, ``cert_file``,
            ``key_file``; all None = the system's CAs), or None for plain TCP.
        keepalive_s: seconds between MQTT pings; the broker publishes the last will after
            1.5 times this without traffic (at once if the device's socket closes).
        status_extra: fields of the ``status`` body sent with ``online`` and in the last will:
            ``bundle_id``, ``bundle_version``, ``head_version``, ``provider``; ``software``
            defaults to this edgetune's version.
        max_messages: the outbox bound (messages).
        overflow: the outbox overflow policy, ``"drop_oldest"`` or ``"drop_newest"``.
        reconnect_delay_s: (first, longest) wait in seconds before reconnecting; the wait
            doubles after each failed attempt, each wait drawn between half and all of it.
        ack_timeout_s: seconds a sent message waits for the server's acknowledgement before it
            is sent again (on the same connection; a reconnect resends everything pending).

    The connection is made in the background (``connect_async``): the constructor returns at
    once, even if the broker is down. Use as a context manager, or call :meth:`close`.

    Raises:
        UsageError: a bad argument, an unusable outbox file, unreadable TLS files, or
            paho-mqtt not installed (``pip install 'edgetune[edge]'``).
        ContractError: a ``status_extra`` field the status message does not allow.
    """

    def __init__(
        self,
        device_id: str,
        outbox_path: str | Path,
        broker_host: str,
        broker_port: int = 1883,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsConfig | None = None,
        keepalive_s: int = 30,
        status_extra: Mapping[str, Any] | None = None,
        max_messages: int = 100_000,
        overflow: str = "drop_oldest",
        reconnect_delay_s: tuple[float, float] = DEFAULT_RECONNECT_DELAY_S,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        try:
            self.device_id = check_device_id(device_id)
        except ContractError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(broker_host, str) or not broker_host.strip():
            raise UsageError(f"broker_host is {broker_host!r}; expected a host name or address")
        if isinstance(broker_port, bool) or not isinstance(broker_port, int) or not 0 < broker_port < 65_536:
            raise UsageError(f"broker_port is {broker_port!r}; expected an integer in [1, 65535]")
        if isinstance(keepalive_s, bool) or not isinstance(keepalive_s, int) or not 5 <= keepalive_s <= 65_535:
            raise UsageError(f"keepalive_s is {keepalive_s!r}; expected an integer in [5, 65535] (seconds)")
        low, high = reconnect_delay_s
        if not 0 < low <= high:
            raise UsageError(f"reconnect_delay_s is {reconnect_delay_s!r}; expected (first, longest) with "
                             "0 < first <= longest (seconds)")
        if isinstance(ack_timeout_s, bool) or not isinstance(ack_timeout_s, (int, float)) or not ack_timeout_s > 0:
            raise UsageError(f"ack_timeout_s is {ack_timeout_s!r}; expected a number of seconds > 0")
        extra = {"software": edgetune.__version__, **(status_extra or {})}
        status_body(self.device_id, "online", extra)  # refuse bad fields now, not on connect
        self._closed = False
        self._outbox = Outbox(outbox_path, self.device_id, max_messages=max_messages, overflow=overflow)
        try:
            self._link = MqttLink(self.device_id, self._outbox, broker_host, broker_port, client_id=client_id,
                                  username=username, password=password, tls=tls, keepalive_s=keepalive_s,
                                  status_extra=extra, reconnect_delay_s=(low, high),
                                  ack_timeout_s=float(ack_timeout_s))
            self._link.start()
        except BaseException:
            self._outbox.close()
            raise
        logger.info("telemetry for %s to %s:%d (%s), outbox %s", self.device_id, broker_host, broker_port,
                    "TLS" if tls is not None else "plain TCP", outbox_path)

    @classmethod
    def from_config(
        cls,
        config: DaemonConfig,
        *,
        state_dir: str | Path | None = None,
        status_extra: Mapping[str, Any] | None = None,
    ) -> Telemetry | None:
        """The daemon's telemetry from its config, or None when ``[mqtt] host`` is not set.

        Args:
            config: the daemon's configuration.
            state_dir: the resolved state directory (the outbox goes in it); None uses
                ``config.state_dir``, which must then be set.
            status_extra: as for the constructor.

        Raises:
            ConfigError: the password file cannot be read, or there is no state directory.
        """
        from ..config import OUTBOX_FILE, ConfigError

        mqtt_cfg = config.mqtt
        if mqtt_cfg.host is None:
            return None
        folder = state_dir if state_dir is not None else config.state_dir
        if folder is None:
            raise ConfigError("state_dir is not set; telemetry needs it for its outbox", "state_dir")
        return cls(
            config.device_id,
            Path(folder) / OUTBOX_FILE,
            mqtt_cfg.host,
            mqtt_cfg.port,
            client_id=mqtt_cfg.client_id,
            username=mqtt_cfg.username,
            password=mqtt_cfg.read_password(),
            tls=mqtt_cfg.tls,
            keepalive_s=mqtt_cfg.keepalive_s,
            status_extra=status_extra,
            max_messages=mqtt_cfg.outbox_max_messages,
            overflow=mqtt_cfg.outbox_overflow,
            ack_timeout_s=mqtt_cfg.ack_timeout_s,
        )

    # -- messages --------------------------------------------------------------------------

    def event(self, body: Mapping[str, Any], observed_at: float | None = None) -> dict[str, Any] | None:
        """Queue a detection (an ``event`` body) and send it when the broker is reachable.

        Args:
            body: the event body (label, score, modality, source, offset_s, bundle_id, ...).
            observed_at: when it was observed, seconds since the Unix epoch; default: now
                (the time of this call, not of the send).

        Returns:
            The envelope, or None if it could not be kept (outbox full under ``drop_newest``,
            or the outbox file failed; both are counted).

        Raises:
            ContractError: the body is invalid (a bug in the caller; nothing is queued).
        """
        return self._put("event", body, observed_at)

    def metrics(self, body: Mapping[str, Any], observed_at: float | None = None) -> dict[str, Any] | None:
        """Queue a ``metrics`` body (see :class:`~edgetune.edge.sinks.MetricsReport`); like :meth:`event`.

        The outbox's counters are added as ``body["outbox"]`` unless the body has them.
        """
        if "outbox" not in body:
            body = {**body, "outbox": self._outbox_counters()}
        return self._put("metrics", body, observed_at)

    def head(self, body: Mapping[str, Any], observed_at: float | None = None) -> dict[str, Any] | None:
        """Queue a locally fine-tuned head (a ``head`` body) for aggregation; like :meth:`event`."""
        return self._put("head", body, observed_at)

    def status(self, state: str = "online", **extra: Any) -> None:
        """Update the retained status, e.g. ``status(head_version=4)`` after a head is promoted.

        The fields in ``extra`` are merged into those sent with every later status and last
        will. The status is sent now if connected, else at the next connection (status is
        the present state, so it is not queued in the outbox). ``state="offline"`` stays in
        force until the next reconnect, which announces ``online`` again.

        Raises:
            ContractError: a field or the state is not allowed (nothing changes).
        """
        merged = {**self._link.status_extra, **extra}
        status_body(self.device_id, state, merged)
        self._link.set_status(state, merged)

    # -- waiting and closing ---------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the outbox is empty (everything acknowledged by the server). False on timeout."""
        return self._link.flush(timeout_s)

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected and the broker has acknowledged the online status. False on timeout."""
        return self._link.wait_announced(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush, publish the retained ``offline`` status, disconnect cleanly (no last will).

        What is not acknowledged within ``timeout_s`` seconds stays in the outbox for the next
        start. Returns True when everything, the offline status included, was acknowledged.
        Calling it again does nothing and returns False.
        """
        if self._closed:
            return False
        self._closed = True
        deadline = time.monotonic() + timeout_s
        flushed = self._link.flush(timeout_s)
        offline_acked = self._link.close(max(0.0, deadline - time.monotonic()))
        pending = self._outbox_counters().get("pending", "?")
        self._outbox.close()
        logger.info("telemetry for %s closed: %s pending in the outbox, offline status %s", self.device_id,
                    pending, "acknowledged" if offline_acked else "not sent (the last will speaks for it)")
        return flushed and offline_acked

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._link.connected

    @property
    def counters(self) -> TelemetryCounters:
        """The counters (see :class:`TelemetryCounters`)."""
        outbox = self._outbox_counters()
        link = self._link
        return TelemetryCounters(published=link.published, acked=link.acked, pending=outbox.get("pending", 0),
                                 dropped=outbox.get("dropped_overflow", 0), errors=link.errors,
                                 connected=link.connected, resent=link.resent)

    def _put(self, type_: str, body: Mapping[str, Any], observed_at: float | None) -> dict[str, Any] | None:
        if observed_at is None:
            observed_at = time.time()
        if self._closed:
            raise RuntimeError(f"telemetry for {self.device_id} is closed")
        try:
            envelope = self._outbox.put(type_, body, observed_at)
        except OutboxError as exc:
            logger.error("telemetry %s not kept: %s", type_, exc)
            self._link.count_error()
            return None
        self._link.wake()
        return envelope

    def _outbox_counters(self) -> dict[str, int]:
        try:
            return self._outbox.counts().as_counters()
        except OutboxError as exc:
            logger.error("cannot read the telemetry outbox: %s", exc)
            return {}
