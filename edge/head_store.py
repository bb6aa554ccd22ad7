"""Versioned heads in the device's state directory, one store per head of a bundle content id.

::

    <state_dir>/heads/<bundle content id>/<head name>/
        index.json      versions, their lineage and held-out accuracy, the current pointer
        v1.npz, v2.npz  weight [C, D], bias [C], labels [C]

Version 0 is the bundle's own head of that name (never copied). Every refit is saved as a new version, with
``promoted`` telling whether it became current; :meth:`HeadStore.rollback` points ``current`` at
any saved version. Each file is written to a temporary name, flushed to disk and renamed over the
old one, and ``index.json`` last, so a crash at any moment leaves the previous, consistent store.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgetune.errors import UsageError

from .bundle import Bundle
from edgetune.contract import ContractError, tensors
from .head import Head

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
_FORMAT = 1
_LABELS_KEY = "labels"


@dataclass(frozen=True)
class HeadVersion:
    """One entry of the store's index. Accuracies are fractions 0..1 on held-out samples."""

    version: int
    labels: tuple[str, ...]
    created_at: str
    parent: int | None = None
    n_samples: int = 0
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    promoted: bool = True
    file: str | None = None
    sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["labels"] = list(self.labels)
        return out


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class HeadStore:
    """The versions of one named head of a bundle on this device (default: the bundle's first head)."""

    def __init__(self, bundle: Bundle, state_dir: str | os.PathLike[str], head_name: str | None = None) -> None:
        self.bundle = bundle
        self.base = bundle.bundle_head(head_name)
        self.head_name = self.base.name
        self.root = Path(state_dir) / "heads" / bundle.content_id / self.head_name

    # -- reading -------------------------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        path = self.root / INDEX_FILE
        if not path.is_file():
            return {"format": _FORMAT, "bundle_id": self.bundle.bundle_id,
                    "bundle_version": self.bundle.bundle_version, "content_id": self.bundle.content_id,
                    "head": self.head_name, "current": 0, "versions": [], "history": []}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT or not isinstance(data.get("versions"), list):
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
        except (ValueError, AttributeError) as exc:
            raise UsageError(f"head store index {path} is unreadable ({exc}); move the folder {self.root} "
                             "aside to start again from the bundle's head") from None
        return data

    def versions(self) -> list[HeadVersion]:
        """Every version, oldest first; version 0 is the bundle's head."""
        zero = HeadVersion(version=0, labels=self.base.head.labels, created_at=self.bundle.manifest.created_at,
                           details={"source": "bundle"})
        out = [zero]
        for entry in self._read_index()["versions"]:
            entry = dict(entry, labels=tuple(entry["labels"]))
            out.append(HeadVersion(**entry))
        return out

    @property
    def current_version(self) -> int:
        """The version in use."""
        return int(self._read_index()["current"])

    def info(self, version: int) -> HeadVersion:
        for entry in self.versions():
            if entry.version == version:
                return entry
        known = [v.version for v in self.versions()]
        raise UsageError(f"head version {version} does not exist for head {self.head_name} of bundle {self.bundle.bundle_id} "
                         f"(content {self.bundle.content_id}); versions are {known}")

    def head(self, version: int | None = None) -> Head:
        """The head of ``version`` (the current one when ``None``), checked against its recorded sha256."""
        version = self.current_version if version is None else version
        entry = self.info(version)
        if entry.file is None:
            return self.base.head
        path = self.root / entry.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"head version {version}: cannot read {path} ({exc})") from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ContractError(f"head version {version}: {path} does not match the sha256 in {INDEX_FILE}; "
                                f"roll back to another version (edgetune edge heads --rollback N)")
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return Head(arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS], tuple(arrays[_LABELS_KEY].tolist()))

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (an enrol while another enrol or a rollback runs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / INDEX_FILE, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())

    def add(self, head: Head, *, parent: int, n_samples: int, accuracy_before: float | None,
            accuracy_after: float | None, promote: bool, details: dict[str, Any] | None = None) -> HeadVersion:
        """Save ``head`` as the next version; make it current when ``promote``."""
        if head.embedding_size != self.base.head.embedding_size:
            raise ValueError(f"head is {head.embedding_size} wide; head {self.head_name}'s input is "
                             f"{self.base.head.embedding_size}")
        buf = io.BytesIO()
        np.savez(buf, **{tensors.HEAD_WEIGHT: head.weight, tensors.HEAD_BIAS: head.bias,
                         _LABELS_KEY: np.array(head.labels, dtype=np.str_)})
        data = buf.getvalue()
        with self._locked():
            index = self._read_index()
            version = 1 + max([0] + [int(v["version"]) for v in index["versions"]])
            entry = HeadVersion(version=version, labels=head.labels, created_at=_now(), parent=parent,
                                n_samples=int(n_samples), accuracy_before=accuracy_before,
                                accuracy_after=accuracy_after, promoted=bool(promote), file=f"v{version}.npz",
                                sha256=hashlib.sha256(data).hexdigest(), details=dict(details or {}))
            atomic_write_bytes(self.root / entry.file, data)
            index["versions"].append(entry.to_json())
            if promote:
                index["current"] = version
                index["history"].append({"at": entry.created_at, "current": version, "why": "promoted"})
            self._write_index(index)
        log.info("head version %d saved (%s), current is %d", version, "promoted" if promote else "not promoted",
                 version if promote else index["current"])
        return entry

    def rollback(self, version: int) -> HeadVersion:
        """Make ``version`` (any saved one, 0 = the bundle's head) current."""
        with self._locked():
            entry = self.info(version)
            if entry.file is not None:
                self.head(version)  # refuses a damaged file before pointing at it
            index = self._read_index()
            index["current"] = version
            index["history"].append({"at": _now(), "current": version, "why": "rollback"})
            self._write_index(index)
        log.info("head version %d is current (rollback)", version)
        return entry
