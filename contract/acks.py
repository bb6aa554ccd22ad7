"""The server's end-to-end acknowledgement: which of a device's sequence numbers are stored.

The server publishes one on ``edgetune/v1/<device>/ack`` (QoS 1, not retained) after each
database commit that held messages from that device, naming every sequence number of the
batch, newly stored or already stored (so a resent message is acknowledged again, whichever
instance stored it first). The device deletes a message from its outbox only on such an
acknowledgement, never on the broker's PUBACK: a broker that crashes, restarts without its
persistence file, or has no subscriber for a moment can then lose nothing the device still holds.

Payload (UTF-8 JSON, schema 2 like the device's messages)::

    {"schema": 2, "device": "jetson-07", "seqs": [[1795000000000001, 1795000000000040],
                                                   [1795000000000042, 1795000000000042]]}

``seqs`` is a list of inclusive ``[first, last]`` ranges, ascending and not overlapping, at most
:data:`MAX_RANGES` of them. A device refuses (counts, logs, ignores) any other shape: a bad or
forged acknowledgement must never delete a message.
"""

from __future__ import annotations

import json
from typing import Iterable

from .errors import ContractError
from .topics import check_device_id

SCHEMA = 2
#: Most ranges in one acknowledgement; a server splits longer lists over several messages.
MAX_RANGES = 512
#: Largest acknowledgement payload a device reads, in bytes.
MAX_ACK_BYTES = 64 * 1024
_MAX_SEQ = 2**63 - 1


def ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted, merged inclusive ``[first, last]`` ranges covering exactly ``seqs``."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and seq == out[-1][1] + 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


def encode(device: str, seqs: Iterable[int]) -> list[bytes]:
    """The acknowledgement payload(s) for ``seqs`` of ``device``: one per :data:`MAX_RANGES` ranges."""
    check_device_id(device)
    spans = ranges(seqs)
    return [json.dumps({"schema": SCHEMA, "device": device, "seqs": spans[i:i + MAX_RANGES]},
                       separators=(",", ":")).encode()
            for i in range(0, len(spans), MAX_RANGES)]


def _is_seq(value: object) -> bool:
    return type(value) is int and 0 <= value <= _MAX_SEQ  # noqa: E721 -- a bool is not a seq


def decode(device: str, payload: bytes) -> list[tuple[int, int]]:
    """The ranges an acknowledgement for ``device`` names; :class:`ContractError` if it is not one.

    Strict: exact types (``true`` is not ``2``, ``1.0`` is not an int), the right device,
    ascending non-overlapping ranges, bounded size.
    """
    if len(payload) > MAX_ACK_BYTES:
        raise ContractError(f"acknowledgement of {len(payload)} bytes; expected at most {MAX_ACK_BYTES}")
    try:
        msg = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ContractError(f"acknowledgement is not UTF-8 JSON: {exc}") from None
    if not isinstance(msg, dict) or set(msg) != {"schema", "device", "seqs"}:
        raise ContractError('acknowledgement must be an object with exactly "schema", "device" and "seqs", '
                            'for example {"schema": 2, "device": "jetson-07", "seqs": [[5, 9]]}')
    if type(msg["schema"]) is not int or msg["schema"] != SCHEMA:
        raise ContractError(f"acknowledgement schema is {msg['schema']!r}; expected the integer {SCHEMA}")
    if msg["device"] != device:
        raise ContractError(f"acknowledgement is for device {msg['device']!r}; expected {device!r}")
    spans = msg["seqs"]
    if not isinstance(spans, list) or len(spans) > MAX_RANGES:
        raise ContractError(f"acknowledgement seqs must be a list of at most {MAX_RANGES} [first, last] ranges")
    out: list[tuple[int, int]] = []
    for span in spans:
        if not (isinstance(span, list) and len(span) == 2 and _is_seq(span[0]) and _is_seq(span[1])
                and span[0] <= span[1]):
            raise ContractError(f"acknowledgement range {span!r} is not [first, last] with 0 <= first <= last < 2**63")
        if out and span[0] <= out[-1][1]:
            raise ContractError(f"acknowledgement ranges are not ascending and disjoint at {span!r}")
        out.append((span[0], span[1]))
    return out
