"""``edgetune server``: run the aggregation server. Imports nothing heavy at import time."""

from __future__ import annotations

import argparse
import logging
import os

from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)

TOKEN_ENV = "EDGETUNE_SERVER_TOKEN"


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) -> (host, port); :class:`UsageError` naming ``what`` otherwise."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{what} is {text!r}; expected HOST:PORT, for example 127.0.0.1:1883")
    return host, int(port)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "server", help="run the aggregation server: MQTT ingest, storage, JSON API and dashboard",
        description="Subscribe to every device's telemetry, validate and store each message once, and serve "
                    "a JSON API and a dashboard. Runs until SIGINT or SIGTERM.")
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                        help="MQTT broker (default %(default)s)")
    parser.add_argument("--db", default="edgetune-server.db", metavar="URL|PATH",
                        help="database: a path or sqlite:///path.db (default %(default)s)")
    parser.add_argument("--http", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where to serve the API and dashboard; port 0 picks a free one (default %(default)s)")
    parser.add_argument("--token", default=None,
                        help=f"bearer token required by the API and dashboard (default: ${TOKEN_ENV}; "
                             "prefer the variable, a command line is visible to other users)")
    parser.add_argument("--client-id", default=None,
                        help="MQTT client id; fixed so that the broker queues messages while the server is down; "
                             "give each instance its own (default edgetune-server-<hostname>)")
    parser.add_argument("--shared", action="store_true",
                        help="MQTT v5 shared subscriptions, for several server instances splitting the load; "
                             "no broker session is kept, so when one dies the others take its share at once "
                             "(the devices resend what it had not acknowledged)")
    mqtt = parser.add_argument_group(
        "broker credentials and TLS", "for a locked broker such as deploy/broker/ (TLS on 8883, a user per client)")
    mqtt.add_argument("--mqtt-username", default=None, metavar="USER",
                      help="broker user name (deploy/broker/acl grants 'edgetune-server'); default: anonymous")
    mqtt.add_argument("--mqtt-password-file", default=None, metavar="PATH",
                      help="file whose first line is the broker password (keep it 0600); needs --mqtt-username")
    mqtt.add_argument("--mqtt-tls", action="store_true",
                      help="connect with TLS, checking the broker's certificate against the system's CAs")
    mqtt.add_argument("--mqtt-ca-file", default=None, metavar="PEM",
                      help="CA certificate(s) that signed the broker's certificate (implies TLS)")
    mqtt.add_argument("--mqtt-cert-file", default=None, metavar="PEM",
                      help="client certificate, for brokers that require one (implies TLS)")
    mqtt.add_argument("--mqtt-key-file", default=None, metavar="PEM", help="the client certificate's private key")
    parser.set_defaults(func=run)


def read_password_file(path: str) -> str:
    """The password on the first line of ``path``; :class:`UsageError` naming the file if there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--mqtt-password-file {path!r} cannot be read: {exc}") from None
    if not password:
        raise UsageError(f"--mqtt-password-file {path!r} has no password on its first line; expected the password")
    return password


def run(args: argparse.Namespace) -> int:
    """Start the server, wait for SIGINT/SIGTERM, stop it cleanly."""
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("paho.mqtt.client", "paho-mqtt")):
        try:
            __import__(module)
        except ImportError:
            raise missing_extra(package, "server") from None
    import signal
    import threading

    from .ingest_config import IngestConfig
    from .service import Server, ServerConfig

    broker_host, broker_port = parse_host_port(args.broker, "--broker")
    http_host, http_port = parse_host_port(args.http, "--http")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if args.mqtt_password_file is not None and args.mqtt_username is None:
        raise UsageError("--mqtt-password-file is given without --mqtt-username; expected both (or neither)")
    password = read_password_file(args.mqtt_password_file) if args.mqtt_password_file is not None else None
    config = ServerConfig(
        db=args.db, http_host=http_host, http_port=http_port, token=token,
        ingest=IngestConfig(host=broker_host, port=broker_port, client_id=args.client_id, shared=args.shared,
                            username=args.mqtt_username, password=password, tls=args.mqtt_tls,
                            tls_ca_file=args.mqtt_ca_file, tls_cert_file=args.mqtt_cert_file,
                            tls_key_file=args.mqtt_key_file),
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = Server(config)
    try:
        server.start()
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
