"""Reading the daemon's TOML file, and the command-line values laid on top of it.

:func:`load_config` is the one way in: file (optional) -> plain dict -> overrides -> a validated
:class:`~edgetune.edge.config.DaemonConfig`. Messages start with the file name or with
"command-line override", whichever the offending value came from.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Mapping

from .config import _SECTIONS, ConfigError, DaemonConfig, MqttConfig, TlsConfig, _check_keys, _dotted, _int

__all__ = ["default_device_id", "load_config", "parse_broker"]


def parse_broker(text: str) -> tuple[str, int | None]:
    """``"host"``, ``"host:port"`` or ``"[v6addr]:port"`` (the ``--broker`` flag) -> (host, port or None)."""
    allowed = "HOST or HOST:PORT, e.g. 'broker.local:1883' or '[::1]:1883'"
    text = text.strip() if isinstance(text, str) else ""
    host, port = text, None
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[1:close], text[close + 1:] if close > 0 else ""
        if close < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"broker is {text!r}; expected {allowed}", "mqtt.host")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or (port is not None and not port.isdigit()):
        raise ConfigError(f"broker is {text!r}; expected {allowed}", "mqtt.host")
    return host, None if port is None else _int("mqtt", "port", int(port), 1, 65_535, " (TCP port)")


def default_device_id() -> str:
    """A device id from the host name (first label, lower case), for a daemon run without one."""
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).lstrip("_.-")[:64]
    return cleaned if cleaned and cleaned != "fleet" else "edgetune-device"


# -- loading -------------------------------------------------------------------------------

# Keys (as paths into the file) that hold file system paths, resolved against the file's folder.
_PATH_KEYS = (("bundle",), ("state_dir",), ("mqtt", "password_file"), ("mqtt", "tls", "ca_file"),
              ("mqtt", "tls", "cert_file"), ("mqtt", "tls", "key_file"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for keys in _PATH_KEYS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str) and node[keys[-1]].strip():
            node[keys[-1]] = str(base / Path(node[keys[-1]]).expanduser())
    keys = data.get("trusted_keys")
    if isinstance(keys, list):  # key files, relative to the config file; inline keys stay as they are
        data["trusted_keys"] = [str(base / Path(k).expanduser()) if isinstance(k, str) and k.strip()
                                and not k.strip().startswith("ed25519:") else k for k in keys]


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        elif value is not None:
            flat[dotted] = value
    return flat


def _check_override_key(dotted: str) -> None:
    parts = dotted.split(".")
    cls: type = DaemonConfig
    section = ""
    for i, part in enumerate(parts):
        _check_keys(cls, {part: None}, section)
        section = _dotted(section, part)
        if i < len(parts) - 1:
            nested = {"tls": TlsConfig} if cls is MqttConfig else _SECTIONS if cls is DaemonConfig else {}
            if part not in nested:
                raise ConfigError(f"override {dotted!r}: {section} is not a table", dotted)
            cls = nested[part]


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """Read the daemon's TOML file and apply overrides on top of it.

    Args:
        path: the TOML file, or None to build from ``overrides`` and defaults only.
        overrides: values from command-line flags, which win over the file. Keys are dotted
            (``{"audio.threshold": 0.7, "mqtt.host": "broker"}``) or nested mappings
            (``{"audio": {"threshold": 0.7}}``). A value of None means "flag not given" and
            is skipped, so ``vars(args)``-style dicts can be passed as they are.

    Raises:
        ConfigError: the file is missing or not TOML, a key is unknown (with a close-match
            hint), or a value is not allowed. The message starts with the file name or with
            "command-line override", whichever the offending value came from.
    """
    data: dict[str, Any] = {}
    origin = "command-line override"
    if path is not None:
        path = Path(path)
        origin = str(path)
        data = _read_toml(path)
        _resolve_paths(data, path.resolve().parent)
    flat = _flatten(overrides or {})
    for dotted in flat:
        try:
            _check_override_key(dotted)
        except ConfigError as exc:
            raise ConfigError(f"command-line override: {exc}", exc.field) from None
    for dotted, value in flat.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):  # absent, or `tls = true/false` under a tls.* override
                node[key] = {}
            node = node[key]
        node[last] = value
    try:
        return DaemonConfig.from_dict(data)
    except ConfigError as exc:
        source = "command-line override" if exc.field in flat else origin
        raise ConfigError(f"{source}: {exc}", exc.field) from None
