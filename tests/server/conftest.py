"""Fixtures for the server's tests: a real Mosquitto, a real SQLite file, a real server."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.telemetry import Publisher

from edgetune.localbroker import LocalBroker
from edgetune.server.ingest import IngestConfig
from edgetune.server.service import Server, ServerConfig
from edgetune.server.store import Store

_client_ids = itertools.count()


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[Publisher]:
    """A device-like QoS 1 publisher connected to ``broker``."""
    with Publisher(broker.host, broker.port) as p:
        yield p


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "server.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """A real SQLite store in a temporary file."""
    with Store.open(str(db_path)) as s:
        yield s


@pytest.fixture
def make_server(broker: LocalBroker, db_path: Path) -> Iterator[Callable[..., Server]]:
    """``make_server(**overrides)`` -> an unstarted Server on ``broker`` and ``db_path``, HTTP on a free port.

    Every server made here is stopped at the end of the test. Overrides are ServerConfig fields,
    plus ``client_id``/``shared``/``store_retry_s`` for the ingest config. ``shared`` left as None
    keeps IngestConfig's default (plain subscriptions), so the tests run what a user runs.
    """
    made: list[Server] = []

    def factory(client_id: str | None = None, shared: bool | None = None, store_retry_s: float = 0.5,
                **overrides: object) -> Server:
        subscriptions = {} if shared is None else {"shared": shared}
        ingest = IngestConfig(host=broker.host, port=broker.port, store_retry_s=store_retry_s,
                              client_id=client_id or f"test-server-{next(_client_ids)}", **subscriptions)
        server = Server(ServerConfig(**{"db": str(db_path), "http_port": 0, "ingest": ingest, **overrides}))
        made.append(server)
        return server

    yield factory
    for server in made:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """A started server, subscribed to the broker."""
    s = make_server()
    s.start()
    assert s.wait_subscribed(5.0), "server did not subscribe"
    return s
