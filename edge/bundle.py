"""A verified bundle, loaded: manifest, directory, its named heads and their replay sets.

:func:`load_bundle` checks every byte of the bundle against its manifest first
(:func:`~edgetune.contract.manifest.verify_bundle`): a changed, missing or extra file is
refused with an :class:`~edgetune.contract.IntegrityError` naming the file. The ONNX
graphs are not opened here; each modality's models module does that (:mod:`edgetune.edge.audio.models`).

A bundle shipped as a ``.tar`` (``<name>/manifest.json``, ...) is unpacked once into
``<state_dir>/bundles/<sha256 of the tar>/`` (regular files and folders only; absolute paths,
``..`` and links are refused) and then verified like a directory.

Every load takes a :class:`~edgetune.contract.signing.TrustPolicy`: the device's trusted public
keys (``trusted_keys`` in its config) and whether unsigned bundles are allowed (a development
setting, logged as a warning on every load). A bundle without a trusted signature is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import UsageError

from edgetune.contract import ContractError, tensors
from edgetune.contract.manifest import HeadSpec, Manifest, verify_bundle
from edgetune.contract.signing import TrustPolicy, read_bundle_signature
from .head import Head
from .state import default_state_dir

log = logging.getLogger(__name__)

#: Bounds on an archive, checked while unpacking (a bundle is a few dozen files, megabytes to a
#: few hundred megabytes).
MAX_ARCHIVE_MEMBERS = 10_000
MAX_ARCHIVE_BYTES = 16 << 30


@dataclass(frozen=True, eq=False)
class Replay:
    """Replay samples against forgetting: ``embeddings`` float32 [M, D], ``labels`` M names."""

    embeddings: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class BundleHead:
    """One of a bundle's named heads: its manifest entry, its arrays, its replay set (or ``None``)."""

    spec: HeadSpec
    head: Head
    replay: Replay | None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle that passed verification.

    directory: where it lives. manifest: its parsed manifest. content_id: 16 hex digits derived
    from the manifest digest, which changes with any byte of the bundle; device state (head
    versions) is kept per content id. heads: the bundle's named heads (each head's version 0),
    in manifest order.
    """

    directory: Path
    manifest: Manifest
    content_id: str
    heads: dict[str, BundleHead]

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    @property
    def bundle_version(self) -> str:
        return self.manifest.bundle_version

    def bundle_head(self, name: str | None = None) -> BundleHead:
        """The head called ``name`` (default: the first). A wrong name lists the heads there are."""
        if name is None:
            return next(iter(self.heads.values()))
        if name not in self.heads:
            raise UsageError(f"bundle {self.bundle_id} has no head {name!r}; its heads are {list(self.heads)}")
        return self.heads[name]

    @property
    def head(self) -> Head:
        """The first head's arrays."""
        return self.bundle_head().head

    @property
    def replay(self) -> Replay | None:
        """The first head's replay set."""
        return self.bundle_head().replay

    @property
    def background_label(self) -> str | None:
        return self.bundle_head().spec.background_label


def _npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise ContractError(f"bundle file {path.name}: arrays {missing} missing; it holds {data.files}, "
                                    f"expected {list(keys)}")
            return {k: data[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ContractError(f"bundle file {path.name}: not a readable .npz ({exc})") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError):
        return False


def content_id_of(directory: Path) -> str:
    """16 hex digits of sha256 over the manifest's own digest (``manifest_sha256``)."""
    digest = json.loads((directory / tensors.MANIFEST_FILE).read_text(encoding="utf-8"))["manifest_sha256"]
    return hashlib.sha256(str(digest).encode()).hexdigest()[:16]


def unpack_bundle(tar_path: str | os.PathLike[str], state_dir: str | os.PathLike[str]) -> Path:
    """Unpack a bundle ``.tar`` under ``state_dir/bundles/`` (once per tar content); return its directory."""
    tar_path = Path(tar_path)
    digest = hashlib.sha256()
    with open(tar_path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    root = Path(state_dir) / "bundles"
    dest = root / digest.hexdigest()[:16]
    if (dest / tensors.MANIFEST_FILE).is_file():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    members = total_bytes = 0
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                members += 1
                total_bytes += max(member.size, 0)
                if members > MAX_ARCHIVE_MEMBERS or total_bytes > MAX_ARCHIVE_BYTES:
                    raise ContractError(f"bundle archive {tar_path} holds more than {MAX_ARCHIVE_MEMBERS} members "
                                        f"or {MAX_ARCHIVE_BYTES >> 30} GiB; refusing it (a bundle is a few dozen "
                                        "files)")
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise ContractError(f"bundle archive {tar_path}: member {member.name!r} is not allowed "
                                        "(only relative files and folders, no links or '..')")
                target = staging.joinpath(*parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        manifests = sorted(staging.rglob(tensors.MANIFEST_FILE))
        if len(manifests) != 1 or len(manifests[0].relative_to(staging).parts) > 2:
            raise ContractError(f"bundle archive {tar_path}: expected one {tensors.MANIFEST_FILE} at the top or "
                                f"in one top-level folder; found {len(manifests)}")
        os.replace(manifests[0].parent, dest)
    except (tarfile.TarError, OSError, EOFError, UnicodeError) as exc:
        raise ContractError(f"bundle archive {tar_path} cannot be unpacked ({type(exc).__name__}: {exc}); "
                            "expected a complete .tar written by `edgetune export train --tar`") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def load_bundle(path: str | os.PathLike[str], *, trust: TrustPolicy,
                state_dir: str | os.PathLike[str] | None = None) -> Bundle:
    """Verify and load the bundle directory (or ``.tar``, unpacked under ``state_dir``) at ``path``.

    ``trust``: the public keys whose signature the bundle must carry (and whether an unsigned
    one is allowed). Raises :class:`UsageError` when ``path`` is neither a directory nor a tar
    archive, and :class:`ContractError` (or its subclasses :class:`IntegrityError`,
    :class:`~edgetune.contract.signing.SignatureError`) when the bundle is unsigned, wrongly
    signed, tampered with or malformed.
    """
    if not isinstance(trust, TrustPolicy):
        raise TypeError(f"trust is {type(trust).__name__}; expected a TrustPolicy (the device's trusted keys)")
    if trust.allow_unsigned:
        log.warning("allow_unsigned_bundles is on: a bundle without a signature is accepted. For development "
                    "only; a device in the field trusts signed bundles alone")
    directory = Path(path)
    if directory.is_file():
        if not _is_tar(directory):
            raise ContractError(f"bundle {directory} is a file but not a tar archive; expected a bundle directory "
                                "or the .tar `edgetune export train --tar` writes")
        directory = unpack_bundle(directory, state_dir if state_dir is not None else default_state_dir())
        unpacked = True
    else:
        unpacked = False
    if not directory.is_dir():
        raise UsageError(f"bundle {directory} does not exist or is not a directory; "
                         "pass the folder `edgetune export` wrote (the one holding manifest.json) or its .tar")
    try:
        manifest = verify_bundle(directory, trust=trust)
    except ContractError:
        if unpacked:  # a refused archive leaves nothing behind in the state directory
            shutil.rmtree(directory, ignore_errors=True)
        raise
    signature = read_bundle_signature(directory)
    log.info("bundle %s: %s", directory, "unsigned (allowed)" if signature is None
             else f"signed by trusted key {signature.key_id}")
    heads = {spec.name: _load_head(directory, manifest, spec) for spec in manifest.heads}
    bundle = Bundle(directory=directory.resolve(), manifest=manifest, content_id=content_id_of(directory),
                    heads=heads)
    log.info("bundle %s %s (content %s): modalities %s, heads %s", manifest.bundle_id, manifest.bundle_version,
             bundle.content_id, list(manifest.modalities),
             ", ".join(f"{h.name} ({h.spec.input}, {len(h.head.labels)} labels, replay "
                       f"{0 if h.replay is None else len(h.replay.labels)})" for h in heads.values()))
    return bundle


def input_splits(manifest: Manifest, input_: str) -> tuple[int, ...]:
    """Widths of what a head on ``input_`` reads: one modality's embedding, or the fusion's
    inputs' embeddings side by side (one width each)."""
    specs = {"audio": manifest.audio, "image": manifest.image}
    names = manifest.fusion.inputs if input_ == "fused" else (input_,)
    return tuple(specs[m].embedding_size for m in names if specs.get(m) is not None)


def _input_size(manifest: Manifest, input_: str) -> int | None:
    """Width of the embedding a head on ``input_`` reads."""
    splits = input_splits(manifest, input_)
    return sum(splits) if splits else None


def _load_head(directory: Path, manifest: Manifest, spec: HeadSpec) -> BundleHead:
    gated = spec.fusion == "gated"
    arrays = _npz(directory / spec.file, tensors.GATED_HEAD_ARRAYS if gated else (tensors.HEAD_WEIGHT,
                                                                                 tensors.HEAD_BIAS))
    weight, bias = arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS]
    if weight.ndim != 2 or weight.shape[0] != len(spec.labels) or bias.shape != (len(spec.labels),):
        raise ContractError(f"bundle file {spec.file}: weight {weight.shape}, bias {bias.shape}; expected "
                            f"[{len(spec.labels)}, D] and [{len(spec.labels)}] for labels {list(spec.labels)}")
    width = _input_size(manifest, spec.input)
    if width is not None and weight.shape[1] != width:
        raise ContractError(f"bundle file {spec.file}: weight is {weight.shape[1]} wide; expected the "
                            f"{spec.input} embedding size {width} (head {spec.name})")
    try:
        if gated:
            from .fusion.gated import load_fused_head

            head = load_fused_head(arrays, "gated", spec.labels, input_splits(manifest, spec.input))
        else:
            head = Head(weight, bias, spec.labels)
    except ValueError as exc:
        raise ContractError(f"bundle file {spec.file}: {exc}") from None
    replay = None
    if spec.replay_file:
        data = _npz(directory / spec.replay_file, (tensors.REPLAY_EMBEDDINGS, tensors.REPLAY_LABELS))
        emb, idx = data[tensors.REPLAY_EMBEDDINGS], data[tensors.REPLAY_LABELS]
        if (emb.ndim != 2 or emb.shape[1] != head.embedding_size or idx.shape != (emb.shape[0],)
                or not np.issubdtype(idx.dtype, np.integer)):
            raise ContractError(f"bundle file {spec.replay_file}: embeddings {emb.shape} {emb.dtype}, labels "
                                f"{idx.shape} {idx.dtype}; expected [M, {head.embedding_size}] float and [M] integers")
        if idx.size and (idx.min() < 0 or idx.max() >= len(head.labels)):
            raise ContractError(f"bundle file {spec.replay_file}: label indices span {idx.min()}..{idx.max()}; "
                                f"expected 0..{len(head.labels) - 1} (indices into the head's labels)")
        if not np.isfinite(emb).all():
            raise ContractError(f"bundle file {spec.replay_file}: embeddings contain NaN or Inf")
        replay = Replay(emb.astype(np.float32), tuple(head.labels[i] for i in idx))
    return BundleHead(spec=spec, head=head, replay=replay)
