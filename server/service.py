"""The server as one object: store + MQTT ingest + HTTP (uvicorn in a thread).

Used in-process by the demo and by ``edgetune server``::

    server = Server(ServerConfig(db="fleet.db", http_port=0, ingest=IngestConfig(port=1883)))
    server.start()          # raises UsageError if the database or the HTTP port cannot be used
    print(server.url)       # http://127.0.0.1:<the port actually bound>
    ...
    server.stop()

The broker may be down at start: ingest keeps retrying in the background and ``/api/health``
says so.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgetune.errors import UsageError

from .ingest import Ingest, IngestConfig, IngestCounters
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Everything a :class:`Server` needs; validated on construction."""

    #: A database URL or path (see :mod:`edgetune.server.db`).
    db: str = "edgetune-server.db"
    http_host: str = "127.0.0.1"
    #: 0: any free port (see :attr:`Server.http_port`).
    http_port: int = 8080
    #: Bearer token required by the API and the dashboard; ``None``: open (logged as a warning).
    token: str | None = None
    ingest: IngestConfig = field(default_factory=IngestConfig)
    #: How long a write waits for a lock held by another process, in milliseconds.
    busy_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if not self.http_host:
            raise UsageError("HTTP host is empty; expected an address such as '127.0.0.1' or '0.0.0.0'")
        if not 0 <= self.http_port < 65536:
            raise UsageError(f"HTTP port is {self.http_port}; expected 0-65535 (0: any free port)")
        if self.token is not None and (not self.token.strip() or self.token != self.token.strip()):
            raise UsageError("the token is empty or has surrounding spaces; expected a non-empty secret")


class Server:
    """Store, ingest and HTTP API wired together; ``start()`` / ``stop()``, or use as a context manager."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self._store: Store | None = None
        self._ingest: Ingest | None = None
        self._http: HttpServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, wait_s: float = 10.0) -> None:
        """Open the database, listen on HTTP, connect to the broker.

        Waits up to ``wait_s`` seconds for the HTTP server and for the broker subscriptions; a
        broker that is not there yet is logged and retried in the background. Raises
        :class:`UsageError` if the database or the HTTP address cannot be used.
        """
        if self._store is not None:
            raise RuntimeError("server already started")
        from .api import create_app

        cfg = self.config
        deadline = time.monotonic() + wait_s
        try:
            self._store = Store.open(cfg.db, busy_timeout_ms=cfg.busy_timeout_ms)
            self._ingest = Ingest(self._store, cfg.ingest)
            self._http = HttpServer(create_app(self._store, token=cfg.token, health=self._health),
                                    cfg.http_host, cfg.http_port)
            self._http.start(wait_s)
            self._ingest.start()
        except BaseException:
            self.stop()
            raise
        if cfg.token is None:
            log.warning("no token set: the API and dashboard at %s are open to anyone who can reach them; "
                        "set --token or EDGETUNE_SERVER_TOKEN", self.url)
        log.info("dashboard and API at %s (database %s)", self.url, self._store.where)
        if not self._ingest.wait_subscribed(max(0.0, deadline - time.monotonic())):
            log.warning("not connected to the broker at mqtt://%s:%d yet; still trying", cfg.ingest.host,
                        cfg.ingest.port)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop ingest (the broker keeps our session), then HTTP, then close the database."""
        if self._ingest is not None:
            self._ingest.stop()
            self._ingest = None
        if self._http is not None:
            self._http.stop(timeout_s)
            self._http = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """The TCP port actually bound (useful with ``http_port=0``)."""
        if self._http is None:
            raise RuntimeError("server not started")
        return self._http.port

    @property
    def url(self) -> str:
        """``http://host:port/`` of the dashboard; the API is under ``api/``."""
        if self._http is None:
            raise RuntimeError("server not started")
        return self._http.url

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("server not started")
        return self._store

    @property
    def counters(self) -> IngestCounters:
        """This process's ingest counters (see :class:`~edgetune.server.ingest.IngestCounters`)."""
        if self._ingest is None:
            raise RuntimeError("server not started")
        return self._ingest.counters

    @property
    def subscribed(self) -> bool:
        """Connected to the broker with the subscriptions in place."""
        return self._ingest is not None and self._ingest.subscribed

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the broker subscriptions."""
        return self._ingest is not None and self._ingest.wait_subscribed(timeout_s)

    def _health(self) -> dict[str, Any]:
        ingest = self._ingest
        if ingest is None:
            return {"ok": False, "broker": None, "counters": None}
        counters = ingest.counters
        cfg = ingest.config
        return {
            "ok": counters.subscribed and not counters.store_failing,
            "broker": {"host": cfg.host, "port": cfg.port, "client_id": cfg.resolved_client_id,
                       "shared": cfg.shared, "session_expiry_s": cfg.resolved_session_expiry_s,
                       "subscribed": counters.subscribed},
            "counters": counters.as_dict(),
        }


class HttpServer:
    """uvicorn serving an ASGI app from a background thread, on a socket bound here (port 0 allowed)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self._sock = _listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, wait_s: float = 10.0) -> None:
        """Serve in a thread; return once it accepts requests; UsageError if it does not within ``wait_s`` s."""
        import uvicorn

        # log_config=None: log through the application's handlers. No access log: the
        # dashboard's first request may carry ?token= in its query string.
        self._server = uvicorn.Server(uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off",
                                                     server_header=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"edgetune-http-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise UsageError(f"the HTTP server did not start on {self.host}:{self.port}; see the log")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to finish and wait up to ``timeout_s`` s; closes the socket."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the HTTP server did not stop within %.1f s", timeout_s)
        self._server = self._thread = None
        self._sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), ready for uvicorn; UsageError if that is impossible."""
    try:
        family, type_, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, type_, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc}; is another server using it? "
                         "(choose another with --http HOST:PORT)") from None
    return sock
