"""Telemetry storage: each (device, seq) stored once, a row per device, counters of rejects.

Tables (column types per database in :mod:`.db`):

- ``messages``: one row per valid envelope, primary key (device, seq); ``body`` is canonical
  JSON (sorted keys). A broker replay hits the key and changes nothing.
- ``devices``: one row per device: first/last ``observed_at`` seen (seconds since the epoch),
  message/event/duplicate counts, the last event, and the fields of the current status.
- ``rejects``: per reason, how many messages were refused and the last one's topic and error.
- ``head_shapes``: per (bundle id, head name), the embedding size D of the first head stored;
  a later head whose weight is [C][D'] with D' != D is refused (:class:`HeadShapeError`), since
  it cannot have been fitted on that bundle's embeddings.

The current status of a device is the status with the highest seq, except that an ``offline``
status is applied whenever it arrives new: a device's last will carries the seq reserved when it
connected, which is lower than what it sent after.

All methods are thread-safe: writes go through one connection under a lock, reads use a small
pool of connections (in SQLite's WAL mode readers never wait for the writer).

Ingest writes in batches (:meth:`Store.batch`): many :meth:`Store.add` calls in one transaction,
one commit and one fsync, each add inside its own savepoint so that one refused message rolls
back alone. Sequence numbers are contiguous per device, so :meth:`Store.gaps` (and the
``seq_first``, ``seq_last``, ``missing`` fields of :meth:`Store.device` and ``missing`` in
:meth:`Store.stats`) report how many numbers between a device's first and last stored message
are not stored: lost on the device's side (its outbox overflowed, or its state was wiped) or
still on their way.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import threading
from typing import Any, Iterator, Mapping

from edgetune.errors import EdgetuneError

from .db import Backend, open_backend

log = logging.getLogger(__name__)

#: Longest topic / error text kept for a reject, in characters.
MAX_REJECT_TOPIC_CHARS = 256
MAX_REJECT_ERROR_CHARS = 512
#: Idle read connections kept open for reuse.
READ_POOL_SIZE = 8

_DEVICE_COLUMNS = (
    "device", "first_seen", "last_seen", "last_received_at", "n_messages", "n_events", "n_duplicates",
    "state", "bundle_id", "bundle_version", "head_version", "provider", "software", "status_seq",
    "status_observed_at", "status_body", "last_event_seq", "last_event_at", "last_event_label",
    "last_event_score",
)
#: A device's first and last stored seq, as index lookups from a ``devices d`` row.
_SEQ_FIRST = "SELECT MIN(seq) FROM messages m WHERE m.device = d.device"
_SEQ_LAST = "SELECT MAX(seq) FROM messages m WHERE m.device = d.device"
#: The last wills announced (an online status with seq n reserves n + 1 for its will) and not
#: stored: the live connection's will is not a gap, it is sent when the connection ends.
_WILLS_DUE = ("SELECT COUNT(*) FROM expected_wills w WHERE w.device = d.device AND w.seq BETWEEN "
              f"({_SEQ_FIRST}) AND ({_SEQ_LAST}) AND NOT EXISTS "
              "(SELECT 1 FROM messages m WHERE m.device = w.device AND m.seq = w.seq)")
_MISSING = f"({_SEQ_LAST}) - ({_SEQ_FIRST}) + 1 - n_messages - ({_WILLS_DUE})"
_EXPECT_WILL = "INSERT INTO expected_wills (device, seq) VALUES (?, ?) ON CONFLICT (device, seq) DO NOTHING"
_STATUS_FIELDS = ("bundle_id", "bundle_version", "head_version", "provider", "software")

_INSERT_MESSAGE = (
    "INSERT INTO messages (device, seq, type, observed_at, received_at, topic, body) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, seq) DO NOTHING"
)
_UPSERT_DEVICE = (
    "INSERT INTO devices (device, first_seen, last_seen, last_received_at, n_messages, n_events) "
    "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (device) DO UPDATE SET "
    "first_seen = CASE WHEN excluded.first_seen < devices.first_seen "
    "THEN excluded.first_seen ELSE devices.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > devices.last_seen "
    "THEN excluded.last_seen ELSE devices.last_seen END, "
    "last_received_at = CASE WHEN excluded.last_received_at > devices.last_received_at "
    "THEN excluded.last_received_at ELSE devices.last_received_at END, "
    "n_messages = devices.n_messages + 1, "
    "n_events = devices.n_events + excluded.n_events"
)
_UPDATE_LAST_EVENT = (
    "UPDATE devices SET last_event_seq = ?, last_event_at = ?, last_event_label = ?, last_event_score = ? "
    "WHERE device = ? AND (last_event_seq IS NULL OR last_event_seq < ?)"
)
_SET_STATUS = (
    "UPDATE devices SET state = ?, bundle_id = ?, bundle_version = ?, head_version = ?, provider = ?, "
    "software = ?, status_seq = ?, status_observed_at = ?, status_body = ? WHERE device = ?"
)
_NEWER_STATUS = " AND (status_seq IS NULL OR status_seq < ?)"
_COUNT_DUPLICATE = "UPDATE devices SET n_duplicates = n_duplicates + 1 WHERE device = ?"
_FIND_MESSAGE = "SELECT type, observed_at, body FROM messages WHERE device = ? AND seq = ?"
_CLAIM_HEAD_SHAPE = (
    "INSERT INTO head_shapes (bundle_id, head, embedding_dim) VALUES (?, ?, ?) "
    "ON CONFLICT (bundle_id, head) DO NOTHING"
)
_FIND_HEAD_SHAPE = "SELECT embedding_dim FROM head_shapes WHERE bundle_id = ? AND head = ?"
_COUNT_REJECT = (
    "INSERT INTO rejects (reason, count, last_at, last_topic, last_error) VALUES (?, 1, ?, ?, ?) "
    "ON CONFLICT (reason) DO UPDATE SET count = rejects.count + 1, last_at = excluded.last_at, "
    "last_topic = excluded.last_topic, last_error = excluded.last_error"
)


class StoreError(EdgetuneError):
    """The database refused a read or a write (locked, full, gone); the message was not stored."""


class HeadShapeError(EdgetuneError):
    """A head message's embedding size differs from the one this bundle's head has (nothing stored)."""


class Outcome(str, enum.Enum):
    """What :meth:`Store.add` did with a message."""

    #: New (device, seq): stored.
    STORED = "stored"
    #: Seen before with the same content (a broker or outbox replay): nothing changed.
    DUPLICATE = "duplicate"
    #: Seen before with *different* content: the device reused a seq. Nothing changed.
    CONFLICT = "conflict"


def canonical_json(value: Any) -> str:
    """The JSON text stored for a body: sorted keys, no spaces, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class Store:
    """Idempotent telemetry storage over a :class:`~edgetune.server.db.Backend`.

    Open with :meth:`open` (a URL or a path); close with :meth:`close` or a ``with`` block.
    Every database failure is raised as :class:`StoreError`.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._write_lock = threading.RLock()  # re-entered by add() inside batch()
        self._batch_depth = 0  # > 0 while batch() holds a transaction open (guarded by _write_lock)
        self._pool_lock = threading.Lock()
        self._pool: list[Any] = []
        self._closed = False
        self._writer = backend.connect()
        try:
            for statement in backend.schema():
                self._writer.execute(statement)
        except backend.error as exc:
            self._writer.close()
            raise StoreError(f"cannot create the schema in {backend.name} database {backend.where!r}: {exc}") from exc
        log.info("store: %s database %s", backend.name, backend.where)

    @classmethod
    def open(cls, url: str, busy_timeout_ms: int = 5000) -> "Store":
        """Open (creating if needed) the database at ``url``; see :mod:`.db` for the URL forms.

        ``busy_timeout_ms``: how long a write waits for a lock held by another process, in ms.
        """
        return cls(open_backend(url, busy_timeout_ms=busy_timeout_ms))

    @property
    def where(self) -> str:
        """Where the data lives (a path), for logs."""
        return self._backend.where

    def close(self) -> None:
        """Close every connection; further calls raise :class:`StoreError`."""
        with self._write_lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            for conn in [self._writer, *self._pool]:
                with contextlib.suppress(self._backend.error):
                    conn.close()
            self._pool.clear()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------

    def add(self, msg: Mapping[str, Any], topic: str, received_at: float) -> Outcome:
        """Store one *validated* envelope (see ``edgetune.contract.messages``) in one transaction.

        ``topic``: the MQTT topic it came on; ``received_at``: the server's clock when it arrived,
        seconds since the epoch. Returns whether it was new; never stores a (device, seq) twice.

        Raises:
            HeadShapeError: a new ``head`` message whose embedding size D (the length of its
                weight rows) is not the D of the heads already stored for its bundle and head
                name; the transaction is rolled back, nothing is stored.
            StoreError: the database failed.
        """
        device, seq, type_, body = msg["device"], msg["seq"], msg["type"], msg["body"]
        observed_at = float(msg["observed_at"])
        body_json = canonical_json(body)
        with self._transaction() as conn:
            cur = conn.execute(self._sql(_INSERT_MESSAGE),
                               (device, seq, type_, observed_at, received_at, topic, body_json))
            if cur.rowcount == 0:
                conn.execute(self._sql(_COUNT_DUPLICATE), (device,))
                row = conn.execute(self._sql(_FIND_MESSAGE), (device, seq)).fetchone()
                same = row is not None and (row[0], float(row[1]), row[2]) == (type_, observed_at, body_json)
                return Outcome.DUPLICATE if same else Outcome.CONFLICT
            if type_ == "head":
                self._check_head_shape(conn, body)
            is_event = type_ == "event"
            conn.execute(self._sql(_UPSERT_DEVICE), (device, observed_at, observed_at, received_at, int(is_event)))
            if is_event:
                conn.execute(self._sql(_UPDATE_LAST_EVENT),
                             (seq, observed_at, body["label"], body["score"], device, seq))
            elif type_ == "status":
                query, params = _SET_STATUS, [body["state"], *(body.get(f) for f in _STATUS_FIELDS),
                                              seq, observed_at, body_json, device]
                if body["state"] != "offline":
                    query, params = query + _NEWER_STATUS, params + [seq]
                conn.execute(self._sql(query), params)
            return Outcome.STORED

    def _check_head_shape(self, conn: Any, body: Mapping[str, Any]) -> None:
        """Record the first head's D for (bundle_id, head), or raise HeadShapeError if this one differs."""
        key, dim = (body["bundle_id"], body["head"]), len(body["weight"][0])
        conn.execute(self._sql(_CLAIM_HEAD_SHAPE), (*key, dim))
        row = conn.execute(self._sql(_FIND_HEAD_SHAPE), key).fetchone()
        if row is not None and row[0] != dim:
            raise HeadShapeError(
                f"head {key[1]!r} of bundle {key[0]!r} has weight rows of {dim} numbers; expected {row[0]}, "
                "the embedding size of the heads already stored for that bundle and head")

    def count_reject(self, reason: str, topic: str, error: str, at: float) -> None:
        """Count one refused message under ``reason``; ``at``: seconds since the epoch."""
        with self._transaction() as conn:
            conn.execute(self._sql(_COUNT_REJECT),
                         (reason, at, topic[:MAX_REJECT_TOPIC_CHARS], error[:MAX_REJECT_ERROR_CHARS]))

    # -- reads ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers a trivial query."""
        self._query("SELECT 1", ())

    def devices(self) -> list[dict[str, Any]]:
        """Every device, ordered by id, as :meth:`device` returns them (without ``status``)."""
        rows = self._query(f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices ORDER BY device", ())
        return [_device_dict(row, with_status=False) for row in rows]

    def device(self, device: str) -> dict[str, Any] | None:
        """One device's row, with its current status body; ``None`` if it never sent anything valid.

        Times (``first_seen``, ``last_seen``: device clock; ``last_received_at``: server clock) are
        seconds since the epoch.
        """
        rows = self._query(f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices WHERE device = ?", (device,))
        if not rows:
            return None
        return {**_device_dict(rows[0], with_status=True), **(self.gaps(device) or {})}

    def messages(self, type_: str, device: str | None = None, limit: int = 50,
                 after_seq: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` messages of ``type_``, newest first.

        With ``device``: that device's, ordered by seq, and only seq > ``after_seq`` if given.
        Without: all devices', ordered by ``observed_at``. Each item: device, seq, type,
        observed_at, received_at (seconds since the epoch), topic, body.
        """
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit is {limit!r}; expected an integer >= 1")
        where, params = ["type = ?"], [type_]
        if device is not None:
            where.append("device = ?")
            params.append(device)
        if after_seq is not None:
            where.append("seq > ?")
            params.append(after_seq)
        order = "seq DESC" if device is not None else "observed_at DESC, device, seq DESC"
        rows = self._query(
            "SELECT device, seq, type, observed_at, received_at, topic, body FROM messages "
            f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?", (*params, limit))
        keys = ("device", "seq", "type", "observed_at", "received_at", "topic", "body")
        return [dict(zip(keys, (*row[:6], json.loads(row[6])))) for row in rows]

    def events(self, device: str | None = None, limit: int = 50, after_seq: int | None = None) -> list[dict[str, Any]]:
        """Detections, newest first; see :meth:`messages`."""
        return self.messages("event", device=device, limit=limit, after_seq=after_seq)

    def metrics(self, device: str, limit: int = 100) -> list[dict[str, Any]]:
        """A device's newest ``limit`` metrics messages, *oldest first* (ready to chart)."""
        return self.messages("metrics", device=device, limit=limit)[::-1]

    def gaps(self, device: str) -> dict[str, int] | None:
        """``{"seq_first", "seq_last", "missing"}`` for ``device``, or None if nothing is stored.

        ``missing``: sequence numbers between its first and last stored message that are not
        stored (each device numbers its messages contiguously; see the module docstring).
        """
        rows = self._query(f"SELECT ({_SEQ_FIRST}), ({_SEQ_LAST}), {_MISSING} FROM devices d WHERE device = ?",
                           (device,))
        if not rows or rows[0][0] is None:
            return None
        first, last, missing = rows[0]
        return {"seq_first": first, "seq_last": last, "missing": missing}

    def expect_will(self, device: str, seq: int) -> None:
        """Record that ``device`` reserved ``seq`` for a last will (the seq after an online
        status), so that until the will arrives :meth:`gaps` does not count it as missing."""
        with self._transaction() as conn:
            conn.execute(self._sql(_EXPECT_WILL), (device, seq))

    def stats(self) -> dict[str, Any]:
        """Totals across every server that shares this database.

        ``stored``: messages per type; ``stored_total``; ``devices``; ``duplicates``: deliveries of
        an already stored (device, seq), ignored; ``rejected``: reason -> count; ``rejects``:
        reason -> {count, last_at (seconds since the epoch), last_topic, last_error}; ``missing``:
        sequence numbers not stored between each device's first and last (see :meth:`gaps`).
        """
        stored = dict(self._query("SELECT type, COUNT(*) FROM messages GROUP BY type ORDER BY type", ()))
        n_devices, duplicates = self._query("SELECT COUNT(*), COALESCE(SUM(n_duplicates), 0) FROM devices", ())[0]
        missing = self._query(f"SELECT COALESCE(SUM({_MISSING}), 0) FROM devices d", ())[0][0]
        rejects = {
            reason: {"count": count, "last_at": last_at, "last_topic": topic, "last_error": error}
            for reason, count, last_at, topic, error in self._query(
                "SELECT reason, count, last_at, last_topic, last_error FROM rejects ORDER BY reason", ())
        }
        return {
            "stored": stored,
            "stored_total": sum(stored.values()),
            "devices": n_devices,
            "duplicates": duplicates,
            "missing": missing,
            "rejected": {reason: r["count"] for reason, r in rejects.items()},
            "rejects": rejects,
        }

    # -- plumbing ------------------------------------------------------------------------------

    def _sql(self, query: str) -> str:
        return self._backend.sql(query)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run the writes made inside (by this thread) in one transaction: one commit, one fsync.

        Each write inside still succeeds or fails alone (a savepoint each); a database failure
        anywhere, the commit included, rolls the whole batch back and raises :class:`StoreError`,
        so the caller retries the batch and nothing is half stored. Other threads' writes wait.
        """
        with self._write_lock:
            if self._batch_depth:
                yield
                return
            with self._transaction() as _conn:
                self._batch_depth = 1
                try:
                    yield
                finally:
                    self._batch_depth = 0

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """The writer connection inside BEGIN … COMMIT; rolled back and raised as StoreError on failure.

        Inside :meth:`batch`, a savepoint of the batch's transaction instead.
        """
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._writer
            nested = self._batch_depth > 0
            begin, commit = ("SAVEPOINT one", "RELEASE one") if nested else (self._backend.begin_write, "COMMIT")
            rollback = ("ROLLBACK TO one", "RELEASE one") if nested else ("ROLLBACK",)
            try:
                conn.execute(begin)
            except self._backend.error as exc:
                raise StoreError(f"{self._backend.name} database {self.where!r}: {exc}") from exc
            try:
                yield conn
                conn.execute(commit)
            except self._backend.error as exc:
                with contextlib.suppress(self._backend.error):
                    for statement in rollback:
                        conn.execute(statement)
                raise StoreError(f"{self._backend.name} database {self.where!r}: {exc}") from exc
            except BaseException:
                with contextlib.suppress(self._backend.error):
                    for statement in rollback:
                        conn.execute(statement)
                raise

    def _query(self, query: str, params: tuple[Any, ...] | list[Any]) -> list[tuple[Any, ...]]:
        conn = self._borrow()
        try:
            rows = conn.execute(self._sql(query), tuple(params)).fetchall()
        except self._backend.error as exc:
            with contextlib.suppress(self._backend.error):
                conn.close()
            raise StoreError(f"{self._backend.name} database {self.where!r}: {exc}") from exc
        self._give_back(conn)
        return rows

    def _borrow(self) -> Any:
        with self._pool_lock:
            if self._closed:
                raise StoreError("the store is closed")
            if self._pool:
                return self._pool.pop()
        try:
            return self._backend.connect()
        except EdgetuneError as exc:
            raise StoreError(str(exc)) from exc

    def _give_back(self, conn: Any) -> None:
        with self._pool_lock:
            if not self._closed and len(self._pool) < READ_POOL_SIZE:
                self._pool.append(conn)
                return
        with contextlib.suppress(self._backend.error):
            conn.close()


def _device_dict(row: tuple[Any, ...], with_status: bool) -> dict[str, Any]:
    r = dict(zip(_DEVICE_COLUMNS, row))
    out: dict[str, Any] = {
        "device": r["device"],
        "state": r["state"],
        "first_seen": r["first_seen"],
        "last_seen": r["last_seen"],
        "last_received_at": r["last_received_at"],
        "messages": r["n_messages"],
        "events": r["n_events"],
        "duplicates": r["n_duplicates"],
        **{f: r[f] for f in _STATUS_FIELDS},
        "status_seq": r["status_seq"],
        "status_observed_at": r["status_observed_at"],
        "last_event": None if r["last_event_seq"] is None else {
            "seq": r["last_event_seq"], "observed_at": r["last_event_at"],
            "label": r["last_event_label"], "score": r["last_event_score"],
        },
    }
    if with_status:
        out["status"] = None if r["status_body"] is None else json.loads(r["status_body"])
    return out
