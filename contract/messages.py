"""The telemetry envelope and message bodies, device -> server over MQTT (JSON, UTF-8).

Every message is one envelope::

    {"schema": 2, "device": "jetson-07", "seq": 1234, "observed_at": 1795000000.125,
     "type": "event", "body": {"pipeline": "audio", "head": "keywords", ...}}

- ``seq`` is per device, across all types, strictly increasing and kept across restarts; the
  server stores each (device, seq) once, however often the broker delivers it.
- every event, metrics and head body names the ``pipeline`` it comes from (a device runs one
  pipeline per source: ``audio``, ``camera``, ...); the status lists the device's pipelines.
- ``observed_at`` is when the thing happened on the device (seconds since the Unix epoch, UTC),
  not when it was sent: a message may wait hours in the device's outbox.

:func:`decode` validates a payload completely and raises :class:`ContractError` with the field,
the value and what was expected. :func:`encode` validates before it serialises, so a device can
never send what a server would refuse.

Validation is strict, because the payload comes from the network: types are exact (JSON ``true``
is not ``1``, ``2.0`` is not schema ``2``), every integer fits an int64 and every other number is
finite and at most :data:`MAX_MAGNITUDE` (NaN and Infinity are not JSON; an integer beyond float
range is refused, never converted), texts hold no control characters or lone surrogates, a key
appears once per object, and a head's ``weight`` is [C][D] and its ``bias`` [C], C the number of
labels and D its ``embedding_dim`` when declared (the server also checks D against the heads it
already holds for that bundle). Any input gives the envelope or a :class:`ContractError`, never
another exception.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from typing import Any, Callable, Mapping, NoReturn

from .errors import ContractError
from .topics import check_device_id

SCHEMA_VERSION = 2
#: Larger payloads are refused before parsing (an oversized message is bad input, not a crash).
MAX_PAYLOAD_BYTES = 256 * 1024

#: topic kind -> envelope type
TYPE_FOR_KIND = {"status": "status", "events": "event", "metrics": "metrics", "heads": "head"}
KIND_FOR_TYPE = {v: k for k, v in TYPE_FOR_KIND.items()}

_Check = Callable[[Any], bool]

#: Integers in a message must fit a signed 64-bit column (SQLite's INTEGER, PostgreSQL's BIGINT).
INT64_MAX = 2**63 - 1
#: Largest magnitude of any other number in a message: far beyond any latency, rate or size, and
#: well inside a float64 (so an integer given for a number never overflows when converted).
MAX_MAGNITUDE = 1e15
#: ``observed_at`` is refused past 2100-01-01T00:00:00Z (a clock that far ahead is broken).
MAX_OBSERVED_AT = 4_102_444_800.0
#: A head message's weight is [C][D] with 2 <= C <= MAX_HEAD_CLASSES and 1 <= D <= MAX_EMBEDDING_DIM.
MAX_HEAD_CLASSES = 1024
MAX_EMBEDDING_DIM = 8192

#: Characters no text field may hold: C0 controls, DEL, and lone UTF-16 surrogates (which JSON's
#: ``\ud800`` escape can smuggle in, and which no database can store as UTF-8).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


class NotJsonError(ContractError):
    """The payload is not UTF-8 JSON at all (as opposed to JSON that breaks the schema)."""


def _int(v: Any) -> bool:
    """An integer (never a bool, never a float such as ``1.0``) that fits a signed 64-bit column."""
    return isinstance(v, int) and not isinstance(v, bool) and -INT64_MAX - 1 <= v <= INT64_MAX


def _nonneg_int(v: Any) -> bool:
    return _int(v) and v >= 0


def _number(v: Any) -> bool:
    """A finite int or float (never a bool) of magnitude at most :data:`MAX_MAGNITUDE`.

    Integers are compared as integers, so one beyond float range is refused, not converted.
    """
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE
    return isinstance(v, float) and math.isfinite(v) and -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE


def _nonneg(v: Any) -> bool:
    return _number(v) and v >= 0


def _text_ok(v: Any, limit: int) -> bool:
    return isinstance(v, str) and 0 < len(v) <= limit and not _BAD_CHARS.search(v)


def _text(limit: int) -> _Check:
    return lambda v: _text_ok(v, limit)


def _one_of(*allowed: str) -> _Check:
    return lambda v: isinstance(v, str) and v in allowed


def _unit(v: Any) -> bool:
    return _number(v) and 0.0 <= v <= 1.0


def _counters(v: Any) -> bool:
    return isinstance(v, dict) and len(v) <= 64 and all(_text_ok(k, 64) and _nonneg_int(n) for k, n in v.items())


def _percentiles(v: Any) -> bool:
    return isinstance(v, dict) and set(v) <= {"p50", "p90", "p95", "p99", "max", "mean"} and all(
        _nonneg(x) for x in v.values()
    )


def _optional(check: _Check) -> _Check:
    return lambda v: v is None or check(v)


def _temperature(v: Any) -> bool:
    return _number(v) and -273.15 <= v <= 1000.0


_NAME = _text(64)
_PIPELINE_KEYS = {"name": _NAME, "modality": _one_of("audio", "image", "fused"), "source": _text(512),
                  "bundle_id": _text(128), "bundle_version": _text(64), "provider": _text(64),
                  "heads": lambda v: isinstance(v, dict) and 0 < len(v) <= 16 and all(
                      _NAME(k) and _nonneg_int(n) for k, n in v.items())}


def _pipelines(v: Any) -> bool:
    """The status's list of pipelines: 1-8 objects with exactly the keys of ``_PIPELINE_KEYS``."""
    return isinstance(v, list) and 0 < len(v) <= 8 and all(
        isinstance(p, dict) and set(p) == set(_PIPELINE_KEYS) and all(c(p[k]) for k, c in _PIPELINE_KEYS.items())
        for p in v)


def _labels(v: Any) -> bool:
    return (isinstance(v, list) and 2 <= len(v) <= MAX_HEAD_CLASSES and all(_text_ok(x, 128) for x in v)
            and len(set(v)) == len(v))


def _vector(v: Any, length: int | None = None) -> bool:
    """A list of finite numbers (see :func:`_number`), of ``length`` items if given (else 1 or more)."""
    return (isinstance(v, list) and (len(v) == length if length is not None else len(v) > 0)
            and all(_number(x) for x in v))


# field -> (required, check, what a reader should be told is allowed)
_BODIES: dict[str, dict[str, tuple[bool, _Check, str]]] = {
    "event": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "head": (True, _NAME, "the head's name, 1-64 characters"),
        "label": (True, _text(128), "a label, 1-128 characters"),
        "score": (True, _unit, "a number in [0, 1]"),
        "modality": (True, _one_of("audio", "image", "fused"), "'audio', 'image' or 'fused'"),
        "source": (True, _text(512), "the source URI, 1-512 characters"),
        "offset_s": (True, _nonneg, "seconds into the stream, a number in [0, 1e15]"),
        "bundle_id": (True, _text(128), "the bundle id"),
        "bundle_version": (True, _text(64), "the bundle version"),
        "head_version": (True, _nonneg_int, "an integer in [0, 2**63)"),
        "latency_ms": (False, _nonneg, "milliseconds, a number in [0, 1e15]"),
    },
    "metrics": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "window_s": (True, lambda v: _number(v) and v > 0, "seconds, a number in (0, 1e15]"),
        "inferences": (True, _nonneg_int, "an integer in [0, 2**63)"),
        "latency_ms": (True, _percentiles, "an object of p50/p90/p95/p99/max/mean, each a number in [0, 1e15]"),
        "rtf": (False, _optional(_nonneg), "processing time / audio time, a number in [0, 1e15] or null"),
        "fps": (False, _optional(_nonneg), "frames per second, a number in [0, 1e15] or null"),
        "provider": (True, _text(64), "the execution provider in use, e.g. 'CPUExecutionProvider'"),
        "rss_mb": (False, _optional(_nonneg), "resident memory in MB, a number in [0, 1e15] or null"),
        "temperature_c": (False, _optional(_temperature), "degrees Celsius in [-273.15, 1000] or null"),
        "errors": (False, _counters, "an object of at most 64 counter names -> integers in [0, 2**63)"),
        "outbox": (False, _counters, "an object of at most 64 counter names -> integers in [0, 2**63)"),
    },
    "status": {
        "state": (True, _one_of("online", "offline"), "'online' or 'offline'"),
        "bundle_id": (False, _optional(_text(128)), "the bundle id"),
        "bundle_version": (False, _optional(_text(64)), "the bundle version"),
        "head_version": (False, _optional(_nonneg_int), "an integer in [0, 2**63) or null"),
        "provider": (False, _optional(_text(64)), "the execution provider in use"),
        "software": (False, _optional(_text(64)), "the edgetune version"),
        "pipelines": (False, _pipelines, "a list of 1-8 pipelines, each {name, modality, source, bundle_id, "
                      "bundle_version, provider, heads: {head name: version}}"),
    },
    "head": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "head": (True, _NAME, "the head's name, 1-64 characters"),
        "bundle_id": (True, _text(128), "the bundle id"),
        "head_version": (True, _nonneg_int, "an integer in [0, 2**63)"),
        "labels": (True, _labels, f"a list of 2-{MAX_HEAD_CLASSES} distinct labels of 1-128 characters"),
        "n_samples": (True, _nonneg_int, "the number of samples the head was fitted on, an integer in [0, 2**63)"),
        "embedding_dim": (False, lambda v: _int(v) and 1 <= v <= MAX_EMBEDDING_DIM,
                          f"the embedding size D the head reads, an integer in [1, {MAX_EMBEDDING_DIM}]"),
        "weight": (True, lambda v: isinstance(v, list) and len(v) > 0, "a list of rows [C][D]"),
        "bias": (True, lambda v: isinstance(v, list), "a list [C]"),
    },
}
TYPES = tuple(_BODIES)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4


def _fail(where: str, value: Any, expected: str) -> NoReturn:
    """Raise ``message <where> is <value>; expected <expected>``; ``value`` shown short, however nested."""
    shown = _REPR.repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ContractError(f"message {where} is {shown}; expected {expected}")


def _check_head_arrays(body: dict[str, Any]) -> None:
    """A head's ``weight`` is [C][D] and ``bias`` is [C], C = ``len(labels)``, every entry a finite number.

    D is ``embedding_dim`` when the message declares it, else the length of the first row; every
    row must have it. Whether D is the embedding size of that bundle's head is the receiver's
    check (the server compares it with the heads it already stored for the bundle).
    """
    n_classes = len(body["labels"])
    weight, bias = body["weight"], body["bias"]
    if len(weight) != n_classes:
        _fail("head body.weight", f"{len(weight)} rows", f"{n_classes} rows [C][D], one per label")
    first = weight[0]
    dim = body.get("embedding_dim", len(first) if isinstance(first, list) else None)
    if dim is None or not 1 <= dim <= MAX_EMBEDDING_DIM:
        _fail("head body.weight[0]", first, f"a row of 1-{MAX_EMBEDDING_DIM} finite numbers")
    for i, row in enumerate(weight):
        if not _vector(row, dim):
            _fail(f"head body.weight[{i}]", row, f"a row of {dim} finite numbers (D = the embedding size)")
    if not _vector(bias, n_classes):
        _fail("head body.bias", bias, f"a list of {n_classes} finite numbers, one per label")


def validate(msg: Any) -> dict[str, Any]:
    """Check a decoded envelope; return it unchanged or raise :class:`ContractError`.

    Total on any JSON value: whatever ``msg`` is, the result is the envelope or a
    :class:`ContractError` (never another exception). Types are exact (``true`` is not ``1`` and
    ``2.0`` is not schema ``2``), every number is bounded, every text is free of control characters.
    """
    if not isinstance(msg, dict):
        _fail("top level", type(msg).__name__, "a JSON object envelope")
    expected_keys = {"schema", "device", "seq", "observed_at", "type", "body"}
    if set(msg) != expected_keys:
        _fail("keys", sorted(map(str, msg)), f"exactly {sorted(expected_keys)}")
    if not (_int(msg["schema"]) and msg["schema"] == SCHEMA_VERSION):
        _fail("schema", msg["schema"], f"{SCHEMA_VERSION} (an integer, not a float or a bool)")
    try:
        check_device_id(msg["device"])
    except ContractError as exc:
        raise ContractError(f"message device: {exc}") from None
    if not _nonneg_int(msg["seq"]):
        _fail("seq", msg["seq"], "an integer in [0, 2**63)")
    if not (_nonneg(msg["observed_at"]) and msg["observed_at"] <= MAX_OBSERVED_AT):
        _fail("observed_at", msg["observed_at"],
              f"seconds since the Unix epoch, a number in [0, {MAX_OBSERVED_AT:.0f}] (1970 to 2100)")
    type_ = msg["type"]
    if not isinstance(type_, str) or type_ not in _BODIES:
        _fail("type", type_, f"one of {list(_BODIES)}")
    body = msg["body"]
    if not isinstance(body, dict):
        _fail("body", body, "a JSON object")
    spec = _BODIES[type_]
    unknown = sorted(set(body) - set(spec))
    if unknown:
        _fail(f"{type_} body keys", unknown, f"only {sorted(spec)}")
    for name, (required, check, allowed) in spec.items():
        if name not in body:
            if required:
                _fail(f"{type_} body.{name}", None, allowed + " (required)")
            continue
        if not check(body[name]):
            _fail(f"{type_} body.{name}", body[name], allowed)
    if type_ == "head":
        _check_head_arrays(body)
    return msg


def make(device: str, seq: int, observed_at: float, type_: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Build and validate an envelope."""
    return validate(
        {"schema": SCHEMA_VERSION, "device": device, "seq": seq, "observed_at": float(observed_at),
         "type": type_, "body": dict(body)}
    )


def encode(msg: Mapping[str, Any]) -> bytes:
    """Validate and serialise an envelope to compact UTF-8 JSON."""
    validate(dict(msg))
    payload = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"message is {len(payload)} bytes; expected at most {MAX_PAYLOAD_BYTES}")
    return payload


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _DuplicateKey(ValueError):
    """A JSON object names one key twice (a reader could believe either value): refused."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs as a dict, or :class:`_DuplicateKey` if a key appears twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def decode(payload: bytes) -> dict[str, Any]:
    """Parse and validate a payload; raise :class:`ContractError` on anything malformed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"message is {len(payload)} bytes; expected at most {MAX_PAYLOAD_BYTES}")
    try:
        msg = json.loads(payload.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        _fail("object key", str(exc)[:64], "each key at most once in an object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotJsonError(f"message is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise NotJsonError("message JSON is nested too deeply; expected an envelope object") from None
    return validate(msg)


def decode_for_topic(topic_device: str, topic_kind: str, payload: bytes) -> dict[str, Any]:
    """:func:`decode`, then check the envelope matches the topic it arrived on."""
    msg = decode(payload)
    if msg["device"] != topic_device:
        _fail("device", msg["device"], f"{topic_device!r}, the device in the topic")
    if msg["type"] != TYPE_FOR_KIND[topic_kind]:
        _fail("type", msg["type"], f"{TYPE_FOR_KIND[topic_kind]!r} on a '{topic_kind}' topic")
    return msg
