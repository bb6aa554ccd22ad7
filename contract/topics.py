"""MQTT topic names, versioned. Devices write only their own subtree; the server reads them all.

    edgetune/v1/<device>/status    retained; the last will says offline
    edgetune/v1/<device>/events    detections
    edgetune/v1/<device>/metrics   latency percentiles, fps, real-time factor, provider, memory
    edgetune/v1/<device>/heads     a locally fine-tuned head, for aggregation
    edgetune/v1/<device>/cmd       server -> device
    edgetune/v1/<device>/ack       server -> device: which of its sequence numbers are stored
    edgetune/v1/fleet/head         server -> devices, retained, signed
"""

from __future__ import annotations

import re

from .errors import ContractError

PREFIX = "edgetune/v1"
DEVICE_KINDS = ("status", "events", "metrics", "heads")
FLEET_HEAD = f"{PREFIX}/fleet/head"
#: Topic kinds the server writes under a device's subtree (the device reads them).
SERVER_KINDS = ("cmd", "ack")
#: The share group every server instance joins, so several instances split the load.
SHARE_GROUP = "edgetune-server"

#: Matched whole (``fullmatch``, ``\A…\Z``): with ``match`` and ``$``, "jetson-07\n" would pass.
_DEVICE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_RESERVED_IDS = {"fleet"}


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it can be a topic level; raise :class:`ContractError` otherwise."""
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id) or device_id in _RESERVED_IDS:
        raise ContractError(
            f"device id {device_id!r} is not allowed; expected 1-64 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit, and not 'fleet' (for example 'jetson-orin-07')"
        )
    return device_id


def device_topic(device_id: str, kind: str) -> str:
    """``edgetune/v1/<device>/<kind>`` for kind in status, events, metrics, heads, cmd, ack."""
    if kind not in DEVICE_KINDS + SERVER_KINDS:
        raise ContractError(f"topic kind {kind!r} is unknown; expected one of {DEVICE_KINDS + SERVER_KINDS}")
    return f"{PREFIX}/{check_device_id(device_id)}/{kind}"


def parse_device_topic(topic: str) -> tuple[str, str]:
    """Split ``edgetune/v1/<device>/<kind>`` into (device, kind); raise :class:`ContractError` otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] not in DEVICE_KINDS:
        raise ContractError(f"topic {topic!r} is not a device topic; expected '{PREFIX}/<device>/<{'|'.join(DEVICE_KINDS)}>'")
    return check_device_id(parts[2]), parts[3]


def server_subscriptions(shared: bool = True) -> list[str]:
    """Topic filters the server subscribes to; shared subscriptions split load across instances."""
    filters = [f"{PREFIX}/+/{kind}" for kind in DEVICE_KINDS]
    return [f"$share/{SHARE_GROUP}/{f}" for f in filters] if shared else filters
