"""A verified bundle, loaded: manifest, directory, the bundle's head and its replay set.

:func:`load_bundle` checks every byte of the bundle against its manifest first
(:func:`~edgetune.edge.contract.manifest.verify_bundle`): a changed, missing or extra file is
refused with an :class:`~edgetune.edge.contract.IntegrityError` naming the file. The ONNX
graphs are not opened here; :mod:`edgetune.edge.audio.models` does that.

A bundle shipped as a ``.tar`` (``<name>/manifest.json``, ...) is unpacked once into
``<state_dir>/bundles/<sha256 of the tar>/`` (regular files and folders only; absolute paths,
``..`` and links are refused) and then verified like a directory.
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

from .contract import ContractError, tensors
from .contract.manifest import Manifest, verify_bundle
from .head import Head
from .state import default_state_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Replay:
    """Replay samples against forgetting: ``embeddings`` float32 [M, D], ``labels`` M names."""

    embeddings: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle that passed verification.

    directory: where it lives. manifest: its parsed manifest. content_id: 16 hex digits derived
    from the manifest digest, which changes with any byte of the bundle; device state (head
    versions) is kept per content id. head: the bundle's own head (head version 0). replay: the
    replay set, or ``None`` when the bundle has none.
    """

    directory: Path
    manifest: Manifest
    content_id: str
    head: Head
    replay: Replay | None

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    @property
    def bundle_version(self) -> str:
        return self.manifest.bundle_version

    @property
    def background_label(self) -> str | None:
        return self.manifest.head().background_label


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
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar.getmembers():
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
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"bundle archive {tar_path} cannot be unpacked: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def load_bundle(path: str | os.PathLike[str], *, state_dir: str | os.PathLike[str] | None = None) -> Bundle:
    """Verify and load the bundle directory (or ``.tar``, unpacked under ``state_dir``) at ``path``.

    Raises :class:`UsageError` when ``path`` is neither a directory nor a tar archive, and
    :class:`ContractError` (or its subclass :class:`IntegrityError`) when the bundle is tampered
    with or malformed.
    """
    directory = Path(path)
    if directory.is_file() and tarfile.is_tarfile(directory):
        directory = unpack_bundle(directory, state_dir if state_dir is not None else default_state_dir())
    if not directory.is_dir():
        raise UsageError(f"bundle {directory} does not exist or is not a directory; "
                         "pass the folder `edgetune export` wrote (the one holding manifest.json) or its .tar")
    manifest = verify_bundle(directory)
    spec = manifest.head()
    arrays = _npz(directory / spec.file, (tensors.HEAD_WEIGHT, tensors.HEAD_BIAS))
    weight, bias = arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS]
    if weight.ndim != 2 or weight.shape[0] != len(spec.labels) or bias.shape != (len(spec.labels),):
        raise ContractError(f"bundle file {spec.file}: weight {weight.shape}, bias {bias.shape}; expected "
                            f"[{len(spec.labels)}, D] and [{len(spec.labels)}] for labels {list(spec.labels)}")
    if manifest.audio is not None and spec.input == "audio" and weight.shape[1] != manifest.audio.embedding_size:
        raise ContractError(f"bundle file {spec.file}: weight is {weight.shape[1]} wide; expected "
                            f"audio.embedding_size {manifest.audio.embedding_size}")
    try:
        head = Head(weight, bias, spec.labels)
    except ValueError as exc:
        raise ContractError(f"bundle file {spec.file}: {exc}") from None
    replay = None
    if manifest.replay_file:
        data = _npz(directory / manifest.replay_file, (tensors.REPLAY_EMBEDDINGS, tensors.REPLAY_LABELS))
        emb, idx = data[tensors.REPLAY_EMBEDDINGS], data[tensors.REPLAY_LABELS]
        if (emb.ndim != 2 or emb.shape[1] != head.embedding_size or idx.shape != (emb.shape[0],)
                or not np.issubdtype(idx.dtype, np.integer)):
            raise ContractError(f"bundle file {manifest.replay_file}: embeddings {emb.shape} {emb.dtype}, labels "
                                f"{idx.shape} {idx.dtype}; expected [M, {head.embedding_size}] float and [M] integers")
        if idx.size and (idx.min() < 0 or idx.max() >= len(head.labels)):
            raise ContractError(f"bundle file {manifest.replay_file}: label indices span {idx.min()}..{idx.max()}; "
                                f"expected 0..{len(head.labels) - 1} (indices into the head's labels)")
        if not np.isfinite(emb).all():
            raise ContractError(f"bundle file {manifest.replay_file}: embeddings contain NaN or Inf")
        replay = Replay(emb.astype(np.float32), tuple(head.labels[i] for i in idx))
    bundle = Bundle(directory=directory.resolve(), manifest=manifest, content_id=content_id_of(directory),
                    head=head, replay=replay)
    log.info("bundle %s %s (content %s): %d labels, replay %s", manifest.bundle_id, manifest.bundle_version,
             bundle.content_id, len(head.labels), "none" if replay is None else f"{len(replay.labels)} samples")
    return bundle
