"""The message validator on the payloads a hostile or buggy client sends: exact types, bounded
numbers, head arrays of the right shape, whole-string ids; each one a ContractError that names the
field and what was expected, never another exception.

Payloads are written as JSON text on purpose: ``true``, ``2.0``, ``1e400`` and ``\\ud800`` mean
what the wire means, not what Python would make of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgetune.contract import messages, topics
from edgetune.contract.errors import ContractError

T0 = 1_795_000_000.0


def _event_body(**over: Any) -> dict[str, Any]:
    return {"pipeline": "audio", "head": "keywords", "label": "yes", "score": 0.5, "modality": "audio",
            "source": "wav:clip.wav", "offset_s": 1.5, "bundle_id": "kws", "bundle_version": "1.0.0",
            "head_version": 3, **over}


def _head_body(n_classes: int = 3, dim: int = 4, **over: Any) -> dict[str, Any]:
    return {"pipeline": "audio", "head": "keywords", "bundle_id": "kws", "head_version": 2,
            "labels": [f"c{i}" for i in range(n_classes)], "n_samples": 12,
            "weight": [[0.25 * (i + j) for j in range(dim)] for i in range(n_classes)],
            "bias": [0.0] * n_classes, **over}


def _envelope(type_: str = "event", body: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    body = body if body is not None else (_head_body() if type_ == "head" else _event_body())
    return {"schema": 2, "device": "jetson-01", "seq": 7, "observed_at": T0, "type": type_, "body": body, **over}


def _text(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope)


def _with_raw(field: str, raw: str, type_: str = "event") -> bytes:
    """The envelope's JSON with ``field`` (top level or ``body.x``) spelled exactly as ``raw``."""
    marker = "__RAW__"
    env = _envelope(type_)
    if field.startswith("body."):
        env["body"][field[5:]] = marker
    else:
        env[field] = marker
    return _text(env).replace(json.dumps(marker), raw).encode()


def _refused(payload: bytes, *fragments: str) -> str:
    """Decode ``payload``, expect a ContractError (nothing else) whose text holds every fragment."""
    try:
        messages.decode(payload)
    except ContractError as exc:
        text = str(exc)
    else:
        raise AssertionError(f"accepted a payload that should be refused: {payload[:200]!r}")
    for fragment in fragments:
        assert fragment in text, f"error {text!r} does not mention {fragment!r}"
    return text


def test_a_valid_event_and_a_valid_head_pass():
    assert messages.decode(_text(_envelope()).encode())["seq"] == 7
    assert len(messages.decode(_text(_envelope("head")).encode())["body"]["weight"]) == 3


def test_integers_stand_for_numbers_where_a_number_is_expected():
    payload = _with_raw("observed_at", "1795000000")
    assert messages.decode(payload)["observed_at"] == 1795000000


@pytest.mark.parametrize("raw", ["true", "false", "2.0", "\"2\"", "null", "[2]", "1"])
def test_schema_must_be_exactly_the_integer_2(raw):
    _refused(_with_raw("schema", raw), "message schema is", "expected 2")


@pytest.mark.parametrize("raw", ["true", "7.0", "-1", str(2**63), "1" + "0" * 400, "\"7\"", "null"])
def test_seq_must_be_an_int64_integer_not_a_bool_or_float(raw):
    _refused(_with_raw("seq", raw), "message seq is", "an integer in [0, 2**63)")


@pytest.mark.parametrize("raw", ["1e400", "-1e400", "1" + "0" * 400, "-1", "4102444801", "true", "\"now\""])
def test_observed_at_is_bounded_and_never_overflows(raw):
    _refused(_with_raw("observed_at", raw), "message observed_at is", "seconds since the Unix epoch")


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(raw):
    with pytest.raises(messages.NotJsonError, match="not UTF-8 JSON"):
        messages.decode(_with_raw("observed_at", raw))


@pytest.mark.parametrize("raw", ["[\"event\"]", "{\"event\": 1}", "null", "1", "\"evnt\"", "true"])
def test_a_type_that_is_not_one_of_the_names_is_refused_cleanly(raw):
    _refused(_with_raw("type", raw), "message type is", "one of ['event', 'metrics', 'status', 'head']")


@pytest.mark.parametrize("device", ["jetson-01\n", "jetson-01\r", "\njetson-01", "", "fleet", "a/b", "a+",
                                    "#", "-lead", "x" * 65, "jetson 01"])
def test_device_ids_are_matched_as_a_whole(device):
    _refused(_text(_envelope(device=device)).encode(), "message device", "is not allowed")
    with pytest.raises(ContractError, match="is not allowed"):
        topics.check_device_id(device)


def test_a_topic_whose_device_ends_in_a_newline_is_not_a_device_topic():
    with pytest.raises(ContractError, match="is not allowed"):
        topics.parse_device_topic("edgetune/v1/jetson-01\n/events")


@pytest.mark.parametrize("field, raw, expected", [
    ("body.score", "true", "a number in [0, 1]"),
    ("body.score", "1e400", "a number in [0, 1]"),
    ("body.score", "1.5", "a number in [0, 1]"),
    ("body.offset_s", "1" + "0" * 400, "[0, 1e15]"),
    ("body.offset_s", "1e300", "[0, 1e15]"),
    ("body.head_version", "true", "an integer in [0, 2**63)"),
    ("body.head_version", "3.0", "an integer in [0, 2**63)"),
    ("body.head_version", str(2**63), "an integer in [0, 2**63)"),
    ("body.modality", "[\"audio\"]", "'audio', 'image' or 'fused'"),
    ("body.label", "\"yes\\u0000\"", "a label, 1-128 characters"),
    ("body.label", "\"\\ud800\"", "a label, 1-128 characters"),
    ("body.label", "[\"yes\"]", "a label, 1-128 characters"),
    ("body.source", "{}", "the source URI"),
])
def test_event_fields_have_exact_types_and_bounds(field, raw, expected):
    _refused(_with_raw(field, raw), f"message event {field}", expected)


def test_counters_refuse_integers_beyond_int64_and_control_characters_in_names():
    body = {"pipeline": "audio", "window_s": 10.0, "inferences": 5, "latency_ms": {"p50": 1.0},
            "provider": "CPUExecutionProvider", "errors": {"frames": 2**64}}
    _refused(_text(_envelope("metrics", body)).encode(), "metrics body.errors", "integers in [0, 2**63)")
    body["errors"] = {"bad\nname": 1}
    _refused(_text(_envelope("metrics", body)).encode(), "metrics body.errors")


def test_a_status_head_version_beyond_int64_is_refused():
    body = {"state": "online", "head_version": 2**63}
    _refused(_text(_envelope("status", body)).encode(), "status body.head_version", "[0, 2**63)")


@pytest.mark.parametrize("over, fragments", [
    ({"weight": [[0.0] * 4] * 2}, ("weight is '2 rows'", "3 rows")),
    ({"weight": [[0.0] * 4, [0.0] * 4, [0.0] * 5]}, ("weight[2]", "a row of 4 finite numbers")),
    ({"weight": [[0.0] * 4, [0.0] * 4, ["x"] * 4]}, ("weight[2]", "a row of 4 finite numbers")),
    ({"weight": [[0.0] * 4, [True] * 4, [0.0] * 4]}, ("weight[1]", "a row of 4 finite numbers")),
    ({"weight": [[0.0] * 4, [None] * 4, [0.0] * 4]}, ("weight[1]", "a row of 4 finite numbers")),
    ({"weight": [[[0.0]] * 4] * 3}, ("weight[0]", "a row of 4 finite numbers")),
    ({"weight": [1.0, 2.0, 3.0]}, ("weight[0]", "a row of 1-8192 finite numbers")),
    ({"weight": [[], [], []]}, ("weight[0]", "a row of 1-8192 finite numbers")),
    ({"weight": []}, ("weight", "a list of rows [C][D]")),
    ({"weight": "[[1]]"}, ("weight", "a list of rows [C][D]")),
    ({"bias": [0.0, 0.0]}, ("bias", "a list of 3 finite numbers")),
    ({"bias": [0.0, 0.0, 1e300]}, ("bias", "a list of 3 finite numbers")),
    ({"embedding_dim": 5}, ("weight[0]", "a row of 5 finite numbers")),
    ({"embedding_dim": True}, ("embedding_dim", "an integer in [1, 8192]")),
    ({"embedding_dim": 4.0}, ("embedding_dim", "an integer in [1, 8192]")),
    ({"labels": ["a", "a", "b"]}, ("labels", "distinct labels")),
    ({"labels": ["only"]}, ("labels", "2-1024 distinct labels")),
    ({"n_samples": -1}, ("n_samples", "an integer in [0, 2**63)")),
])
def test_head_arrays_must_be_c_by_d_finite_numbers(over, fragments):
    _refused(_text(_envelope("head", _head_body(**over))).encode(), *fragments)


def test_a_head_that_declares_its_embedding_size_and_keeps_it_passes():
    msg = messages.decode(_text(_envelope("head", _head_body(dim=6, embedding_dim=6))).encode())
    assert msg["body"]["embedding_dim"] == 6


def test_a_key_given_twice_is_refused():
    payload = b'{"schema": 2, "schema": 2, "device": "jetson-01", "seq": 1, "observed_at": 1.0, "type": "event", "body": {}}'
    _refused(payload, "object key is 'schema'", "each key at most once")


@pytest.mark.parametrize("payload", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"schema": 2, "device": "jetson-01", "seq": 1, "observed_at": 1.0, "type": "event", "body": '
    + b"[" * 900 + b"]" * 900 + b"}",
    b'{"schema": 2, "device": "jetson-01", "seq": 1, "observed_at": 1.0, "type": "event", "body": {"label": '
    + b"[" * 900 + b"]" * 900 + b"}}",
])
def test_deep_nesting_is_refused_without_recursion_errors(payload):
    with pytest.raises(ContractError):
        messages.decode(payload)


@pytest.mark.parametrize("value", [None, True, 1, 1.5, "x", [], [1, 2], {"a": 1}, {"schema": [2]},
                                   {"schema": 2, "device": ["d"], "seq": {}, "observed_at": [], "type": {},
                                    "body": []}])
def test_validate_is_total_on_any_json_value(value):
    with pytest.raises(ContractError):
        messages.validate(value)


def test_the_device_side_cannot_encode_what_the_server_would_refuse():
    with pytest.raises(ContractError, match="message schema is True"):
        messages.encode(_envelope(schema=True))


# -- any JSON, anywhere: a ContractError or the envelope, never another exception ----------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_FIELDS = ("schema", "device", "seq", "observed_at", "type", "body")


@settings(max_examples=400, deadline=None)
@given(type_=st.sampled_from(["event", "head"]), field=st.sampled_from(_FIELDS + tuple(f"body.{k}" for k in (
    "label", "score", "head_version", "weight", "bias", "labels", "embedding_dim", "extra"))), value=_json)
def test_any_json_value_in_any_field_gives_the_envelope_or_a_contract_error(type_, field, value):
    env = _envelope(type_)
    if field.startswith("body."):
        env["body"][field[5:]] = value
    else:
        env[field] = value
    try:
        payload = json.dumps(env).encode()
    except ValueError:  # an integer too long for json to write: nothing to send
        return
    try:
        messages.decode(payload)
    except ContractError:
        pass


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=256))
def test_any_bytes_give_a_contract_error(payload):
    with pytest.raises(ContractError):
        messages.decode(payload)
