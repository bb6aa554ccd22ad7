"""The bundle manifest (``manifest.json``): what a bundle holds, and proof that it is intact.

A bundle is a directory written by the exporter and read by the device. Its manifest records
the parameters the device needs (front-end, clip length, embedding size, heads and labels), the
host's evaluation and export-parity figures, provenance, and the sha256 of every other file.

The manifest is written in one canonical form (:func:`dumps`) and carries a digest of its own
content (``manifest_sha256``). :func:`verify_bundle` refuses a bundle when any file's bytes differ
from what the manifest records, when a listed file is missing or an unlisted one appears, or when
``manifest.json`` itself is not byte-for-byte the canonical form of a manifest with a matching
digest. A changed byte anywhere in the bundle is therefore refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from . import tensors
from .errors import ContractError, IntegrityError

SCHEMA_VERSION = 1
_CHUNK_BYTES = 1 << 20


def _require(cond: bool, what: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ContractError(f"manifest: {what} is {value!r}; expected {allowed}")


@dataclass(frozen=True)
class MfccParams:
    """The audio front-end's parameters; the exporter builds the graph from exactly these."""

    sample_rate_hz: int = 16000
    n_fft: int = 512
    window_samples: int = 400
    frame_hop_samples: int = 160
    n_mels: int = 40
    n_mfcc: int = 13
    fmin_hz: float = 20.0
    fmax_hz: float = 7600.0
    preemphasis: float = 0.97
    log_floor: float = 1e-10
    window: str = "hann"
    kind: str = "mfcc"  # "mfcc" or "logmel" (then n_mfcc is ignored and features are n_mels wide)

    #: Samples before the first frame that the graph reads (pre-emphasis needs one).
    lookback_samples: int = 1

    def __post_init__(self) -> None:
        _require(self.kind in ("mfcc", "logmel"), "audio.frontend.kind", self.kind, "'mfcc' or 'logmel'")
        _require(self.window == "hann", "audio.frontend.window", self.window, "'hann'")
        _require(self.sample_rate_hz >= 4000, "audio.frontend.sample_rate_hz", self.sample_rate_hz, "an integer >= 4000")
        _require(0 < self.window_samples <= self.n_fft, "audio.frontend.window_samples", self.window_samples,
                 f"1..n_fft ({self.n_fft})")
        _require(0 < self.frame_hop_samples <= self.window_samples, "audio.frontend.frame_hop_samples",
                 self.frame_hop_samples, f"1..window_samples ({self.window_samples})")
        _require(0 < self.n_mels <= self.n_fft // 2 + 1, "audio.frontend.n_mels", self.n_mels,
                 f"1..{self.n_fft // 2 + 1}")
        _require(0 < self.n_mfcc <= self.n_mels, "audio.frontend.n_mfcc", self.n_mfcc, f"1..n_mels ({self.n_mels})")
        _require(0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2, "audio.frontend.fmin_hz/fmax_hz",
                 (self.fmin_hz, self.fmax_hz), f"0 <= fmin < fmax <= {self.sample_rate_hz / 2}")
        _require(0.0 <= self.preemphasis < 1.0, "audio.frontend.preemphasis", self.preemphasis, "0 <= value < 1")
        _require(self.log_floor > 0, "audio.frontend.log_floor", self.log_floor, "a positive number")
        _require(self.lookback_samples == 1, "audio.frontend.lookback_samples", self.lookback_samples, "1")

    @property
    def n_features(self) -> int:
        """Width of one feature frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def n_frames(self, n_samples: int) -> int:
        """Frames the front-end makes from ``n_samples`` samples (look-back sample included)."""
        usable = n_samples - self.lookback_samples - self.n_fft
        return 0 if usable < 0 else 1 + usable // self.frame_hop_samples


@dataclass(frozen=True)
class AudioSpec:
    """The audio modality of a bundle."""

    frontend: MfccParams
    clip_samples: int
    embedding_size: int
    frontend_file: str = tensors.AUDIO_FRONTEND_FILE
    embedder_file: str = tensors.AUDIO_EMBEDDER_FILE

    def __post_init__(self) -> None:
        _require(self.clip_samples >= self.frontend.n_fft, "audio.clip_samples", self.clip_samples,
                 f"at least n_fft ({self.frontend.n_fft})")
        _require(self.embedding_size > 0, "audio.embedding_size", self.embedding_size, "a positive integer")

    @property
    def frames_per_clip(self) -> int:
        """Frames the embedder takes: a clip plus the look-back sample gives exactly these."""
        return self.frontend.n_frames(self.clip_samples + self.frontend.lookback_samples)


@dataclass(frozen=True)
class HeadSpec:
    """A linear head over an embedding: ``logits = embedding @ weight.T + bias``."""

    name: str
    labels: tuple[str, ...]
    file: str = tensors.HEAD_FILE
    input: str = "audio"
    background_label: str | None = tensors.BACKGROUND_LABEL

    def __post_init__(self) -> None:
        _require(bool(self.name), "heads[].name", self.name, "a non-empty string")
        _require(len(self.labels) >= 2, f"heads[{self.name}].labels", self.labels, "at least two labels")
        _require(len(set(self.labels)) == len(self.labels), f"heads[{self.name}].labels", self.labels,
                 "labels without repeats")
        _require(all(isinstance(x, str) and x for x in self.labels), f"heads[{self.name}].labels", self.labels,
                 "non-empty strings")
        _require(self.background_label is None or self.background_label in self.labels,
                 f"heads[{self.name}].background_label", self.background_label, "null or one of the labels")


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` says. Build it, then :func:`write_bundle_manifest` it."""

    bundle_id: str
    bundle_version: str
    created_at: str
    modalities: tuple[str, ...]
    heads: tuple[HeadSpec, ...]
    audio: AudioSpec | None = None
    fusion: str = "none"
    replay_file: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    parity: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _require(self.schema_version == SCHEMA_VERSION, "schema_version", self.schema_version, str(SCHEMA_VERSION))
        _require(bool(self.bundle_id) and "/" not in self.bundle_id, "bundle_id", self.bundle_id,
                 "a non-empty string without '/'")
        _require(bool(self.bundle_version), "bundle_version", self.bundle_version, "a non-empty string")
        _require(set(self.modalities) <= {"audio", "image"} and len(self.modalities) > 0, "modalities",
                 self.modalities, "a non-empty subset of ['audio', 'image']")
        _require(("audio" in self.modalities) == (self.audio is not None), "audio", self.audio,
                 "present exactly when 'audio' is in modalities")
        _require(self.fusion in ("none", "concat", "gate"), "fusion", self.fusion, "'none', 'concat' or 'gate'")
        _require(len(self.heads) >= 1, "heads", self.heads, "at least one head")
        names = [h.name for h in self.heads]
        _require(len(set(names)) == len(names), "heads[].name", names, "unique names")

    def head(self, name: str | None = None) -> HeadSpec:
        """The head called ``name``, or the first head."""
        if name is None:
            return self.heads[0]
        for h in self.heads:
            if h.name == name:
                return h
        raise ContractError(f"manifest: no head called {name!r}; heads are {[h.name for h in self.heads]}")

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["modalities"] = list(self.modalities)
        out["heads"] = [dict(asdict(h), labels=list(h.labels)) for h in self.heads]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Manifest":
        if not isinstance(data, Mapping):
            raise ContractError(f"manifest: top level is {type(data).__name__}; expected a JSON object")
        data = dict(data)
        data.pop("manifest_sha256", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        _require(not unknown, "keys", unknown, f"only {sorted(known)}")
        for key in ("bundle_id", "bundle_version", "created_at", "modalities", "heads"):
            _require(key in data, key, None, "present")
        try:
            audio = data.get("audio")
            if audio is not None:
                audio = dict(audio)
                audio["frontend"] = MfccParams(**audio["frontend"])
                audio = AudioSpec(**audio)
            heads = tuple(HeadSpec(**dict(h, labels=tuple(h["labels"]))) for h in data["heads"])
        except (TypeError, KeyError) as exc:
            raise ContractError(f"manifest: malformed audio or heads section: {exc}") from exc
        data.update(audio=audio, heads=heads, modalities=tuple(data["modalities"]))
        return cls(**data)


def _canonical_body(data: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def dumps(manifest: Manifest) -> str:
    """The canonical text of ``manifest.json``: sorted keys, two-space indent, own digest."""
    data = manifest.to_dict()
    _check_finite(data, "manifest")
    data["manifest_sha256"] = hashlib.sha256(_canonical_body(data)).hexdigest()
    return json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ContractError(f"{where} is {value}; expected a finite number (JSON has no NaN)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(bundle_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.name != tensors.MANIFEST_FILE
    )


def write_bundle_manifest(bundle_dir: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``bundle_dir`` into ``manifest.files`` and write ``manifest.json``.

    Returns the manifest with ``files`` filled in. Call it last, once every other file is written.
    """
    bundle_dir = Path(bundle_dir)
    files = {
        name: {"sha256": sha256_file(bundle_dir / name), "bytes": (bundle_dir / name).stat().st_size}
        for name in _bundle_files(bundle_dir)
    }
    referenced = [manifest.audio.frontend_file, manifest.audio.embedder_file] if manifest.audio else []
    referenced += [h.file for h in manifest.heads] + ([manifest.replay_file] if manifest.replay_file else [])
    missing = [name for name in referenced if name not in files]
    _require(not missing, "referenced files", missing, f"files present in {bundle_dir}")
    data = manifest.to_dict()
    data["files"] = files
    final = Manifest.from_dict(data)
    tmp = bundle_dir / (tensors.MANIFEST_FILE + ".tmp")
    tmp.write_text(dumps(final))
    tmp.replace(bundle_dir / tensors.MANIFEST_FILE)
    return final


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse ``manifest.json`` and check its own digest and canonical form (not the other files)."""
    path = Path(bundle_dir) / tensors.MANIFEST_FILE
    if not path.is_file():
        raise ContractError(f"bundle {bundle_dir}: no {tensors.MANIFEST_FILE}; is this an edgetune bundle directory?")
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"bundle {bundle_dir}: {tensors.MANIFEST_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "manifest_sha256" not in data:
        raise IntegrityError(f"bundle {bundle_dir}: {tensors.MANIFEST_FILE} has no manifest_sha256")
    actual = hashlib.sha256(_canonical_body(data)).hexdigest()
    if actual != data["manifest_sha256"]:
        raise IntegrityError(
            f"bundle {bundle_dir}: {tensors.MANIFEST_FILE} was changed after export "
            f"(content sha256 {actual[:12]}…, recorded {str(data['manifest_sha256'])[:12]}…)"
        )
    manifest = Manifest.from_dict(data)
    if dumps(manifest) != text:
        raise IntegrityError(
            f"bundle {bundle_dir}: {tensors.MANIFEST_FILE} is not in the canonical form the exporter writes "
            "(whitespace or key order changed after export)"
        )
    return manifest


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Read the manifest and check every file against it. Raises :class:`IntegrityError`.

    The message names each file that is missing, unexpected or changed.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    problems = []
    present = set(_bundle_files(bundle_dir))
    for name, entry in sorted(manifest.files.items()):
        if name not in present:
            problems.append(f"{name}: missing")
            continue
        actual = sha256_file(bundle_dir / name)
        if actual != entry.get("sha256"):
            problems.append(f"{name}: sha256 {actual[:12]}… but the manifest records {str(entry.get('sha256'))[:12]}…")
    for name in sorted(present - set(manifest.files)):
        problems.append(f"{name}: not listed in the manifest")
    if problems:
        raise IntegrityError(f"bundle {bundle_dir} failed verification, refusing it: " + "; ".join(problems))
    return manifest
