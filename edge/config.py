"""The device daemon's configuration: one TOML file, frozen dataclasses, validated on construction.

A file looks like ``deploy/edgetune.toml``::

    device_id = "jetson-orin-07"
    bundle = "/var/lib/edgetune/bundles/current"

    [audio]
    source = "alsa"
    threshold = 0.6

    [mqtt]
    host = "broker.example.org"

:func:`~edgetune.edge.config_file.load_config` reads the file and applies command-line overrides on
top. The dataclasses
can also be built directly from keyword arguments (the CLI does this when there is no file);
every constructor checks its values and raises :class:`ConfigError` naming the field, the value
and what is allowed. Unknown keys are errors with a close-match hint, never silently ignored.

Relative paths in a file are relative to the file's folder (systemd starts the daemon in ``/``);
paths given as overrides or keyword arguments are used as given.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, Mapping

from edgetune.errors import UsageError

from .runtime.providers import ALIASES, provider_hint, resolve_provider

from edgetune.contract.errors import ContractError
from edgetune.contract.signing import TrustPolicy, parse_public_key
from edgetune.contract.topics import check_device_id
from .telemetry.outbox import OVERFLOW_POLICIES

__all__ = [
    "AudioConfig",
    "CameraConfig",
    "ConfigError",
    "DaemonConfig",
    "MetricsConfig",
    "MqttConfig",
    "RuntimeConfig",
    "TlsConfig",
]

#: The file the outbox lives in, inside the state directory.
OUTBOX_FILE = "outbox.sqlite"
#: Short names for ONNX Runtime execution providers (as the ``--providers`` flag takes them).


class ConfigError(UsageError, ValueError):
    """A config value, key or file is wrong. ``field`` is the dotted key, e.g. ``audio.hop_ms``."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# -- checks shared by the sections ---------------------------------------------------------


def _where(section: str, name: str) -> str:
    return f"[{section}] {name}" if section else name


def _dotted(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _fail(section: str, name: str, value: Any, allowed: str) -> ConfigError:
    shown = repr(str(value) if isinstance(value, PathLike) else value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{_where(section, name)} is {shown}; expected {allowed}", _dotted(section, name))


def _int(section: str, name: str, value: Any, lo: int, hi: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(section, name, value, f"an integer in [{lo}, {hi}]{unit}")
    return value


def _float(section: str, name: str, value: Any, lo: float, hi: float, unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise _fail(section, name, value, f"a number in [{lo:g}, {hi:g}]{unit}")
    return float(value)


def _positive(section: str, name: str, value: Any, hi: float, unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= hi:
        raise _fail(section, name, value, f"a number in (0, {hi:g}]{unit}")
    return float(value)


def _bool(section: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(section, name, value, "true or false")
    return value


def _text(section: str, name: str, value: Any, allowed: str, limit: int = 1024) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise _fail(section, name, value, allowed)
    return value


def _optional_text(section: str, name: str, value: Any, allowed: str, limit: int = 1024) -> str | None:
    return None if value is None else _text(section, name, value, allowed, limit)


def _path(section: str, name: str, value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, (str, PathLike)) and str(value).strip():
        return Path(value)
    raise _fail(section, name, value, "a path (a non-empty string)")


def _optional_path(section: str, name: str, value: Any) -> Path | None:
    return None if value is None else _path(section, name, value)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


def _check_keys(cls: type, data: Mapping[str, Any], section: str) -> None:
    allowed = [f.name for f in fields(cls)]
    for key in data:
        if key in allowed:
            continue
        where = f"in [{section}]" if section else "at the top level"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {allowed}"
        raise ConfigError(f"unknown key {key!r} {where}; {hint}", _dotted(section, str(key)))


def _section_from(cls: type, value: Any, section: str) -> Any:
    """A section given as its dataclass or as a mapping of its keys."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        _check_keys(cls, value, section)
        return cls(**value)
    raise ConfigError(f"[{section}] is {value!r}; expected a table of keys", section)


# -- sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: where sound comes from and when a score becomes a detection.

    Attributes:
        source: a source URI, e.g. ``"alsa"`` (default microphone), ``"wav:/path/clip.wav"``,
            ``"-"`` (raw PCM on stdin). Parsed by the streaming module.
        hop_ms: milliseconds of audio per inference (the window slides by this much); None = the
            bundle's natural hop (about 100 ms; 80 ms for speech_embedding, whose windows step by 80).
        threshold: smoothed score in (0, 1] at which a label is detected.
        smoothing_hops: scores are averaged over this many hops (1 = no smoothing).
        refractory_ms: milliseconds after a detection in which no other detection fires;
            None = one clip (a word fills at most one clip, so it gives one detection).
    """

    _section: ClassVar[str] = "audio"
    source: str = "alsa"
    hop_ms: float | None = None
    threshold: float = 0.5
    smoothing_hops: int = 3
    refractory_ms: float | None = None

    def __post_init__(self) -> None:
        s = self._section
        _text(s, "source", self.source, "a source URI such as 'alsa', 'wav:/path/clip.wav' or '-'")
        if self.hop_ms is not None:
            _set(self, "hop_ms", _positive(s, "hop_ms", self.hop_ms, 10_000.0, " (milliseconds), e.g. 80"))
        _set(self, "threshold", _positive(s, "threshold", self.threshold, 1.0, " (a smoothed score)"))
        _int(s, "smoothing_hops", self.smoothing_hops, 1, 100, " (hops; 1 = no smoothing)")
        if self.refractory_ms is not None:
            _set(self, "refractory_ms", _float(s, "refractory_ms", self.refractory_ms, 0.0, 3_600_000.0,
                                               " (milliseconds), or leave it out for one clip"))


@dataclass(frozen=True)
class CameraConfig:
    """``[camera]``: where frames come from, how often they are scored, when a score is an event.

    Attributes:
        source: ``"v4l2:0"`` (a V4L2 index or ``/dev/video0``), ``"rtsp://..."``, ``"gst:<pipeline
            ending in appsink>"`` (a CSI camera on a Jetson), ``"video:/path/x.mp4"`` or
            ``"images:/path/dir"``; None = no camera (an image bundle needs one).
        rate_hz: frames scored per second (a live camera's newest frame; a file's frames that far apart).
        folder_fps: the stream time between the images of a folder source.
        threshold: smoothed score in (0, 1] at which a label is detected.
        smoothing_frames: scores are averaged over this many frames (1 = no smoothing).
        hold_s: seconds an object must be gone (its score below the threshold) before it can give
            another event, so one object in view gives one event, not one per frame.
        backoff_max_s: longest wait between attempts to reopen a camera that went away.
    """

    _section: ClassVar[str] = "camera"
    source: str | None = None
    rate_hz: float = 5.0
    folder_fps: float = 1.0
    threshold: float = 0.6
    smoothing_frames: int = 3
    hold_s: float = 2.0
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        s = self._section
        _set(self, "source", _optional_text(s, "source", self.source,
                                            "a camera URI such as 'v4l2:0', 'rtsp://host/stream', 'gst:...', "
                                            "'video:/path/clip.mp4' or 'images:/path/dir'"))
        _set(self, "rate_hz", _positive(s, "rate_hz", self.rate_hz, 240.0, " (frames scored per second)"))
        _set(self, "folder_fps", _positive(s, "folder_fps", self.folder_fps, 240.0, " (images per second)"))
        _set(self, "threshold", _positive(s, "threshold", self.threshold, 1.0, " (a smoothed score)"))
        _int(s, "smoothing_frames", self.smoothing_frames, 1, 100, " (frames; 1 = no smoothing)")
        _set(self, "hold_s", _float(s, "hold_s", self.hold_s, 0.0, 3600.0, " (seconds)"))
        _set(self, "backoff_max_s", _positive(s, "backoff_max_s", self.backoff_max_s, 600.0, " (seconds)"))


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: ONNX Runtime execution providers and threads.

    Attributes:
        providers: ``"auto"`` (TensorRT, then CUDA, then CPU, whichever exist) or providers in
            order of preference, as a list or a comma-separated string, by alias (``tensorrt``,
            ``trt``, ``cuda``, ``cpu``) or full ONNX Runtime name; stored as a tuple of full names.
        require_accelerator: if true, running on the CPU alone is an error instead of a warning.
        intra_op_threads: ONNX Runtime intra-op threads; 0 lets ONNX Runtime decide (all cores).
    """

    _section: ClassVar[str] = "runtime"
    providers: str | tuple[str, ...] = "auto"
    require_accelerator: bool = False
    intra_op_threads: int = 1

    def __post_init__(self) -> None:
        s = self._section
        allowed = "'auto' or a list such as ['cuda', 'cpu'] or 'tensorrt,cuda,cpu'"
        providers = self.providers
        if providers != "auto":
            if isinstance(providers, str):
                providers = [p.strip() for p in providers.split(",") if p.strip()]
            if not isinstance(providers, (list, tuple)) or not providers:
                raise _fail(s, "providers", self.providers, allowed)
            names: list[str] = []
            for raw in providers:
                name = resolve_provider(raw) if isinstance(raw, str) else None
                if name is None:
                    raise _fail(s, "providers", raw, f"'auto', or providers among {list(ALIASES)} or full "
                                f"ONNX Runtime names such as 'CUDAExecutionProvider'{provider_hint(str(raw))}")
                if name not in names:
                    names.append(name)
            _set(self, "providers", tuple(names))
        _bool(s, "require_accelerator", self.require_accelerator)
        _int(s, "intra_op_threads", self.intra_op_threads, 0, 256, " (0 = ONNX Runtime decides)")


@dataclass(frozen=True)
class TlsConfig:
    """``[mqtt.tls]``: TLS to the broker. An empty table means TLS with the system's CAs.

    Attributes:
        ca_file: PEM file of the CA(s) that signed the broker's certificate; None = system CAs.
        cert_file: the device's client certificate (PEM), for brokers that require one.
        key_file: the private key of ``cert_file`` (PEM); may be omitted if ``cert_file`` holds it.
    """

    _section: ClassVar[str] = "mqtt.tls"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        s = self._section
        for name in ("ca_file", "cert_file", "key_file"):
            _set(self, name, _optional_path(s, name, getattr(self, name)))
        if self.key_file is not None and self.cert_file is None:
            raise _fail(s, "key_file", self.key_file, "no key_file without a cert_file (set cert_file too)")


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: the broker telemetry goes to, and the outbox that holds it while offline.

    Attributes:
        host: broker host name or address; None (the default) turns telemetry off.
        port: broker TCP port (1883 plain, 8883 is usual with TLS).
        client_id: MQTT client id; None uses the device id.
        username: broker user name (per-device credentials); None connects anonymously.
        password_file: file holding the password (first line), so the config can be shared
            and the secret kept 0600; needs ``username``.
        tls: TLS settings; None = plain TCP. ``tls = true`` in a file = TLS with system CAs.
        keepalive_s: seconds between MQTT pings; the broker declares the device offline (and
            publishes its last will) after 1.5 times this without traffic.
        outbox_max_messages: most messages kept while the broker cannot be reached.
        outbox_overflow: ``"drop_oldest"`` or ``"drop_newest"``; drops are counted and reported.
        ack_timeout_s: seconds a sent message waits for the server's end-to-end acknowledgement
            before the device sends it again (it leaves the outbox only on that acknowledgement).
    """

    _section: ClassVar[str] = "mqtt"
    host: str | None = None
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    outbox_max_messages: int = 100_000
    outbox_overflow: str = "drop_oldest"
    ack_timeout_s: int = 5

    def __post_init__(self) -> None:
        s = self._section
        host = _optional_text(s, "host", self.host, "a host name or address, e.g. 'broker.local'", 253)
        if host is not None and any(c.isspace() for c in host):
            raise _fail(s, "host", host, "a host name or address without spaces")
        _int(s, "port", self.port, 1, 65_535, " (TCP port)")
        _optional_text(s, "client_id", self.client_id, "a client id of 1-128 characters", 128)
        _optional_text(s, "username", self.username, "a user name of 1-256 characters", 256)
        _set(self, "password_file", _optional_path(s, "password_file", self.password_file))
        if self.password_file is not None and self.username is None:
            raise _fail(s, "password_file", self.password_file, "a password_file only together with a username")
        tls = self.tls
        if tls is True:
            tls = TlsConfig()
        elif tls is False:
            tls = None
        elif tls is not None:
            tls = _section_from(TlsConfig, tls, "mqtt.tls")
        _set(self, "tls", tls)
        _int(s, "keepalive_s", self.keepalive_s, 5, 65_535, " (seconds)")
        _int(s, "outbox_max_messages", self.outbox_max_messages, 1, 10_000_000, " (messages)")
        if self.outbox_overflow not in OVERFLOW_POLICIES:
            raise _fail(s, "outbox_overflow", self.outbox_overflow, f"one of {list(OVERFLOW_POLICIES)}")
        _int(s, "ack_timeout_s", self.ack_timeout_s, 1, 3_600, " (seconds)")

    @property
    def enabled(self) -> bool:
        """True when a broker is configured (telemetry on)."""
        return self.host is not None

    def read_password(self) -> str | None:
        """The password from ``password_file`` (its first line), or None when none is set."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"[mqtt] password_file {str(self.password_file)!r} cannot be read: {exc}",
                              "mqtt.password_file") from None
        password = text.splitlines()[0] if text.strip() else ""
        if not password:
            raise ConfigError(f"[mqtt] password_file {str(self.password_file)!r} is empty; expected the "
                              "password on its first line", "mqtt.password_file")
        return password


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: how often a ``metrics`` message summarises the last window.

    Attributes:
        interval_s: seconds (of audio, for an audio stream) per metrics window.
    """

    _section: ClassVar[str] = "metrics"
    interval_s: float = 10.0

    def __post_init__(self) -> None:
        _set(self, "interval_s", _positive(self._section, "interval_s", self.interval_s, 86_400.0, " (seconds)"))


_SECTIONS: dict[str, type] = {"audio": AudioConfig, "camera": CameraConfig, "runtime": RuntimeConfig,
                              "mqtt": MqttConfig, "metrics": MetricsConfig}


@dataclass(frozen=True)
class DaemonConfig:
    """The whole daemon configuration.

    Attributes:
        device_id: this device's id, a topic level (see :func:`default_device_id`).
        bundle: the bundle directory or ``.tar`` to run.
        state_dir: where the daemon keeps its state (outbox, fine-tuned heads, engine cache);
            None leaves the choice to :func:`edgetune.edge.state.resolve_state_dir`
            (``$EDGETUNE_STATE_DIR``, else ``$XDG_STATE_HOME/edgetune``, else ``~/.local/state``).
        audio, camera, runtime, mqtt, metrics: the sections; each may also be given as a mapping.
        trusted_keys: the public keys whose signature a bundle must carry, each ``ed25519:<base64>``
            or the path of a file holding one (``edgetune export keys --show-public`` prints it).
        allow_unsigned_bundles: accept a bundle with no signature (development only; logged as a
            warning at every start). A wrongly signed bundle is refused whatever this says.
    """

    _section: ClassVar[str] = ""
    device_id: str
    bundle: Path
    state_dir: Path | None = None
    audio: AudioConfig = field(default_factory=AudioConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    trusted_keys: tuple[str, ...] = ()
    allow_unsigned_bundles: bool = False

    def __post_init__(self) -> None:
        try:
            check_device_id(self.device_id)
        except ContractError as exc:
            raise ConfigError(f"device_id: {exc}", "device_id") from None
        _set(self, "trusted_keys", _trusted_keys(self.trusted_keys))
        _set(self, "allow_unsigned_bundles", _bool("", "allow_unsigned_bundles", self.allow_unsigned_bundles))
        _set(self, "bundle", _path("", "bundle", self.bundle))
        _set(self, "state_dir", _optional_path("", "state_dir", self.state_dir))
        for name, cls in _SECTIONS.items():
            _set(self, name, _section_from(cls, getattr(self, name), name))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DaemonConfig:
        """Build from a mapping shaped like the TOML file (unknown keys are errors)."""
        _check_keys(cls, data, "")
        for required in ("device_id", "bundle"):
            if required not in data:
                raise ConfigError(f"{required} is missing; expected it at the top level of the config "
                                  f"(or as --{required.replace('_', '-')})", required)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A mapping shaped like the TOML file (paths as strings, unset values left out)."""
        return _plain(self)

    def bundle_trust(self) -> TrustPolicy:
        """The trust policy :func:`~edgetune.edge.bundle.load_bundle` checks the bundle against."""
        return TrustPolicy.of(self.trusted_keys, allow_unsigned=self.allow_unsigned_bundles)


def _trusted_keys(value: Any) -> tuple[str, ...]:
    """``trusted_keys``: a list of ``ed25519:<base64>`` keys or key file paths, each one parsed now
    so that a wrong key fails at start-up, naming itself."""
    allowed = "a list of public keys, each 'ed25519:<base64>' or the path of a .pub file holding one"
    if isinstance(value, (str, PathLike)) or not isinstance(value, (list, tuple)):
        raise _fail("", "trusted_keys", value, allowed)
    keys = []
    for i, item in enumerate(value):
        if not isinstance(item, (str, PathLike)) or not str(item).strip():
            raise _fail("", f"trusted_keys[{i}]", item, allowed)
        try:
            parse_public_key(item)
        except ContractError as exc:
            raise ConfigError(f"trusted_keys[{i}]: {exc}", "trusted_keys") from None
        keys.append(str(item))
    return tuple(keys)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if getattr(obj, f.name) is not None}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    return obj
