"""How the server's ingest reaches the broker: address, credentials, TLS, sessions, retries.

:class:`IngestConfig` is what ``edgetune server`` builds from its flags (and the demo from its
locked broker); :func:`set_credentials` hands its user, password and TLS files to paho.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

from edgetune.contract import messages, topics
from edgetune.errors import UsageError

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
    #: MQTT v5 shared subscriptions, so that several instances split the load (and one that dies
    #: leaves the group at once: see ``session_expiry_s``). Off by default: one instance with a
    #: persistent session has the broker queue what arrives while it is away. Mosquitto 2.0.11 does
    #: not restore shared subscriptions from its persistence file; what a restart drops because of
    #: it, the devices send again (end-to-end acknowledgement).
    shared: bool = False
    keepalive_s: int = 30
    #: How long the broker keeps our session (and queues QoS 1 messages) while we are away.
    #: ``None``: a week with plain subscriptions, 0 (no session kept) with shared ones, so that
    #: a dead member's share goes to the living at once (see the module docstring).
    session_expiry_s: int | None = None
    #: First and longest wait before reconnecting to the broker (each drawn with jitter).
    reconnect_min_delay_s: float = 0.5
    reconnect_max_delay_s: float = 4.0
    #: Most messages stored in one transaction.
    batch_max: int = 500
    #: How often the devices heard from are checked for missing sequence numbers.
    gap_check_interval_s: float = 10.0
    #: First and largest delay between attempts to store a message the database refused.
    store_retry_s: float = 0.5
    store_retry_max_s: float = 10.0
    #: At most one WARNING per reject reason (and one ERROR for store failures) per this many seconds.
    reject_log_interval_s: float = 10.0
    #: Broker user name; ``None`` connects anonymously. The ACL in ``deploy/broker/acl`` grants
    #: the user ``edgetune-server`` read on every device's telemetry and write on cmd/ack/fleet head.
    username: str | None = None
    #: That user's password (the CLI reads it from a file, never from its command line).
    password: str | None = field(default=None, repr=False)
    #: TLS to the broker. ``tls_ca_file``: PEM of the CA that signed the broker's certificate
    #: (None: the system's CAs); ``tls_cert_file``/``tls_key_file``: a client certificate, for
    #: brokers that require one. Any of the files turns TLS on.
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise UsageError("broker host is empty; expected a host name or address such as '127.0.0.1'")
        if not 0 < self.port < 65536:
            raise UsageError(f"broker port is {self.port}; expected 1-65535 (MQTT's default is 1883)")
        if self.client_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.client_id):
            raise UsageError(f"client id {self.client_id!r} is not allowed; expected 1-64 letters, digits, '_', '.', '-'")
        for name in ("keepalive_s", "reconnect_min_delay_s", "reconnect_max_delay_s", "batch_max",
                     "gap_check_interval_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} is {getattr(self, name)}; expected a number > 0")
        if self.session_expiry_s is not None and not 0 <= self.session_expiry_s < 2**32:
            raise UsageError(f"session_expiry_s is {self.session_expiry_s}; expected 0 to 2**32 - 1 seconds, "
                             "or None for the default")
        if self.reconnect_max_delay_s < self.reconnect_min_delay_s:
            raise UsageError(f"reconnect_max_delay_s ({self.reconnect_max_delay_s}) is below "
                             f"reconnect_min_delay_s ({self.reconnect_min_delay_s})")
        if not 0 < self.store_retry_s <= self.store_retry_max_s:
            raise UsageError(f"store_retry_s is {self.store_retry_s} and store_retry_max_s is {self.store_retry_max_s}; "
                             "expected 0 < store_retry_s <= store_retry_max_s")
        if self.reject_log_interval_s < 0:
            raise UsageError(f"reject_log_interval_s is {self.reject_log_interval_s}; expected >= 0")
        if self.username is not None and not 0 < len(self.username) <= 256:
            raise UsageError(f"broker user name {self.username!r} is not allowed; expected 1-256 characters")
        if self.password is not None and self.username is None:
            raise UsageError("a broker password is set without a user name; expected both (or neither)")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise UsageError(f"TLS key file {self.tls_key_file!r} is set without a certificate file; "
                             "expected tls_cert_file too")

    @property
    def uses_tls(self) -> bool:
        """True when the connection to the broker is TLS (``tls`` or any TLS file set)."""
        return self.tls or any(f is not None for f in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file))

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or default_client_id()

    @property
    def resolved_session_expiry_s(self) -> int:
        """``session_expiry_s``, or its default: 0 with shared subscriptions, a week without."""
        if self.session_expiry_s is not None:
            return self.session_expiry_s
        return 0 if self.shared else 7 * 24 * 3600


def set_credentials(client: Any, cfg: IngestConfig) -> None:
    """Give paho the user name, password and TLS settings of ``cfg``; UsageError if a TLS file is unusable."""
    import ssl

    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password)
    if not cfg.uses_tls:
        return
    try:
        client.tls_set(ca_certs=cfg.tls_ca_file, certfile=cfg.tls_cert_file, keyfile=cfg.tls_key_file,
                       cert_reqs=ssl.CERT_REQUIRED)
    except (OSError, ssl.SSLError) as exc:  # a missing file, a PEM that does not parse
        raise UsageError(f"MQTT TLS files (ca {cfg.tls_ca_file}, cert {cfg.tls_cert_file}, key {cfg.tls_key_file}) "
                         f"cannot be loaded: {exc}") from None
