"""Property: whatever a client publishes, the server stores exactly the valid messages, once each.

Through a real Mosquitto and a real server (SQLite file), hypothesis draws batches of messages:
valid envelopes of every type, and hostile ones, each a valid envelope broken by one mutation
known to make it invalid (a bool for an int, ``2.0`` for schema 2, integers beyond int64 or
float range, a list as ``type``, a device id ending in a newline, garbage or wrongly shaped head
arrays, a head whose embedding size is not its bundle's, raw bytes that are not JSON, ...).
After each batch, once the server has received everything:

- the database holds exactly the valid (device, seq) sent so far, each with the body sent;
- no message reached an internal error;
- the database's reject counters equal the process's own;
- the log has at most one line per reject reason (the interval is longer than the test) and
  no traceback.

Which messages are valid is decided here, by construction, not by asking the validator.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.broker import require_mosquitto
from support.telemetry import Publisher, wait_for

from edgetune.contract import messages, topics
from edgetune.localbroker import LocalBroker
from edgetune.server.ingest import IngestConfig
from edgetune.server.service import Server, ServerConfig
from edgetune.server.store import canonical_json

pytestmark = pytest.mark.broker

DEVICES = ("jetson-01", "jetson-02", "cam.03")
#: bundle id -> the embedding size D of its ``keywords`` head (seeded before the property runs).
BUNDLE_DIMS = {"kws-a": 4, "kws-b": 7}
#: Hostile messages use seqs from here up, so they can never take a valid message's (device, seq).
HOSTILE_SEQ0 = 10**12
EXAMPLES = 300

# -- valid messages ----------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
_name = _text
_small = st.floats(0, 1e6, allow_nan=False) | st.integers(0, 10**6)
_int64 = st.integers(0, 2**63 - 1)


def _event_body() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"pipeline": _name, "head": _name, "label": _text, "score": st.floats(0, 1) | st.sampled_from([0, 1]),
         "modality": st.sampled_from(["audio", "image", "fused"]), "source": _text, "offset_s": _small,
         "bundle_id": _text, "bundle_version": _text, "head_version": _int64},
        optional={"latency_ms": _small})


def _metrics_body() -> st.SearchStrategy[dict[str, Any]]:
    counters = st.dictionaries(_text, _int64, max_size=3)
    return st.fixed_dictionaries(
        {"pipeline": _name, "window_s": st.floats(1e-3, 1e6), "inferences": _int64,
         "latency_ms": st.dictionaries(st.sampled_from(["p50", "p90", "p95", "p99", "max", "mean"]), _small),
         "provider": _text},
        optional={"rtf": st.none() | _small, "fps": st.none() | _small, "rss_mb": st.none() | _small,
                  "temperature_c": st.none() | st.floats(-273.15, 1000), "errors": counters, "outbox": counters})


def _status_body() -> st.SearchStrategy[dict[str, Any]]:
    pipeline = st.fixed_dictionaries(
        {"name": _name, "modality": st.sampled_from(["audio", "image"]), "source": _text, "bundle_id": _text,
         "bundle_version": _text, "provider": _text, "heads": st.dictionaries(_name, _int64, min_size=1, max_size=2)})
    return st.fixed_dictionaries(
        {"state": st.sampled_from(["online", "offline"])},
        optional={"bundle_id": st.none() | _text, "head_version": st.none() | _int64, "software": _text,
                  "pipelines": st.lists(pipeline, min_size=1, max_size=2)})


@st.composite
def _head_body(draw: st.DrawFn, bundle_id: str | None = None) -> dict[str, Any]:
    bundle_id = bundle_id or draw(st.sampled_from(sorted(BUNDLE_DIMS)))
    dim = BUNDLE_DIMS[bundle_id]
    labels = draw(st.lists(_text, min_size=2, max_size=4, unique=True))
    number = st.floats(-10, 10, allow_nan=False)
    body = {"pipeline": "audio", "head": "keywords", "bundle_id": bundle_id, "head_version": draw(_int64),
            "labels": labels, "n_samples": draw(st.integers(0, 1000)),
            "weight": [draw(st.lists(number, min_size=dim, max_size=dim)) for _ in labels],
            "bias": draw(st.lists(number, min_size=len(labels), max_size=len(labels)))}
    if draw(st.booleans()):
        body["embedding_dim"] = dim
    return body


def _seed_head(bundle_id: str, dim: int) -> dict[str, Any]:
    return {"pipeline": "audio", "head": "keywords", "bundle_id": bundle_id, "head_version": 1,
            "labels": ["yes", "no"], "n_samples": 10, "weight": [[0.0] * dim, [1.0] * dim], "bias": [0.0, 0.0]}


_BODY = {"event": _event_body(), "metrics": _metrics_body(), "status": _status_body(), "head": _head_body()}


@st.composite
def valid_envelope(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with seq 0 (the test gives each one its own seq before sending)."""
    type_ = draw(st.sampled_from(sorted(_BODY)))
    observed_at = draw(st.floats(0, messages.MAX_OBSERVED_AT) | st.integers(0, int(messages.MAX_OBSERVED_AT)))
    return {"schema": messages.SCHEMA_VERSION, "device": draw(st.sampled_from(DEVICES)), "seq": 0,
            "observed_at": observed_at, "type": type_, "body": draw(_BODY[type_])}


# -- hostile messages: a valid envelope and one mutation that makes it invalid ------------------

#: Bad wherever a body field is expected (text, number, list or object fields alike).
_BAD_ANYWHERE = [True, False, 10**400, -(10**30), {"nested": [1]}, "x" * 600, "bad\u0000", "bad\ud800", [[[]]]]
_REQUIRED = {
    "event": ("pipeline", "head", "label", "score", "modality", "source", "offset_s", "bundle_id",
              "bundle_version", "head_version"),
    "metrics": ("pipeline", "window_s", "inferences", "latency_ms", "provider"),
    "status": ("state",),
    "head": ("pipeline", "head", "bundle_id", "head_version", "labels", "n_samples", "weight", "bias"),
}
_RAW = [b"", b"\xff\xfe\x00", b"not json", b"[]", b"null", b'"x"', b"{", b"[" * 5000, b'{"schema": NaN}',
        b'{"schema": 2, "schema": 2}', b'{"observed_at": 1e400}']


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes]:
    """(topic, payload): an invalid message on a topic the server reads."""
    env = draw(valid_envelope())
    topic = topics.device_topic(env["device"], messages.KIND_FOR_TYPE[env["type"]])
    kind = draw(st.sampled_from(["schema", "seq", "observed_at", "type", "device", "body_value", "body_missing",
                                 "body_extra", "envelope_missing", "envelope_extra", "head_arrays", "head_dim",
                                 "topic", "raw", "oversized", "raw_number"]))
    body = env["body"]
    if kind == "schema":
        env["schema"] = draw(st.sampled_from([True, False, 2.0, "2", None, 1, 3, [2], 2**64]))
    elif kind == "seq":
        env["seq"] = draw(st.sampled_from([True, False, 1.0, -1, 2**63, 10**30, 10**400, "5", None, [1]]))
    elif kind == "observed_at":
        env["observed_at"] = draw(st.sampled_from([10**400, -1, -0.5, 5e9, True, "1795000000", None, [1.0]]))
    elif kind == "type":
        others = sorted(set(messages.TYPES) - {env["type"]}) + ["bogus", ""]
        env["type"] = draw(st.sampled_from([[env["type"]], {env["type"]: 1}, None, 1, True] + others))
    elif kind == "device":
        env["device"] = draw(st.sampled_from([env["device"] + "\n", "fleet", "", "a/b", "+", 7, None,
                                              [env["device"]], next(d for d in DEVICES if d != env["device"])]))
    elif kind == "body_value":
        body[draw(st.sampled_from(sorted(body)))] = draw(st.sampled_from(_BAD_ANYWHERE))
    elif kind == "body_missing":
        del body[draw(st.sampled_from(_REQUIRED[env["type"]]))]
    elif kind == "body_extra":
        body[draw(st.sampled_from(["extra", "seq", "Label", "weights"]))] = 1
    elif kind == "envelope_missing":
        del env[draw(st.sampled_from(sorted(env)))]
    elif kind == "envelope_extra":
        env[draw(st.sampled_from(["extra", "Seq", "signature"]))] = 1
    elif kind in ("head_arrays", "head_dim"):
        env["type"], body = "head", draw(_head_body())
        env["body"] = body
        topic = topics.device_topic(env["device"], "heads")
        dim = len(body["weight"][0])
        if kind == "head_dim":  # well formed, but not the D of this bundle's head
            wrong = dim + draw(st.sampled_from([-1, 1, 5]))
            body["weight"] = [[0.5] * wrong for _ in body["labels"]]
            body.pop("embedding_dim", None)
        else:
            row = draw(st.integers(0, len(body["labels"]) - 1))
            body["weight"][row] = draw(st.sampled_from([
                [0.5] * (dim + 1), [0.5] * (dim - 1), ["x"] * dim, [True] * dim, [None] * dim, [[0.5]] * dim,
                [10**400] * dim, [1e300] * dim, 0.5, "row", {}]))
    elif kind == "topic":  # a valid payload, on a topic no device may have
        # (Mosquitto itself disconnects a client whose topic holds a control character, such as
        # "jetson-01\n": that case is the validator's unit test, tests/contract/test_messages_strict.py.)
        bad = draw(st.sampled_from(["fleet", "-x", "x" * 65, "a b", "é", ".hidden"]))
        topic = f"{topics.PREFIX}/{bad}/{messages.KIND_FOR_TYPE[env['type']]}"
    if kind == "raw":
        return topic, draw(st.sampled_from(_RAW) | st.binary(max_size=64))
    if kind == "oversized":
        env["body"]["pad"] = "x" * (messages.MAX_PAYLOAD_BYTES + 10)
    if kind == "raw_number":  # numbers JSON can spell that Python's json.dumps never writes
        text = json.dumps({**env, "seq": "__SEQ__"})
        return topic, text.replace('"__SEQ__"', draw(st.sampled_from(["1e400", "-1e400", "NaN", "Infinity",
                                                                        "1" + "0" * 30, "7.0", "true"]))).encode()
    return topic, json.dumps(env).encode()


# -- the broker, the server and what was sent --------------------------------------------------


class _Records(logging.Handler):
    """Keeps every record of the server's ingest logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Rig:
    """A broker, a started server, a publisher, and the ledger of what was sent."""

    def __init__(self, root: Path) -> None:
        self.broker = LocalBroker(root / "broker").start()
        self.db = root / "server.db"
        ingest = IngestConfig(host=self.broker.host, port=self.broker.port, client_id="fuzz-server",
                              reject_log_interval_s=3600.0)
        self.server = Server(ServerConfig(db=str(self.db), http_port=0, ingest=ingest))
        self.log = _Records()
        logging.getLogger("edgetune.server.ingest").addHandler(self.log)
        self.server.start()
        assert self.server.wait_subscribed(10.0), "the server did not subscribe"
        self.publisher = Publisher(self.broker.host, self.broker.port, client_id="fuzz-device")
        self.sent = 0
        self.valid: dict[tuple[str, int], str] = {}  # (device, seq) -> canonical body JSON
        self.last_valid: dict[str, Any] | None = None
        self.next_seq = {d: itertools.count() for d in DEVICES}
        self.hostile_seq = itertools.count(HOSTILE_SEQ0)
        self.hostile_sent = 0

    def send_valid(self, env: dict[str, Any]) -> None:
        env = {**env, "seq": next(self.next_seq[env["device"]])}
        self.publisher.publish(topics.device_topic(env["device"], messages.KIND_FOR_TYPE[env["type"]]),
                               json.dumps(env).encode())
        self.valid[(env["device"], env["seq"])] = canonical_json(env["body"])
        self.last_valid = env
        self.sent += 1

    def resend_last_valid(self) -> None:
        if self.last_valid is not None:
            env = self.last_valid
            self.publisher.publish(topics.device_topic(env["device"], messages.KIND_FOR_TYPE[env["type"]]),
                                   json.dumps(env).encode())
            self.sent += 1

    def send_hostile(self, topic: str, payload: bytes) -> None:
        seq = next(self.hostile_seq)
        self.publisher.publish(topic, payload.replace(b'"seq": 0,', f'"seq": {seq},'.encode()))
        self.sent += 1
        self.hostile_sent += 1

    def handled(self) -> int:
        """Messages the server has finished with: stored, found stored already, or refused and counted."""
        c = self.server.counters
        return c.stored + c.duplicates + c.conflicts + c.rejected_total

    def stored(self) -> dict[tuple[str, int], str]:
        with sqlite3.connect(self.db) as conn:
            return {(d, s): b for d, s, b in conn.execute("SELECT device, seq, body FROM messages")}

    def close(self) -> None:
        logging.getLogger("edgetune.server.ingest").removeHandler(self.log)
        self.publisher.close()
        self.server.stop()
        self.broker.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    require_mosquitto()
    r = Rig(tmp_path_factory.mktemp("fuzz"))
    try:
        for bundle_id, dim in sorted(BUNDLE_DIMS.items()):  # the first head of a bundle fixes its D
            r.send_valid({"schema": messages.SCHEMA_VERSION, "device": DEVICES[0], "seq": 0, "observed_at": 1.0,
                          "type": "head", "body": _seed_head(bundle_id, dim)})
        wait_for(lambda: r.handled() == r.sent, timeout_s=10.0)
        yield r
    finally:
        r.close()


_hostile_item = hostile().map(lambda h: ("hostile", h))
#: Hostile messages twice as often as valid ones; now and then a valid one sent again.
_item = st.one_of(valid_envelope().map(lambda e: ("valid", e)), _hostile_item, _hostile_item,
                  st.just(("resend", None)))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(_item, min_size=1, max_size=4))
def test_only_valid_messages_are_stored_each_once_and_nothing_is_an_internal_error(rig, batch):
    # Execute
    for what, item in batch:
        if what == "valid":
            rig.send_valid(item)
        elif what == "hostile":
            rig.send_hostile(*item)
        else:
            rig.resend_last_valid()
    wait_for(lambda: rig.handled() == rig.sent, timeout_s=10.0)

    # Assert
    counters = rig.server.counters
    assert counters.rejected.get("internal_error", 0) == 0
    stored = rig.stored()
    assert set(stored) - set(rig.valid) == set(), "invalid messages were stored"
    assert set(rig.valid) - set(stored) == set(), "valid messages were not stored"
    assert stored == rig.valid, "a stored body differs from the one sent"
    assert counters.stored == len(rig.valid) and counters.conflicts == 0
    assert rig.server.store.stats()["rejected"] == dict(counters.rejected), \
        "the database's reject counters differ from the process's"
    assert counters.rejected_total == rig.hostile_sent


def test_rejects_are_logged_once_per_reason_without_tracebacks(rig):
    # Runs after the property (same module, same server): every reason has been seen many times.
    reasons = rig.server.counters.rejected
    assert sum(reasons.values()) > len(reasons), "the property sent too few hostile messages to tell"
    lines = [r for r in rig.log.records if r.levelno >= logging.WARNING and "rejected a message" in r.getMessage()]
    assert len(lines) == len(reasons), [r.getMessage()[:120] for r in lines]
    assert [r for r in rig.log.records if r.exc_info] == []
