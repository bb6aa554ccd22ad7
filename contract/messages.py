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
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

from .errors import ContractError
from .topics import check_device_id

SCHEMA_VERSION = 2
#: Larger payloads are refused before parsing (an oversized message is bad input, not a crash).
MAX_PAYLOAD_BYTES = 256 * 1024

#: topic kind -> envelope type
TYPE_FOR_KIND = {"status": "status", "events": "event", "metrics": "metrics", "heads": "head"}
KIND_FOR_TYPE = {v: k for k, v in TYPE_FOR_KIND.items()}

_Check = Callable[[Any], bool]


class NotJsonError(ContractError):
    """The payload is not UTF-8 JSON at all (as opposed to JSON that breaks the schema)."""


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _nonneg(v: Any) -> bool:
    return _number(v) and v >= 0


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _nonneg_int(v: Any) -> bool:
    return _int(v) and v >= 0


def _text(limit: int) -> _Check:
    return lambda v: isinstance(v, str) and 0 < len(v) <= limit


def _unit(v: Any) -> bool:
    return _number(v) and 0.0 <= v <= 1.0


def _counters(v: Any) -> bool:
    return isinstance(v, dict) and len(v) <= 64 and all(
        isinstance(k, str) and len(k) <= 64 and _nonneg_int(n) for k, n in v.items()
    )


def _percentiles(v: Any) -> bool:
    return isinstance(v, dict) and set(v) <= {"p50", "p90", "p95", "p99", "max", "mean"} and all(
        _nonneg(x) for x in v.values()
    )


def _optional(check: _Check) -> _Check:
    return lambda v: v is None or check(v)


_NAME = _text(64)
_PIPELINE_KEYS = {"name": _NAME, "modality": lambda v: v in ("audio", "image"), "source": _text(512),
                  "bundle_id": _text(128), "bundle_version": _text(64), "provider": _text(64),
                  "heads": lambda v: isinstance(v, dict) and 0 < len(v) <= 16 and all(
                      _NAME(k) and _nonneg_int(n) for k, n in v.items())}


def _pipelines(v: Any) -> bool:
    """The status's list of pipelines: 1-8 objects with exactly the keys of ``_PIPELINE_KEYS``."""
    return isinstance(v, list) and 0 < len(v) <= 8 and all(
        isinstance(p, dict) and set(p) == set(_PIPELINE_KEYS) and all(c(p[k]) for k, c in _PIPELINE_KEYS.items())
        for p in v)


# field -> (required, check, what a reader should be told is allowed)
_BODIES: dict[str, dict[str, tuple[bool, _Check, str]]] = {
    "event": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "head": (True, _NAME, "the head's name, 1-64 characters"),
        "label": (True, _text(128), "a label, 1-128 characters"),
        "score": (True, _unit, "a number in [0, 1]"),
        "modality": (True, lambda v: v in ("audio", "image", "fused"), "'audio', 'image' or 'fused'"),
        "source": (True, _text(512), "the source URI, 1-512 characters"),
        "offset_s": (True, _nonneg, "seconds into the stream, >= 0"),
        "bundle_id": (True, _text(128), "the bundle id"),
        "bundle_version": (True, _text(64), "the bundle version"),
        "head_version": (True, _nonneg_int, "an integer >= 0"),
        "latency_ms": (False, _nonneg, "milliseconds >= 0"),
    },
    "metrics": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "window_s": (True, lambda v: _number(v) and v > 0, "seconds > 0"),
        "inferences": (True, _nonneg_int, "an integer >= 0"),
        "latency_ms": (True, _percentiles, "an object of p50/p90/p95/p99/max/mean, each >= 0"),
        "rtf": (False, _optional(_nonneg), "processing time / audio time, >= 0"),
        "fps": (False, _optional(_nonneg), "frames per second, >= 0"),
        "provider": (True, _text(64), "the execution provider in use, e.g. 'CPUExecutionProvider'"),
        "rss_mb": (False, _optional(_nonneg), "resident memory in MB"),
        "temperature_c": (False, _optional(_number), "degrees Celsius or null"),
        "errors": (False, _counters, "an object of counter name -> integer >= 0"),
        "outbox": (False, _counters, "an object of counter name -> integer >= 0"),
    },
    "status": {
        "state": (True, lambda v: v in ("online", "offline"), "'online' or 'offline'"),
        "bundle_id": (False, _optional(_text(128)), "the bundle id"),
        "bundle_version": (False, _optional(_text(64)), "the bundle version"),
        "head_version": (False, _optional(_nonneg_int), "an integer >= 0"),
        "provider": (False, _optional(_text(64)), "the execution provider in use"),
        "software": (False, _optional(_text(64)), "the edgetune version"),
        "pipelines": (False, _pipelines, "a list of 1-8 pipelines, each {name, modality, source, bundle_id, "
                      "bundle_version, provider, heads: {head name: version}}"),
    },
    "head": {
        "pipeline": (True, _NAME, "the pipeline's name, 1-64 characters"),
        "head": (True, _NAME, "the head's name, 1-64 characters"),
        "bundle_id": (True, _text(128), "the bundle id"),
        "head_version": (True, _nonneg_int, "an integer >= 0"),
        "labels": (True, lambda v: isinstance(v, list) and len(v) >= 2 and all(_text(128)(x) for x in v),
                   "a list of at least two labels"),
        "n_samples": (True, _nonneg_int, "the number of samples the head was fitted on"),
        "weight": (True, lambda v: isinstance(v, list), "a list of rows [C][D]"),
        "bias": (True, lambda v: isinstance(v, list), "a list [C]"),
    },
}
TYPES = tuple(_BODIES)


def _fail(where: str, value: Any, expected: str) -> None:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ContractError(f"message {where} is {shown}; expected {expected}")


def validate(msg: Any) -> dict[str, Any]:
    """Check a decoded envelope; return it unchanged or raise :class:`ContractError`."""
    if not isinstance(msg, dict):
        _fail("top level", type(msg).__name__, "a JSON object envelope")
    expected_keys = {"schema", "device", "seq", "observed_at", "type", "body"}
    if set(msg) != expected_keys:
        _fail("keys", sorted(msg), f"exactly {sorted(expected_keys)}")
    if msg["schema"] != SCHEMA_VERSION:
        _fail("schema", msg["schema"], f"{SCHEMA_VERSION}")
    try:
        check_device_id(msg["device"])
    except ContractError as exc:
        raise ContractError(f"message device: {exc}") from None
    if not _nonneg_int(msg["seq"]) or msg["seq"] >= 2**63:
        _fail("seq", msg["seq"], "an integer in [0, 2**63)")
    if not _nonneg(msg["observed_at"]):
        _fail("observed_at", msg["observed_at"], "seconds since the Unix epoch, a finite number >= 0")
    if msg["type"] not in _BODIES:
        _fail("type", msg["type"], f"one of {list(_BODIES)}")
    body = msg["body"]
    if not isinstance(body, dict):
        _fail("body", body, "a JSON object")
    spec = _BODIES[msg["type"]]
    unknown = sorted(set(body) - set(spec))
    if unknown:
        _fail(f"{msg['type']} body keys", unknown, f"only {sorted(spec)}")
    for name, (required, check, allowed) in spec.items():
        if name not in body:
            if required:
                _fail(f"{msg['type']} body.{name}", None, allowed + " (required)")
            continue
        if not check(body[name]):
            _fail(f"{msg['type']} body.{name}", body[name], allowed)
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


def decode(payload: bytes) -> dict[str, Any]:
    """Parse and validate a payload; raise :class:`ContractError` on anything malformed."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"message is {len(payload)} bytes; expected at most {MAX_PAYLOAD_BYTES}")
    try:
        msg = json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
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
