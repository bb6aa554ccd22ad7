"""Database URLs and backends: everything that differs between SQL databases lives here.

:class:`~edgetune.server.store.Store` writes portable SQL (``?`` placeholders,
``INSERT … ON CONFLICT … DO NOTHING / DO UPDATE``, ``CASE``, no driver-specific functions) and asks
its :class:`Backend` for the rest: how to connect, the schema's column types, the placeholder
style and the driver's base exception. SQLite is the only backend today; PostgreSQL is added by
writing one more :class:`Backend` and one more branch in :func:`open_backend`.

URLs::

    sqlite:///relative/path.db     (three slashes: a path relative to the working directory)
    sqlite:////abs/path.db         (four slashes: an absolute path)
    path/to.db                     (a plain path)
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Protocol

from edgetune.errors import UsageError

SQLITE_PREFIX = "sqlite:///"


class Backend(Protocol):
    """What :class:`~edgetune.server.store.Store` needs from a database."""

    #: A short name for logs and ``/api/health`` ("sqlite").
    name: str
    #: Where the data lives, for logs (a path; never a password).
    where: str
    #: The driver's base exception; the store turns it into ``StoreError``.
    error: type[Exception]
    #: The statement that opens a write transaction.
    begin_write: str

    def connect(self) -> Any:
        """A new DB-API connection, configured, outside any transaction."""

    def schema(self) -> list[str]:
        """``CREATE TABLE/INDEX IF NOT EXISTS`` statements for this database's types."""

    def sql(self, query: str) -> str:
        """Rewrite a portable query (``?`` placeholders) for this driver."""


# Column types by role, so one schema text serves every backend.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    device       {text} NOT NULL,
    seq          {int64} NOT NULL,
    type         {text} NOT NULL,
    observed_at  {real} NOT NULL,
    received_at  {real} NOT NULL,
    topic        {text} NOT NULL,
    body         {text} NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX IF NOT EXISTS messages_device_type_seq ON messages (device, type, seq);
CREATE INDEX IF NOT EXISTS messages_type_observed ON messages (type, observed_at);
CREATE TABLE IF NOT EXISTS devices (
    device             {text} PRIMARY KEY,
    first_seen         {real} NOT NULL,
    last_seen          {real} NOT NULL,
    last_received_at   {real} NOT NULL,
    n_messages         {int64} NOT NULL DEFAULT 0,
    n_events           {int64} NOT NULL DEFAULT 0,
    n_duplicates       {int64} NOT NULL DEFAULT 0,
    state              {text},
    bundle_id          {text},
    bundle_version     {text},
    head_version       {int64},
    provider           {text},
    software           {text},
    status_seq         {int64},
    status_observed_at {real},
    status_body        {text},
    last_event_seq     {int64},
    last_event_at      {real},
    last_event_label   {text},
    last_event_score   {real}
);
CREATE TABLE IF NOT EXISTS expected_wills (
    device       {text} NOT NULL,
    seq          {int64} NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS rejects (
    reason       {text} PRIMARY KEY,
    count        {int64} NOT NULL,
    last_at      {real} NOT NULL,
    last_topic   {text} NOT NULL,
    last_error   {text} NOT NULL
);
CREATE TABLE IF NOT EXISTS head_shapes (
    bundle_id      {text} NOT NULL,
    head           {text} NOT NULL,
    embedding_dim  {int64} NOT NULL,
    PRIMARY KEY (bundle_id, head)
);
"""


def schema_statements(types: dict[str, str]) -> list[str]:
    """The schema with ``types`` (keys text, int64, real) filled in, one statement per item."""
    return [s.strip() for s in _SCHEMA.format(**types).split(";") if s.strip()]


@dataclass(frozen=True)
class SqliteBackend:
    """SQLite in WAL mode: readers never block the writer; one connection per thread.

    ``synchronous=FULL``: a message is acknowledged to the broker only after its transaction is
    on disk, so a power cut cannot lose what the broker already forgot.
    """

    path: str
    busy_timeout_ms: int = 5000

    name = "sqlite"
    error = sqlite3.Error
    # Take the write lock up front, so two writers never deadlock upgrading a read lock.
    begin_write = "BEGIN IMMEDIATE"

    @property
    def where(self) -> str:
        return self.path

    def connect(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False: the store hands a connection to one thread at a time.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the SQLite database {self.path!r}: {exc}") from None
        return conn

    def schema(self) -> list[str]:
        return schema_statements({"text": "TEXT", "int64": "INTEGER", "real": "REAL"})

    def sql(self, query: str) -> str:
        return query


def open_backend(url: str, busy_timeout_ms: int = 5000) -> Backend:
    """The backend for ``url`` (see the module docstring); :class:`UsageError` if it cannot be used."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"database {url!r} is empty; expected a path or a URL such as 'sqlite:///edgetune-server.db'")
    if url.startswith(("postgresql://", "postgres://")):
        raise UsageError("PostgreSQL is not supported yet; use a SQLite path such as 'sqlite:///edgetune-server.db'")
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX):]
    elif "://" in url:
        raise UsageError(f"database URL {url!r} has an unknown scheme; expected 'sqlite:///path/to.db' or a plain path")
    else:
        path = url
    if not path or path == ":memory:" or path.startswith("file:"):
        raise UsageError(f"database {url!r} is not a file path; expected e.g. 'sqlite:///edgetune-server.db' "
                         "(an in-memory database cannot be shared between the ingest and HTTP threads)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"database {path!r}: folder {parent!r} does not exist; create it first")
    if busy_timeout_ms < 0:
        raise UsageError(f"busy_timeout_ms is {busy_timeout_ms}; expected an integer >= 0")
    return SqliteBackend(path=path, busy_timeout_ms=busy_timeout_ms)
