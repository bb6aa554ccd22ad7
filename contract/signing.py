"""Ed25519 signatures over bundle manifests and fleet heads: the scheme, and its verify side.

Integrity is not origin. A bundle's manifest hashes every file, but anyone who rewrites a file
can recompute the hashes; a signature by a key the device trusts says *who* made the bundle.
The same scheme signs the fleet heads the server publishes, so one trust list (and one piece
of code) serves the device for both.

The scheme (version 1):

- Keys are Ed25519 (RFC 8032). A public key is written as text, ``ed25519:<base64 of the 32
  raw bytes>`` (:meth:`PublicKey.to_text`); its *key id* is the first 16 hex digits of the
  sha256 of the raw bytes.
- What is signed is ``purpose`` (ASCII), one NUL byte, then the payload's bytes
  (:func:`signed_message`). The purpose separates uses: a bundle manifest's signature
  (:data:`BUNDLE_MANIFEST`) can never be replayed as a fleet head's (:data:`FLEET_HEAD`).
- A :class:`Signature` is ``{"scheme": "ed25519-v1", "purpose": ..., "key_id": ...,
  "signature": <base64 of 64 bytes>}`` as JSON. In a bundle it is the file
  :data:`SIGNATURE_FILE` beside ``manifest.json``, over ``manifest.json``'s exact bytes; it is
  the one file besides the manifest that the manifest does not list (the manifest cannot hold
  its own signature).

A verifier holds a :class:`TrustPolicy`: the public keys it trusts, and whether unsigned
bundles are allowed (a development setting, off by default). :func:`verify_payload` and
:func:`check_bundle_signature` raise :class:`SignatureError` naming what was wrong.

``cryptography`` (in the ``edge`` extra) is imported inside the functions that need it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ContractError, IntegrityError
from .tensors import MANIFEST_FILE

#: The bundle file that holds the manifest's signature.
SIGNATURE_FILE = "manifest.sig"
#: The ``scheme`` every signature names.
SCHEME = "ed25519-v1"
#: Purposes: what a signature is for; part of the signed bytes.
BUNDLE_MANIFEST = "edgetune bundle manifest"
FLEET_HEAD = "edgetune fleet head"
PURPOSES = (BUNDLE_MANIFEST, FLEET_HEAD)

_KEY_PREFIX = "ed25519:"
_RAW_KEY_BYTES = 32
_RAW_SIGNATURE_BYTES = 64
#: A signature file is a few hundred bytes; anything much larger is refused before it is read.
MAX_SIGNATURE_FILE_BYTES = 4096
#: A public key file holds one key line (and optional '#' comments).
MAX_KEY_FILE_BYTES = 16384

__all__ = [
    "BUNDLE_MANIFEST", "FLEET_HEAD", "SCHEME", "SIGNATURE_FILE", "PublicKey", "Signature", "SignatureError",
    "TrustPolicy", "check_bundle_signature", "parse_public_key", "read_bundle_signature", "sign_payload",
    "signed_message", "verify_payload",
]


class SignatureError(IntegrityError):
    """A signature is missing, malformed, by an untrusted key, or does not verify."""


def _crypto():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        raise ContractError("the cryptography package is not installed; signatures cannot be checked. "
                            "Install it with: pip install 'edgetune[edge]'") from None
    return ed25519, InvalidSignature


def _b64decode(text: str, what: str, expected_bytes: int) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SignatureError(f"{what} is not valid base64; expected {expected_bytes} bytes in base64") from None
    if len(raw) != expected_bytes:
        raise SignatureError(f"{what} decodes to {len(raw)} bytes; expected {expected_bytes}")
    return raw


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key: ``raw`` is its 32 bytes."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != _RAW_KEY_BYTES:
            raise SignatureError(f"an Ed25519 public key is {_RAW_KEY_BYTES} bytes; got "
                                 f"{len(self.raw) if isinstance(self.raw, bytes) else type(self.raw).__name__}")

    @property
    def key_id(self) -> str:
        """16 hex digits of sha256 over the raw key: short, stable, printed in every message."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def to_text(self) -> str:
        """``ed25519:<base64>``: the form key files, configs and ``--trusted-key`` take."""
        return _KEY_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> "PublicKey":
        """Parse ``ed25519:<base64 of 32 bytes>``."""
        if not isinstance(text, str) or not text.strip().startswith(_KEY_PREFIX):
            shown = repr(text)[:60]
            raise SignatureError(f"public key {shown} is not in the form 'ed25519:<base64 of 32 bytes>' "
                                 "(print one with `edgetune export keys --show-public`)")
        return cls(_b64decode(text.strip()[len(_KEY_PREFIX):], "public key", _RAW_KEY_BYTES))

    @classmethod
    def from_cryptography(cls, key: Any) -> "PublicKey":
        """From a ``cryptography`` Ed25519 public (or private) key object."""
        from cryptography.hazmat.primitives import serialization

        public = key.public_key() if hasattr(key, "public_key") else key
        return cls(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def parse_public_key(value: str | os.PathLike[str]) -> PublicKey:
    """A public key given inline (``ed25519:<base64>``) or as the path of a file that holds one.

    A key file holds one key line; blank lines and lines starting with ``#`` are ignored.
    Raises :class:`SignatureError` naming the value or file and the expected form.
    """
    text = os.fspath(value)
    if text.strip().startswith(_KEY_PREFIX):
        return PublicKey.from_text(text)
    path = Path(text).expanduser()
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SignatureError(f"public key file {str(path)!r} is not a regular file")
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise SignatureError(f"public key file {str(path)!r} is {info.st_size} bytes; expected one key line "
                                 f"(at most {MAX_KEY_FILE_BYTES} bytes)")
        content = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SignatureError(f"public key {text!r} is neither 'ed25519:<base64>' nor an existing file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"public key file {str(path)!r} cannot be read: {exc}") from None
    lines = [line.strip() for line in content.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1:
        raise SignatureError(f"public key file {str(path)!r} holds {len(lines)} key lines; expected exactly one "
                             "'ed25519:<base64>' line")
    try:
        return PublicKey.from_text(lines[0])
    except SignatureError as exc:
        raise SignatureError(f"public key file {str(path)!r}: {exc}") from None


@dataclass(frozen=True)
class Signature:
    """One signature: which key (``key_id``), for what (``purpose``), and the 64 signature bytes."""

    key_id: str
    signature: bytes
    purpose: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": SCHEME, "purpose": self.purpose, "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode("ascii")}

    def to_json(self) -> bytes:
        """The bytes of :data:`SIGNATURE_FILE` (sorted keys, one line)."""
        return (json.dumps(self.to_dict(), sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_dict(cls, data: Any) -> "Signature":
        """Parse a signature object; every field is checked (type, form, length)."""
        keys = {"scheme", "purpose", "key_id", "signature"}
        if not isinstance(data, Mapping) or set(data) != keys:
            shown = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
            raise SignatureError(f"signature has keys {shown}; expected exactly {sorted(keys)}")
        for name in keys:
            if not isinstance(data[name], str):
                raise SignatureError(f"signature {name} is {type(data[name]).__name__}; expected a string")
        if data["scheme"] != SCHEME:
            raise SignatureError(f"signature scheme is {data['scheme'][:40]!r}; expected {SCHEME!r}")
        if data["purpose"] not in PURPOSES:
            raise SignatureError(f"signature purpose is {data['purpose'][:60]!r}; expected one of {list(PURPOSES)}")
        key_id = data["key_id"]
        if len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
            raise SignatureError(f"signature key_id is {key_id[:40]!r}; expected 16 lower-case hex digits")
        return cls(key_id=key_id, signature=_b64decode(data["signature"], "signature", _RAW_SIGNATURE_BYTES),
                   purpose=data["purpose"])

    @classmethod
    def from_json(cls, raw: bytes) -> "Signature":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SignatureError(f"signature is not a JSON object ({type(exc).__name__})") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class TrustPolicy:
    """What a verifier accepts: signatures by ``keys``; unsigned bundles only if ``allow_unsigned``.

    ``allow_unsigned`` is for development (a bundle exported without a key); a *wrong*
    signature is refused whatever it says.
    """

    keys: tuple[PublicKey, ...] = ()
    allow_unsigned: bool = False

    def __post_init__(self) -> None:
        if not all(isinstance(k, PublicKey) for k in self.keys):
            raise TypeError("TrustPolicy.keys holds PublicKey objects (see parse_public_key)")
        if not isinstance(self.allow_unsigned, bool):
            raise TypeError(f"TrustPolicy.allow_unsigned is {self.allow_unsigned!r}; expected true or false")
        object.__setattr__(self, "keys", tuple(self.keys))

    @classmethod
    def of(cls, keys: Iterable[str | os.PathLike[str] | PublicKey], *, allow_unsigned: bool = False) -> "TrustPolicy":
        """From key texts, key files or :class:`PublicKey` objects."""
        return cls(tuple(k if isinstance(k, PublicKey) else parse_public_key(k) for k in keys), allow_unsigned)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self.keys)

    def key(self, key_id: str) -> PublicKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def signed_message(payload: bytes, purpose: str) -> bytes:
    """The exact bytes a signature covers: ``purpose``, a NUL byte, ``payload``."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}; expected one of {list(PURPOSES)}")
    return purpose.encode("ascii") + b"\0" + bytes(payload)


def sign_payload(private_key: Any, payload: bytes, purpose: str) -> Signature:
    """Sign ``payload`` for ``purpose`` with a ``cryptography`` Ed25519 private key."""
    _crypto()
    return Signature(key_id=PublicKey.from_cryptography(private_key).key_id,
                     signature=private_key.sign(signed_message(payload, purpose)), purpose=purpose)


def verify_payload(payload: bytes, signature: Signature, trust: TrustPolicy, purpose: str, *,
                   what: str = "payload") -> PublicKey:
    """Check that ``signature`` is a trusted key's signature of ``payload`` for ``purpose``.

    Returns the key that signed. Raises :class:`SignatureError` when the purpose differs, the
    key is not trusted, or the signature does not verify (``what`` names the payload in messages).
    """
    ed25519, invalid = _crypto()
    if signature.purpose != purpose:
        raise SignatureError(f"{what}: the signature is for {signature.purpose!r}; expected one for {purpose!r}")
    key = trust.key(signature.key_id)
    if key is None:
        trusted = list(trust.key_ids) or "none configured"
        raise SignatureError(f"{what} is signed by key {signature.key_id}, which is not trusted here (trusted key "
                             f"ids: {trusted}); add the signer's public key (`edgetune export keys --show-public` "
                             "on the workstation) to trusted_keys (or pass --trusted-key)")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(key.raw).verify(signature.signature,
                                                                   signed_message(payload, purpose))
    except invalid:
        raise SignatureError(f"{what}: the signature by key {key.key_id} does not verify; the content was changed "
                             "after signing, or the signature was not made by that key") from None
    return key


def _read_regular(path: Path, limit: int, what: str) -> bytes | None:
    """A regular file's bytes (not followed through a link); None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise SignatureError(f"{what} is a symbolic link; a bundle holds regular files only") from None
        raise SignatureError(f"{what} cannot be read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SignatureError(f"{what} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > limit:
            raise SignatureError(f"{what} is {info.st_size} bytes; expected at most {limit}")
        return fh.read(limit + 1)


def read_bundle_signature(bundle_dir: str | os.PathLike[str]) -> Signature | None:
    """The bundle's :data:`SIGNATURE_FILE`, parsed; None when the bundle has none."""
    raw = _read_regular(Path(bundle_dir) / SIGNATURE_FILE, MAX_SIGNATURE_FILE_BYTES,
                        f"bundle {bundle_dir}: {SIGNATURE_FILE}")
    if raw is None:
        return None
    try:
        return Signature.from_json(raw)
    except SignatureError as exc:
        raise SignatureError(f"bundle {bundle_dir}: {SIGNATURE_FILE}: {exc}") from None


def check_bundle_signature(bundle_dir: str | os.PathLike[str], manifest_bytes: bytes, trust: TrustPolicy) -> str:
    """Check the bundle's signature over ``manifest_bytes`` (the manifest as read) against ``trust``.

    Returns a short description for the log ("signed by key …" or "unsigned, allowed by
    allow_unsigned_bundles"). Raises :class:`SignatureError` for an unsigned bundle (unless
    allowed), a malformed signature file, an untrusted key or a signature that does not verify.
    """
    signature = read_bundle_signature(bundle_dir)
    if signature is None:
        if trust.allow_unsigned:
            return "unsigned, accepted because allow_unsigned_bundles is on (development only)"
        raise SignatureError(f"bundle {bundle_dir} is not signed (no {SIGNATURE_FILE}); this device accepts only "
                             "bundles signed by a trusted key. Sign it on the workstation (`edgetune export sign "
                             "--bundle DIR`), or for development only set allow_unsigned_bundles = true")
    key = verify_payload(manifest_bytes, signature, trust, BUNDLE_MANIFEST,
                         what=f"bundle {bundle_dir}: {MANIFEST_FILE}")
    return f"signed by trusted key {key.key_id}"
