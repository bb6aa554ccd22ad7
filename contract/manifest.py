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
digest. A changed byte anywhere in the bundle is therefore refused, and so is anything but
regular files and folders (a symbolic link, even to an identical copy). Integrity is not origin:
with a trust policy it also checks ``manifest.sig``, a trusted key's Ed25519 signature of the
manifest's bytes (:mod:`.signing`). Malformed input of any kind is a :class:`ContractError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import tensors
from .audio_spec import AudioEmbedderSpec, AudioSpec, MfccParams, SpeechMelParams  # noqa: F401 (re-exported)
from .checks import is_int, is_number, require
from .errors import ContractError, IntegrityError
from .image_spec import ImageSpec
from .signing import SIGNATURE_FILE, TrustPolicy, check_bundle_signature

SCHEMA_VERSION = 2
_CHUNK_BYTES = 1 << 20

MODALITIES = ("audio", "image")
#: What a head reads: one modality's embedding, or the fusion's output.
HEAD_INPUTS = MODALITIES + ("fused",)
#: How a fused head combines its inputs (:class:`HeadSpec`).
FUSED_HEADS = ("concat", "gated")

_REEXPORT = ("re-export it with this version of edgetune (`edgetune export train --out DIR ...`); "
             "bundles are rebuilt from the training data or checkpoint, never patched")


@dataclass(frozen=True)
class HeadSpec:
    """A head over ``input``'s embedding: one modality's, or ``fused`` (the fusion's inputs'
    embeddings side by side, in ``Manifest.fusion.inputs`` order).

    ``fusion`` says how a fused head combines them (``None`` for a single-modality head):
    ``concat`` is linear, ``logits = input @ weight.T + bias`` like every other head (the seed's
    global average pooling then concatenation); ``gated`` weighs each modality per sample with
    a learned gate first (the seed's local feature fusion; ``contract/tensors.py`` has its
    arrays). ``file`` holds the arrays, ``replay_file`` (optional) a few embeddings per label
    against forgetting when the device refits it.
    """

    name: str
    labels: tuple[str, ...]
    input: str = "audio"
    file: str = tensors.HEAD_FILE
    replay_file: str | None = None
    background_label: str | None = None
    fusion: str | None = None

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
        if self.input == "fused":
            require(self.fusion in FUSED_HEADS, f"heads[{self.name}].fusion", self.fusion,
                    f"one of {list(FUSED_HEADS)} for a fused head")
        else:
            require(self.fusion is None, f"heads[{self.name}].fusion", self.fusion,
                    "null: only a head whose input is 'fused' has a fusion")

    @property
    def files(self) -> tuple[str, ...]:
        return (self.file,) + ((self.replay_file,) if self.replay_file else ())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "input": self.input, "file": self.file,
                "replay_file": self.replay_file, "background_label": self.background_label, "fusion": self.fusion}

    @classmethod
    def from_dict(cls, data: Any) -> "HeadSpec":
        keys = {"name", "labels", "input", "file", "replay_file", "background_label", "fusion"}
        require(isinstance(data, Mapping) and set(data) == keys, "heads[] keys",
                sorted(data) if isinstance(data, Mapping) else data, f"exactly {sorted(keys)}")
        require(isinstance(data["labels"], list), "heads[].labels", data["labels"], "a list of labels")
        return cls(**dict(data, labels=tuple(data["labels"])))


@dataclass(frozen=True)
class FusionSpec:
    """Which modalities' embeddings ``fused`` heads read, side by side in ``inputs`` order, and
    how the device pairs them: the newest embedding of each stream, when the streams' times are
    at most ``window_s`` seconds apart; a modality with nothing that recent is missing, and the
    fused heads are not run (counted, never guessed). No inputs: no fusion."""

    inputs: tuple[str, ...] = ()
    window_s: float = 1.0

    def __post_init__(self) -> None:
        require(not self.inputs or (len(self.inputs) >= 2 and len(set(self.inputs)) == len(self.inputs)
                and set(self.inputs) <= set(MODALITIES)), "fusion.inputs", self.inputs,
                f"none, or two or more of {list(MODALITIES)} without repeats")
        require(is_number(self.window_s) and 0 < self.window_s <= 60, "fusion.window_s", self.window_s,
                "seconds in (0, 60]")
        object.__setattr__(self, "window_s", float(self.window_s))

    @property
    def enabled(self) -> bool:
        return bool(self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "window_s": self.window_s}

    @classmethod
    def from_dict(cls, data: Any) -> "FusionSpec":
        require(isinstance(data, Mapping) and set(data) == {"inputs", "window_s"}, "fusion", data,
                "an object with keys 'inputs', 'window_s'")
        require(isinstance(data["inputs"], list), "fusion.inputs", data["inputs"], "a list of modalities")
        return cls(inputs=tuple(data["inputs"]), window_s=data["window_s"])


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
            allowed = list(self.modalities) + (["fused"] if self.fusion.enabled else [])
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


#: Files in a bundle that its manifest does not list: the manifest itself and its signature.
_UNLISTED = (tensors.MANIFEST_FILE, SIGNATURE_FILE)
#: Limits that keep verification bounded on hostile input (a manifest is a few kilobytes).
MAX_MANIFEST_BYTES = 16 << 20
MAX_BUNDLE_ENTRIES = 10_000
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
#: What malformed JSON can raise inside the schema's constructors; turned into a ContractError.
_MALFORMED = (TypeError, KeyError, AttributeError, IndexError, ValueError, OverflowError, RecursionError)


def _bundle_files(bundle_dir: Path) -> list[str]:
    """Every file the manifest lists: all but ``manifest.json`` and its signature."""
    return sorted(
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.relative_to(bundle_dir).as_posix() not in _UNLISTED
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


def _shown(name: str) -> str:
    """A file name as messages show it: as it is, or quoted when it holds odd characters."""
    return name if name.isprintable() and " " not in name else repr(name)


def _fail(where: str, what: str) -> IntegrityError:
    return IntegrityError(f"bundle {where}: {tensors.MANIFEST_FILE} {what}; refusing it ({_REEXPORT})")


def _open_regular(path: Path, what: str):
    """``path`` opened for reading if it is a regular file, never through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if path.is_symlink():
            raise IntegrityError(f"{what} is a symbolic link; a bundle holds regular files only") from None
        raise IntegrityError(f"{what} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{what} is not a regular file; a bundle holds regular files only")
    return os.fdopen(fd, "rb")


def _sha256_regular(path: Path, what: str) -> str:
    digest = hashlib.sha256()
    with _open_regular(path, what) as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _scan_bundle(bundle_dir: Path) -> list[str]:
    """The bundle's regular files (relative POSIX paths, sorted). Links are not followed: a
    symbolic link anywhere in the bundle (to a file or a folder, pointing inside or outside), a
    FIFO, a socket or a device file is refused, as is a bundle of more than
    :data:`MAX_BUNDLE_ENTRIES` entries."""
    files: list[str] = []
    problems: list[str] = []
    stack = [(bundle_dir, "")]
    count = 0
    try:
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    count += 1
                    if count > MAX_BUNDLE_ENTRIES:
                        raise IntegrityError(f"bundle {bundle_dir} has more than {MAX_BUNDLE_ENTRIES} entries; "
                                             "a bundle holds a few dozen files, refusing it")
                    rel = prefix + entry.name
                    if entry.is_symlink():
                        problems.append(f"{_shown(rel)}: a symbolic link (a bundle holds regular files only)")
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), rel + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        files.append(rel)
                    else:
                        problems.append(f"{_shown(rel)}: not a regular file (a bundle holds regular files only)")
    except OSError as exc:
        raise IntegrityError(f"bundle {bundle_dir} cannot be listed: {exc}") from None
    if problems:
        raise IntegrityError(f"bundle {bundle_dir} failed verification, refusing it: " + "; ".join(sorted(problems)))
    return sorted(files)


def read_manifest_bytes(bundle_dir: Path) -> bytes:
    """``manifest.json``'s bytes: a regular file (not through a link) of at most
    :data:`MAX_MANIFEST_BYTES`. What a signature covers."""
    path = bundle_dir / tensors.MANIFEST_FILE
    if not path.is_symlink() and not path.exists():
        raise ContractError(f"bundle {bundle_dir}: no {tensors.MANIFEST_FILE}; is this an edgetune bundle directory?")
    with _open_regular(path, f"bundle {bundle_dir}: {tensors.MANIFEST_FILE}") as fh:
        raw = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _fail(str(bundle_dir), f"is larger than {MAX_MANIFEST_BYTES} bytes (a manifest is a few kilobytes)")
    return raw


def _check_file_entries(files: Mapping[str, Any], where: str) -> None:
    """Each listed file: a relative path inside the bundle, with a sha256 and a size."""
    for name, entry in files.items():
        parts = name.split("/") if isinstance(name, str) else []
        if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in name or "\0" in name \
                or name in _UNLISTED:
            raise _fail(where, f"lists the file {name!r}; expected a relative path inside the bundle "
                               "(no '..', no leading '/', not the manifest or its signature)")
        if not (isinstance(entry, Mapping) and set(entry) == {"sha256", "bytes"}
                and isinstance(entry["sha256"], str) and _SHA256.fullmatch(entry["sha256"])
                and is_int(entry["bytes"]) and entry["bytes"] >= 0):
            raise _fail(where, f"records {str(entry)[:80]!r} for {name!r}; expected "
                               "{'sha256': <64 hex digits>, 'bytes': <size>}")


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse ``manifest.json``'s bytes and check its own digest and canonical form.

    Any malformed input -- not UTF-8, not JSON, nested too deeply, a value of the wrong type, a
    non-finite number, a listed path outside the bundle -- raises :class:`ContractError` (or its
    subclass :class:`IntegrityError`) naming what was wrong; no other exception escapes.
    ``where`` names the bundle in messages.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(where, f"is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _fail(where, "is nested too deeply to be a manifest") from None
    except ValueError as exc:
        raise _fail(where, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "manifest_sha256" not in data:
        raise _fail(where, "is not a JSON object with a manifest_sha256")
    recorded = data["manifest_sha256"]
    if not isinstance(recorded, str):
        raise _fail(where, f"has a manifest_sha256 of type {type(recorded).__name__}; expected 64 hex digits")
    try:
        actual = hashlib.sha256(_canonical_body(data)).hexdigest()
    except _MALFORMED as exc:
        raise _fail(where, f"cannot be read as a manifest ({type(exc).__name__}: {str(exc)[:120]})") from None
    if actual != recorded:
        raise IntegrityError(f"bundle {where}: {tensors.MANIFEST_FILE} was changed after export "
                             f"(content sha256 {actual[:12]}…, recorded {recorded[:12]!r}…)")
    if isinstance(data.get("files"), Mapping):
        _check_file_entries(data["files"], where)
    try:
        manifest = Manifest.from_dict(data)
        canonical = dumps(manifest)
    except ContractError as exc:
        raise ContractError(f"bundle {where}: {exc}") from None
    except _MALFORMED as exc:
        raise _fail(where, f"does not follow the manifest schema ({type(exc).__name__}: {str(exc)[:120]})") from None
    if canonical != text:
        raise IntegrityError(f"bundle {where}: {tensors.MANIFEST_FILE} is not in the canonical form the exporter "
                             "writes (whitespace or key order changed after export)")
    return manifest


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse ``manifest.json`` and check its own digest and canonical form (not the other files,
    nor the signature: :func:`verify_bundle` does both)."""
    bundle_dir = Path(bundle_dir)
    return parse_manifest(read_manifest_bytes(bundle_dir), str(bundle_dir))


def verify_bundle(bundle_dir: Path, *, trust: TrustPolicy | None = None) -> Manifest:
    """Check a bundle directory completely and return its manifest. Raises :class:`ContractError`
    (:class:`IntegrityError`, :class:`~.signing.SignatureError`) naming every problem.

    In order: the bundle holds regular files and folders only (no symbolic links, see
    :func:`_scan_bundle`; the bundle directory itself may be a link, as ``current`` often is);
    with ``trust``, ``manifest.sig`` is a trusted key's signature of ``manifest.json``'s exact
    bytes (checked before the manifest is parsed, so unsigned content never reaches the parser;
    see :mod:`.signing`); the manifest is well formed, canonical and matches its own digest; and
    the files are exactly those it lists (besides itself and its signature), each with the size
    and sha256 it records. ``trust=None`` skips the signature only: the exporter's check of what
    it just wrote. The device always passes its trust policy.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise ContractError(f"bundle {bundle_dir} is not a directory; expected the folder holding "
                            f"{tensors.MANIFEST_FILE}")
    present = _scan_bundle(bundle_dir)
    raw = read_manifest_bytes(bundle_dir)
    if trust is not None:
        check_bundle_signature(bundle_dir, raw, trust)
    manifest = parse_manifest(raw, str(bundle_dir))
    problems = []
    for name, entry in sorted(manifest.files.items()):
        if name not in present:
            problems.append(f"{name}: missing")
            continue
        path = bundle_dir / name
        size = path.lstat().st_size
        if size != entry["bytes"]:
            problems.append(f"{name}: {size} bytes but the manifest records {entry['bytes']}")
            continue
        actual = _sha256_regular(path, f"bundle {bundle_dir}: {name}")
        if actual != entry["sha256"]:
            problems.append(f"{name}: sha256 {actual[:12]}… but the manifest records {entry['sha256'][:12]}…")
    for name in sorted(set(present) - set(manifest.files) - set(_UNLISTED)):
        problems.append(f"{_shown(name)}: not listed in the manifest")
    if problems:
        raise IntegrityError(f"bundle {bundle_dir} failed verification, refusing it: " + "; ".join(problems))
    return manifest
