"""The exporter's signing key, and signing a bundle with it.

The exporter keeps one Ed25519 key: ``$EDGETUNE_KEY_DIR/ed25519.key``, else
``$XDG_CONFIG_HOME/edgetune/signing/ed25519.key``, else ``~/.config/edgetune/signing/ed25519.key``.
It is created on first use (folder 0700, key file 0600, PKCS#8 PEM) with its public key beside
it (``ed25519.pub``, one ``ed25519:<base64>`` line: what a device lists in ``trusted_keys``).
A key file that others can read is refused, as ssh refuses one.

:func:`sign_bundle` checks a bundle it is given (every file against its manifest) and writes
``manifest.sig`` beside ``manifest.json``. The scheme is :mod:`edgetune.contract.signing`.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from edgetune.contract.manifest import read_manifest_bytes, verify_bundle
from edgetune.contract.signing import BUNDLE_MANIFEST, SIGNATURE_FILE, PublicKey, Signature, sign_payload
from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)

KEY_DIR_ENV = "EDGETUNE_KEY_DIR"
KEY_FILE = "ed25519.key"
PUBLIC_KEY_FILE = "ed25519.pub"


def default_key_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$EDGETUNE_KEY_DIR``, else ``$XDG_CONFIG_HOME/edgetune/signing``, else ``~/.config/edgetune/signing``."""
    env = os.environ if env is None else env
    if env.get(KEY_DIR_ENV):
        return Path(env[KEY_DIR_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "edgetune" / "signing"


@dataclass(frozen=True, eq=False)
class SigningKey:
    """The exporter's private key (a ``cryptography`` Ed25519 key) and where it is kept."""

    private_key: Any
    path: Path | None = None

    @property
    def public(self) -> PublicKey:
        return PublicKey.from_cryptography(self.private_key)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, payload: bytes, purpose: str) -> Signature:
        """A signature of ``payload`` for ``purpose`` (see :mod:`edgetune.contract.signing`)."""
        return sign_payload(self.private_key, payload, purpose)

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        """A key from 32 seed bytes: the same seed gives the same key (tests)."""
        ed25519 = _ed25519()
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    def save(self, key_dir: Path) -> Path:
        """Write the key (0600) and its public key into ``key_dir`` (created 0700); return the key's path."""
        from cryptography.hazmat.primitives import serialization

        key_dir = Path(key_dir)
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        path = key_dir / KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        (key_dir / PUBLIC_KEY_FILE).write_text(
            f"# edgetune exporter public key, key id {self.key_id}\n{self.public.to_text()}\n")
        return path


def _ed25519():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise missing_extra("cryptography", "edge") from None
    return ed25519


def load_signing_key(key_dir: str | os.PathLike[str] | None = None, *, create: bool = True) -> SigningKey:
    """The exporter's key from ``key_dir`` (default :func:`default_key_dir`), created on first use.

    Raises :class:`UsageError` when the key is missing (and ``create`` is false), readable by
    others, or not an Ed25519 private key.
    """
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives import serialization

    key_dir = Path(key_dir) if key_dir is not None else default_key_dir()
    path = key_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise UsageError(f"no signing key at {path}; create one with `edgetune export keys` "
                             f"(or set ${KEY_DIR_ENV} to the folder that holds {KEY_FILE})")
        key = SigningKey(ed25519.Ed25519PrivateKey.generate())
        key.save(key_dir)
        log.warning("created a new bundle signing key %s at %s; devices must trust its public key %s",
                    key.key_id, path, key.public.to_text())
        return SigningKey(key.private_key, path)
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"signing key {path} is not a regular file")
    if info.st_mode & 0o077:
        raise UsageError(f"signing key {path} has mode {stat.S_IMODE(info.st_mode):04o}; expected 0600 (others must "
                         f"not read it): chmod 600 {path}")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"signing key {path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise UsageError(f"signing key {path} is a {type(private).__name__}; expected an Ed25519 key")
    return SigningKey(private, path)


def sign_bundle(out_dir: str | os.PathLike[str], key: SigningKey | None = None) -> Signature:
    """Check the bundle at ``out_dir`` and write its ``manifest.sig`` (replacing any old one).

    ``key`` defaults to :func:`load_signing_key` (created on first use). The bundle must pass
    :func:`~edgetune.contract.manifest.verify_bundle` first: a signature vouches for exactly
    the bytes that were checked.
    """
    out_dir = Path(out_dir)
    key = key if key is not None else load_signing_key()
    raw = read_manifest_bytes(out_dir)
    verify_bundle(out_dir)
    if read_manifest_bytes(out_dir) != raw:
        raise UsageError(f"bundle {out_dir}: manifest.json changed while it was being signed; sign it again")
    signature = key.sign(raw, BUNDLE_MANIFEST)
    tmp = out_dir / (SIGNATURE_FILE + ".tmp")
    tmp.write_bytes(signature.to_json())
    tmp.replace(out_dir / SIGNATURE_FILE)
    log.info("signed bundle %s with key %s", out_dir, signature.key_id)
    return signature
