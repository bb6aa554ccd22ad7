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
                        help="MQTT v5 shared subscriptions, for several server instances splitting the load "
                             "(with Mosquitto 2.0.11 they do not survive a broker restart: see the README)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the server, wait for SIGINT/SIGTERM, stop it cleanly."""
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("paho.mqtt.client", "paho-mqtt")):
        try:
            __import__(module)
        except ImportError:
            raise missing_extra(package, "server") from None
    import signal
    import threading

    from .ingest import IngestConfig
    from .service import Server, ServerConfig

    broker_host, broker_port = parse_host_port(args.broker, "--broker")
    http_host, http_port = parse_host_port(args.http, "--http")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    config = ServerConfig(
        db=args.db, http_host=http_host, http_port=http_port, token=token,
        ingest=IngestConfig(host=broker_host, port=broker_port, client_id=args.client_id, shared=args.shared),
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
