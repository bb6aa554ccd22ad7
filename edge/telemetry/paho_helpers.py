"""paho-mqtt helpers for the device's link: reconnect backoff, quieter paho logging, TLS,
TCP_NODELAY, paho's outgoing-message lock, and the status body.

Kept apart from :mod:`.link` (the sender thread and the acknowledgement bookkeeping) so that
each reads in one sitting.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Mapping

from edgetune.backoff import JitteredBackoff  # noqa: F401 (the link imports it from here)
from edgetune.contract import messages
from edgetune.errors import UsageError

if TYPE_CHECKING:
    from ..config import TlsConfig

#: The link's logger: paho's own messages go to its ``.paho`` child.
logger = logging.getLogger(__name__.rsplit(".", 1)[0] + ".link")


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


def paho_logger() -> logging.Logger:
    paho_logger = logging.getLogger(logger.name + ".paho")
    if not any(isinstance(f, _QuietWhileOffline) for f in paho_logger.filters):
        paho_logger.addFilter(_QuietWhileOffline())
    return paho_logger


def paho_out_lock(client: Any) -> Any:
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


def no_delay(client: Any) -> None:
    """Send small packets at once (TCP_NODELAY): paho leaves Nagle's algorithm on, which holds a
    PUBLISH back until the previous segment is acknowledged, tens of ms with delayed ACKs."""
    import socket

    sock = client.socket()
    if sock is not None and getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def set_tls(client: Any, tls: TlsConfig) -> None:
    import ssl

    def name(p: Any) -> str | None:
        return None if p is None else str(p)

    try:
        client.tls_set(ca_certs=name(tls.ca_file), certfile=name(tls.cert_file), keyfile=name(tls.key_file),
                       cert_reqs=ssl.CERT_REQUIRED)
    except (OSError, ssl.SSLError) as exc:  # FileNotFoundError, a PEM that does not parse
        raise UsageError(f"MQTT TLS files (ca {tls.ca_file}, cert {tls.cert_file}, key {tls.key_file}) "
                         f"cannot be loaded: {exc}") from None
