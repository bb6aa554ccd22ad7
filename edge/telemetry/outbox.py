"""A disk-backed outbox and the device's sequence counter, in one SQLite file.

Every telemetry message goes through :meth:`Outbox.put` before it goes near the network: one
transaction takes the next sequence number, validates and encodes the envelope and stores it.
The publisher then sends what is pending and deletes a message only when the *server* says it
has stored it (:meth:`Outbox.ack_ranges`, fed by the server's end-to-end acknowledgements, see
:mod:`edgetune.contract.acks`), never on the broker's PUBACK. A device can stay offline for
hours; the outbox is bounded by ``max_messages`` and an overflow policy whose drops are counted,
never silent.

Durability, and why the writes differ (commits are batched: one fsync covers many messages):

- ``put`` commits with ``PRAGMA synchronous=NORMAL``: the message is in the WAL (the operating
  system has it) when ``put`` returns, so a process crash or ``kill -9`` loses nothing, and a
  put costs a write, not an fsync.
- :meth:`Outbox.sync` fsyncs the WAL (a ``synchronous=FULL`` commit), which makes every earlier
  ``put`` survive a power cut. The publisher calls it before it hands any message to the
  network, and at least every second while there are unsynced puts. So a power cut can lose at
  most the last second of observations, and never one that was sent: if a power cut rolled the
  counter back over a message the server had already stored, the next message would reuse its
  sequence number and the server (which stores each ``(device, seq)`` once) would discard it.
- :meth:`Outbox.reserve_seqs` (numbers for status messages sent outside the outbox, the last
  will among them) commits with ``synchronous=FULL``: the broker may publish a will on our
  behalf at any time.
- acknowledgements commit with ``synchronous=NORMAL``: losing one to a power cut only means the
  message is sent again, and the server drops the duplicate (and acknowledges it again).

A process crash (as opposed to a power cut) loses nothing that ``put`` returned.

The first sequence number of a new file is the wall clock in microseconds (unless
``first_seq`` is given), so a device whose state directory was wiped still numbers its messages
above everything it sent before, as long as its clock is right and it sent fewer than a million
messages a second on average. Later numbers come from the file, never from the clock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgetune.errors import EdgetuneError, UsageError

from edgetune.contract import messages
from edgetune.contract.errors import ContractError
from edgetune.contract.topics import check_device_id, device_topic

logger = logging.getLogger(__name__)

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")
#: Bumped when the file layout changes; a file from a newer layout is refused, not guessed at.
LAYOUT_VERSION = 1
_MAX_SEQ = 2**63 - 1
#: 2020-01-01 in seconds: a clock earlier than this has not been set (no RTC, no NTP yet).
_CLOCK_PLAUSIBLE_S = 1_577_836_800


def _encode_validated(envelope: dict[str, Any]) -> bytes:
    """``messages.encode`` for an envelope ``messages.make`` has just validated, without validating
    it a second time (half the cost of a put): the same compact JSON and the same size limit."""
    payload = json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > messages.MAX_PAYLOAD_BYTES:
        raise ContractError(f"message is {len(payload)} bytes; expected at most {messages.MAX_PAYLOAD_BYTES}")
    return payload


class OutboxError(EdgetuneError):
    """The outbox file cannot be read or written (disk full, I/O error, corrupt file)."""


@dataclass(frozen=True)
class PendingMessage:
    """A stored message waiting for the server's acknowledgement."""

    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class OutboxCounts:
    """Counters kept in the file, so they survive restarts.

    - ``pending``: messages stored and not yet acknowledged by the server.
    - ``dropped_overflow``: messages dropped by the overflow policy since the file was created.
    - ``sent``: messages the server acknowledged as stored (and deleted) since the file was created.
    - ``next_seq``: the sequence number the next message will take.
    """

    pending: int
    dropped_overflow: int
    sent: int
    next_seq: int

    def as_counters(self) -> dict[str, int]:
        """The counters as a ``metrics`` body ``outbox`` object (name -> integer >= 0)."""
        return {"pending": self.pending, "dropped_overflow": self.dropped_overflow, "sent": self.sent}


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    # stored_at: seconds since the Unix epoch, when the message entered the outbox.
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
    "payload BLOB NOT NULL, stored_at REAL NOT NULL)",
)


class Outbox:
    """Pending telemetry messages and the per-device sequence counter, in one SQLite file.

    Args:
        path: the SQLite file (created with its parent directories if missing).
        device_id: the device these messages come from; a file belongs to one device.
        max_messages: most messages kept pending; beyond it ``overflow`` applies.
        overflow: ``"drop_oldest"`` (keep the newest observations) or ``"drop_newest"``
            (keep the oldest; new ones are refused). Either way the drop is counted.
        first_seq: the first sequence number of a *new* file; ``None`` uses the wall clock in
            microseconds (see the module docstring). Ignored for an existing file.

    Thread-safe: one connection guarded by a lock, so the MQTT network thread may
    :meth:`ack` while the main thread calls :meth:`put`. Several processes may share the file;
    each transaction takes SQLite's write lock, so sequence numbers stay unique.
    """

    def __init__(
        self,
        path: str | Path,
        device_id: str,
        *,
        max_messages: int = 100_000,
        overflow: str = "drop_oldest",
        first_seq: int | None = None,
    ) -> None:
        try:
            self.device_id = check_device_id(device_id)
        except ContractError as exc:
            raise UsageError(str(exc)) from None
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise UsageError(f"outbox max_messages is {max_messages!r}; expected an integer >= 1")
        if overflow not in OVERFLOW_POLICIES:
            raise UsageError(f"outbox overflow is {overflow!r}; expected one of {list(OVERFLOW_POLICIES)}")
        if first_seq is not None and (isinstance(first_seq, bool) or not isinstance(first_seq, int)
                                      or not 0 <= first_seq < _MAX_SEQ):
            raise UsageError(f"outbox first_seq is {first_seq!r}; expected an integer in [0, 2**63 - 1)")
        self.path = Path(path)
        self.max_messages = max_messages
        self.overflow = overflow
        self._lock = threading.Lock()
        self._unsynced = False  # a put committed since the last fsync (see sync())
        self._durable: bool | None = None  # the connection's synchronous mode: FULL (True) or NORMAL
        self._synced_through = -1  # every seq up to this one is fsynced (see sync()), as far as we know
        self._topics = {kind: device_topic(self.device_id, kind) for kind in messages.TYPE_FOR_KIND}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the outbox directory {self.path.parent}: {exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the outbox {self.path}: {exc}") from None
        try:
            self._open(first_seq)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise UsageError(
                f"{self.path} is not a readable edgetune outbox ({exc}); move it away to start a new one"
            ) from None
        except UsageError:
            self._db.close()
            raise

    # -- set-up ---------------------------------------------------------------------------

    def _open(self, first_seq: int | None) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > LAYOUT_VERSION:
                raise UsageError(
                    f"outbox {self.path} has layout version {version}; this edgetune reads up to "
                    f"{LAYOUT_VERSION} (was it written by a newer edgetune?)"
                )
            for statement in _SCHEMA:
                db.execute(statement)
            stored = db.execute("SELECT value FROM meta WHERE key = 'device'").fetchone()
            if stored is None:
                start = first_seq if first_seq is not None else self._clock_seq()
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("device", self.device_id), ("next_seq", start), ("pending", 0),
                     ("dropped_overflow", 0), ("sent", 0)],
                )
                db.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
                logger.info("created outbox %s for device %s, first seq %d", self.path, self.device_id, start)
            elif stored[0] != self.device_id:
                raise UsageError(
                    f"outbox {self.path} belongs to device {stored[0]!r}, not {self.device_id!r}; "
                    "give each device its own state directory"
                )
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @staticmethod
    def _clock_seq() -> int:
        now = time.time()
        if now < _CLOCK_PLAUSIBLE_S:
            logger.warning(
                "the clock says %s, which is not set; the outbox's sequence numbers start low, and a "
                "server that stored this device's earlier messages may drop new ones as duplicates",
                time.strftime("%Y-%m-%d", time.gmtime(now)),
            )
        return int(now * 1_000_000)

    # -- writes ---------------------------------------------------------------------------

    def put(self, type_: str, body: Mapping[str, Any], observed_at: float) -> dict[str, Any] | None:
        """Take the next sequence number, build and store one message, in one transaction.

        Args:
            type_: ``"event"``, ``"metrics"``, ``"status"`` or ``"head"``.
            body: the message body (see :mod:`edgetune.contract.messages`).
            observed_at: when it was observed, seconds since the Unix epoch (UTC).

        Returns:
            The envelope, or ``None`` when the outbox was full under ``"drop_newest"`` (the
            message took a sequence number and was counted in ``dropped_overflow``, so the gap
            the server sees is explained).

        Raises:
            ContractError: the body or type is invalid (nothing is stored, no number is taken).
            OutboxError: the file could not be written.
        """
        if type_ not in messages.KIND_FOR_TYPE:
            raise ContractError(f"message type is {type_!r}; expected one of {list(messages.KIND_FOR_TYPE)}")
        topic = self._topics[messages.KIND_FOR_TYPE[type_]]
        with self._lock:
            self._begin(durable=False)
            try:
                seq = self._take_seqs(1)
                envelope = messages.make(self.device_id, seq, observed_at, type_, body)
                payload = _encode_validated(envelope)
                pending = self._meta("pending")
                stored: dict[str, Any] | None = envelope
                if pending >= self.max_messages:
                    if self.overflow == "drop_oldest":
                        dropped = self._db.execute(
                            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                            (pending - self.max_messages + 1,),
                        ).rowcount
                        pending -= dropped
                    else:
                        dropped, stored = 1, None
                    self._add_meta("dropped_overflow", dropped)
                if stored is not None:
                    self._db.execute(
                        "INSERT INTO outbox (seq, topic, payload, stored_at) VALUES (?, ?, ?, ?)",
                        (seq, topic, payload, time.time()),
                    )
                    pending += 1
                self._set_meta("pending", pending)
                self._db.execute("COMMIT")
                self._unsynced = True
            except BaseException:
                self._rollback()
                raise
        if stored is None:
            logger.debug("outbox full (%d messages): dropped new message seq %d", self.max_messages, seq)
        return stored

    def reserve_seqs(self, n: int = 1) -> int:
        """Take ``n`` consecutive sequence numbers for messages sent outside the outbox.

        Used for status messages (the last will, online and offline), which describe the
        present and are not worth replaying later. Returns the first of the ``n`` numbers.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n is {n!r}; expected an integer >= 1")
        with self._lock:
            self._begin()
            try:
                first = self._take_seqs(n)
                self._db.execute("COMMIT")
                self._unsynced, self._synced_through = False, first + n - 1  # a FULL commit fsyncs every earlier put
            except BaseException:
                self._rollback()
                raise
        return first

    def ack(self, seq: int) -> bool:
        """Delete one message the server acknowledged. Returns False if it was not pending
        (already acknowledged, or dropped by the overflow policy while in flight)."""
        return self.ack_ranges([(seq, seq)]) == 1

    def ack_ranges(self, ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> int:
        """Delete every pending message whose seq lies in one of the inclusive ``(first, last)``
        ranges, in one transaction. Returns how many were deleted (a seq not pending is ignored:
        already acknowledged, or dropped by the overflow policy while in flight)."""
        with self._lock:
            self._begin(durable=False)
            try:
                deleted = 0
                for first, last in ranges:
                    deleted += self._query("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)).rowcount
                if deleted:
                    self._add_meta("pending", -deleted)
                    self._add_meta("sent", deleted)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return deleted

    def sync(self, through_seq: int | None = None) -> bool:
        """Make every earlier :meth:`put` survive a power cut (one fsync). Returns False when
        there was nothing to sync. Cheap to call often: it does nothing unless a put came since,
        nor (with ``through_seq``) when every seq up to ``through_seq`` is already synced."""
        with self._lock:
            if not self._unsynced or (through_seq is not None and through_seq <= self._synced_through):
                return False
            self._begin(durable=True)
            try:
                # A write is needed: a FULL commit of an empty transaction would fsync nothing.
                self._query("INSERT OR REPLACE INTO meta (key, value) VALUES ('synced_at', ?)", (time.time(),))
                synced = self._meta("next_seq") - 1
                self._db.execute("COMMIT")
                self._unsynced, self._synced_through = False, synced
            except BaseException:
                self._rollback()
                raise
        return True

    # -- reads ----------------------------------------------------------------------------

    def pending(self, limit: int = 100, after_seq: int = -1, upto_seq: int | None = None) -> list[PendingMessage]:
        """Up to ``limit`` pending messages with ``after_seq < seq <= upto_seq``, oldest first."""
        upto = _MAX_SEQ if upto_seq is None else upto_seq
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, payload FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after_seq, upto, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc
        return [PendingMessage(seq, topic, bytes(payload)) for seq, topic, payload in rows]

    def counts(self) -> OutboxCounts:
        """The persisted counters (see :class:`OutboxCounts`)."""
        with self._lock:
            try:
                values = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            except sqlite3.Error as exc:
                raise OutboxError(f"cannot read the outbox {self.path}: {exc}") from exc
        return OutboxCounts(values["pending"], values["dropped_overflow"], values["sent"], values["next_seq"])

    def close(self) -> None:
        """Close the file. Further calls raise :class:`OutboxError`."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers (called with the lock held) -----------------------------------------------

    def _begin(self, durable: bool = True) -> None:
        """BEGIN IMMEDIATE; ``durable``: the commit fsyncs (``synchronous=FULL``), else it only writes."""
        try:
            if self._durable is not durable:  # a PRAGMA per transaction costs as much as an INSERT
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write the outbox {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            logger.debug("rollback of outbox %s failed (the transaction was already gone)", self.path)

    def _take_seqs(self, n: int) -> int:
        seq = self._meta("next_seq")
        if seq + n > _MAX_SEQ:
            raise OutboxError(f"outbox {self.path} has used every sequence number up to 2**63 - 1")
        self._set_meta("next_seq", seq + n)
        return seq

    def _meta(self, key: str) -> int:
        return self._query("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _set_meta(self, key: str, value: int) -> None:
        self._query("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def _add_meta(self, key: str, delta: int) -> None:
        self._query("UPDATE meta SET value = value + ? WHERE key = ?", (delta, key))

    def _query(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write the outbox {self.path}: {exc}") from exc
