"""The bundle manifest (``manifest.json``): what a bundle holds, and proof that it is intact.

A bundle is a directory written by the exporter and read by the device. Its manifest (schema
:data:`SCHEMA_VERSION`) records, per modality, what the device feeds the graphs and how
(:mod:`.audio_spec`, :mod:`.image_spec`), each graph with its precision variants
(:mod:`.graphs`), the fusion, the named heads (each with its labels, its input -- one modality's
embedding or the fused one --, its file and its replay set), the host's evaluation and
export-parity figures, provenance (code, data, config, and every backbone's origin, license and
sha256), and the sha256 of every other file.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import tensors
from .audio_spec import AudioEmbedderSpec, AudioSpec, MfccParams, SpeechMelParams  # noqa: F401 (re-exported)
from .checks import is_int, require
from .errors import ContractError, IntegrityError
from .image_spec import ImageSpec

SCHEMA_VERSION = 2
_CHUNK_BYTES = 1 << 20

MODALITIES = ("audio", "image")
#: What a head reads: one modality's embedding, or the fusion's output.
HEAD_INPUTS = MODALITIES + ("fused",)
FUSIONS = ("none", "concat", "gated")

_REEXPORT = ("re-export it with this version of edgetune (`edgetune export train --out DIR ...`); "
             "bundles are rebuilt from the training data or checkpoint, never patched")


@dataclass(frozen=True)
class HeadSpec:
    """A linear head: ``logits = input @ weight.T + bias`` over ``input``'s embedding.

    ``file`` holds the arrays (``contract/tensors.py``), ``replay_file`` (optional) a few
    embeddings per label against forgetting when the device refits it.
    """

    name: str
    labels: tuple[str, ...]
    input: str = "audio"
    file: str = tensors.HEAD_FILE
    replay_file: str | None = None
    background_label: str | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and 0 < len(self.name) <= 64 and self.name.replace("_", "a")
                .replace("-", "a").isalnum(), "heads[].name", self.name, "1-64 letters, digits, '_' or '-'")
        require(len(self.labels) >= 2, f"heads[{self.name}].labels", self.labels, "at least two labels")
        require(len(set(self.labels)) == len(self.labels), f"heads[{self.name}].labels", self.labels,
                "labels without repeats")
        require(all(isinstance(x, str) and 0 < len(x) <= 128 for x in self.labels), f"heads[{self.name}].labels",
                self.labels, "strings of 1-128 characters")
        require(self.input in HEAD_INPUTS, f"heads[{self.name}].input", self.input, f"one of {list(HEAD_INPUTS)}")
        for name in ("file", "replay_file"):
            value = getattr(self, name)
            require((value is None and name == "replay_file") or (isinstance(value, str) and value.endswith(".npz")
                    and "/" not in value), f"heads[{self.name}].{name}", value, "a .npz file name in the bundle")
        require(self.background_label is None or self.background_label in self.labels,
                f"heads[{self.name}].background_label", self.background_label, "null or one of the labels")

    @property
    def files(self) -> tuple[str, ...]:
        return (self.file,) + ((self.replay_file,) if self.replay_file else ())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "input": self.input, "file": self.file,
                "replay_file": self.replay_file, "background_label": self.background_label}

    @classmethod
    def from_dict(cls, data: Any) -> "HeadSpec":
        keys = {"name", "labels", "input", "file", "replay_file", "background_label"}
        require(isinstance(data, Mapping) and set(data) == keys, "heads[] keys",
                sorted(data) if isinstance(data, Mapping) else data, f"exactly {sorted(keys)}")
        require(isinstance(data["labels"], list), "heads[].labels", data["labels"], "a list of labels")
        return cls(**dict(data, labels=tuple(data["labels"])))


@dataclass(frozen=True)
class FusionSpec:
    """How modalities' embeddings combine for ``fused`` heads: ``none``, ``concat`` (the pooled
    embeddings side by side) or ``gated`` (a learned gate weighs each modality per sample; its
    weights in ``file``)."""

    kind: str = "none"
    inputs: tuple[str, ...] = ()
    file: str | None = None

    def __post_init__(self) -> None:
        require(self.kind in FUSIONS, "fusion.kind", self.kind, f"one of {list(FUSIONS)}")
        if self.kind == "none":
            require(not self.inputs and self.file is None, "fusion", (self.inputs, self.file),
                    "no inputs and no file when the kind is 'none'")
            return
        require(len(self.inputs) >= 2 and len(set(self.inputs)) == len(self.inputs)
                and set(self.inputs) <= set(MODALITIES), "fusion.inputs", self.inputs,
                f"two or more of {list(MODALITIES)}")
        require((self.file is not None) == (self.kind == "gated"), "fusion.file", self.file,
                "the gate's .npz for 'gated', nothing for 'concat'")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "inputs": list(self.inputs), "file": self.file}

    @classmethod
    def from_dict(cls, data: Any) -> "FusionSpec":
        require(isinstance(data, Mapping) and set(data) == {"kind", "inputs", "file"}, "fusion", data,
                "an object with keys 'file', 'inputs', 'kind'")
        require(isinstance(data["inputs"], list), "fusion.inputs", data["inputs"], "a list of modalities")
        return cls(kind=data["kind"], inputs=tuple(data["inputs"]), file=data["file"])


_TOP_KEYS = ("schema_version", "bundle_id", "bundle_version", "created_at", "modalities", "audio", "image",
             "fusion", "heads", "metrics", "parity", "provenance", "files")


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` says. Build it, then :func:`write_bundle_manifest` it."""

    bundle_id: str
    bundle_version: str
    created_at: str
    heads: tuple[HeadSpec, ...]
    audio: AudioSpec | None = None
    image: ImageSpec | None = None
    fusion: FusionSpec = FusionSpec()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    parity: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        require(is_int(self.schema_version) and self.schema_version == SCHEMA_VERSION, "schema_version",
                self.schema_version, str(SCHEMA_VERSION))
        require(isinstance(self.bundle_id, str) and 0 < len(self.bundle_id) <= 128 and "/" not in self.bundle_id,
                "bundle_id", self.bundle_id, "1-128 characters without '/'")
        require(isinstance(self.bundle_version, str) and 0 < len(self.bundle_version) <= 64, "bundle_version",
                self.bundle_version, "1-64 characters")
        require(bool(self.modalities), "modalities", self.modalities, "at least one of 'audio' and 'image'")
        require(len(self.heads) >= 1, "heads", self.heads, "at least one head")
        names = [h.name for h in self.heads]
        require(len(set(names)) == len(names), "heads[].name", names, "unique names")
        for h in self.heads:
            allowed = list(self.modalities) + (["fused"] if self.fusion.kind != "none" else [])
            require(h.input in allowed, f"heads[{h.name}].input", h.input,
                    f"one of {allowed} (a modality of this bundle, or 'fused' when there is a fusion)")
        require(set(self.fusion.inputs) <= set(self.modalities), "fusion.inputs", self.fusion.inputs,
                f"modalities of this bundle {list(self.modalities)}")
        owned = [f for f in self.referenced_files]
        require(len(set(owned)) == len(owned), "files referenced", owned, "each file used by one part only")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this bundle has, in a fixed order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    @property
    def referenced_files(self) -> tuple[str, ...]:
        """Every file a part of the manifest names (each must be in the bundle)."""
        out: tuple[str, ...] = ()
        for spec in (self.audio, self.image):
            out += spec.files if spec is not None else ()
        out += (self.fusion.file,) if self.fusion.file else ()
        for h in self.heads:
            out += h.files
        return out

    def head(self, name: str | None = None) -> HeadSpec:
        """The head called ``name``, or the first head."""
        if name is None:
            return self.heads[0]
        for h in self.heads:
            if h.name == name:
                return h
        raise ContractError(f"manifest: no head called {name!r}; heads are {[h.name for h in self.heads]}")

    def heads_on(self, input_: str) -> tuple[HeadSpec, ...]:
        """The heads that read ``input_`` ('audio', 'image' or 'fused')."""
        return tuple(h for h in self.heads if h.input == input_)

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "bundle_id": self.bundle_id,
                "bundle_version": self.bundle_version, "created_at": self.created_at,
                "modalities": list(self.modalities),
                "audio": self.audio.to_dict() if self.audio is not None else None,
                "image": self.image.to_dict() if self.image is not None else None,
                "fusion": self.fusion.to_dict(), "heads": [h.to_dict() for h in self.heads],
                "metrics": dict(self.metrics), "parity": dict(self.parity), "provenance": dict(self.provenance),
                "files": {k: dict(v) for k, v in self.files.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Manifest":
        if not isinstance(data, Mapping):
            raise ContractError(f"manifest: top level is {type(data).__name__}; expected a JSON object")
        data = dict(data)
        data.pop("manifest_sha256", None)
        version = data.get("schema_version")
        if is_int(version) and version < SCHEMA_VERSION:
            raise ContractError(f"manifest: schema_version {version} is from an older edgetune; this device reads "
                                f"schema {SCHEMA_VERSION} (per-modality inputs, named heads): {_REEXPORT}")
        require(is_int(version) and version == SCHEMA_VERSION, "schema_version", version, str(SCHEMA_VERSION))
        require(set(data) == set(_TOP_KEYS), "keys", sorted(data), f"exactly {sorted(_TOP_KEYS)}")
        for key in ("metrics", "parity", "provenance", "files"):
            require(isinstance(data[key], Mapping), key, type(data[key]).__name__, "an object")
        require(isinstance(data["heads"], list), "heads", data["heads"], "a list of heads")
        manifest = cls(
            bundle_id=data["bundle_id"], bundle_version=data["bundle_version"], created_at=data["created_at"],
            heads=tuple(HeadSpec.from_dict(h) for h in data["heads"]),
            audio=None if data["audio"] is None else AudioSpec.from_dict(data["audio"]),
            image=None if data["image"] is None else ImageSpec.from_dict(data["image"]),
            fusion=FusionSpec.from_dict(data["fusion"]), metrics=data["metrics"], parity=data["parity"],
            provenance=data["provenance"], files=data["files"], schema_version=version)
        require(list(manifest.modalities) == data["modalities"], "modalities", data["modalities"],
                f"{list(manifest.modalities)}, the modalities the manifest describes")
        return manifest


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
    referenced = manifest.referenced_files
    missing = [name for name in referenced if name not in files]
    require(not missing, "referenced files", missing, f"files present in {bundle_dir}")
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
