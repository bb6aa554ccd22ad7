"""Tampered bundles, one kind per case: every one is refused with a message that names the problem.

The device loads bundles with a trust policy (the test key, ``support/bundles.py``). An attacker
here may change any byte, recompute every hash in the manifest, sign with a key of their own,
swap files for symbolic links, add, remove or rename files, write a manifest no parser should
choke on, or ship a hostile tar. Each case says what it does and which words the refusal must
contain; a refusal is a :class:`ContractError` or :class:`UsageError` (what the CLI turns into
exit status 2), never another exception. A few representative cases also go through the real
command line in a subprocess: exit 2, the message, and no traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from edgetune.contract import ContractError
from edgetune.contract.signing import BUNDLE_MANIFEST, FLEET_HEAD, SIGNATURE_FILE
from edgetune.errors import UsageError

MANIFEST = "manifest.json"
#: Another exporter's key: valid, but not one the device trusts.
OTHER_SEED = bytes([7]) * 32


def _trusted_key():
    from support.bundles import signing_key

    return signing_key()


def _other_key():
    from edgetune.export.signing import SigningKey

    return SigningKey.from_seed(OTHER_SEED)


def _listed(bundle: Path) -> list[str]:
    return sorted(json.loads((bundle / MANIFEST).read_text())["files"])


def _flip(path: Path, where: str = "middle") -> None:
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def _canonical(data: dict) -> bytes:
    """``data`` as the exporter writes a manifest: its own digest recomputed, canonical text."""
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    data = dict(body, manifest_sha256=hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest())
    return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()


def _rewrite(bundle: Path, change: Callable[[dict], None], *, rehash: bool = True) -> None:
    """Change the manifest and recompute every file's hash and the manifest's digest (no re-signing)."""
    data = json.loads((bundle / MANIFEST).read_text())
    change(data)
    if rehash:
        for name in list(data["files"]):
            if (bundle / name).is_file():
                raw = (bundle / name).read_bytes()
                data["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    (bundle / MANIFEST).write_bytes(_canonical(data))


def _sign_raw(bundle: Path, key, purpose: str = BUNDLE_MANIFEST) -> None:
    (bundle / SIGNATURE_FILE).write_bytes(key.sign((bundle / MANIFEST).read_bytes(), purpose).to_json())


def _write_sig(bundle: Path, obj) -> None:
    (bundle / SIGNATURE_FILE).write_text(json.dumps(obj))


def _sig_dict(bundle: Path) -> dict:
    return json.loads((bundle / SIGNATURE_FILE).read_text())


def _swap_head(bundle: Path) -> None:
    """Replace the head with the attacker's (zero weights: every score equal), arrays still valid."""
    import numpy as np

    head = bundle / json.loads((bundle / MANIFEST).read_text())["heads"][0]["file"]
    with np.load(head) as arrays:
        weight, bias = np.zeros_like(arrays["weight"]), np.zeros_like(arrays["bias"])
    np.savez(head, weight=weight, bias=bias)


def _tar(bundle: Path, tmp: Path, extra: Callable[[tarfile.TarFile], None] | None = None,
         name: str = "b.tar") -> Path:
    archive = tmp / name
    with tarfile.open(archive, "w") as tar:
        tar.add(bundle, arcname="bundle")
        if extra is not None:
            extra(tar)
    return archive


def _member(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x",
            linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


# -- the tampers: (id, what it does to the bundle -> the path to load, words the refusal must hold) --


def _file_flip(index: int, where: str):
    def tamper(b: Path, tmp: Path) -> Path:
        names = [MANIFEST, SIGNATURE_FILE] + _listed(b)
        _flip(b / names[index], where)
        return b
    return tamper


def _truncate(index: int):
    def tamper(b: Path, tmp: Path) -> Path:
        path = b / _listed(b)[index]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return b
    return tamper


def _append(b: Path, tmp: Path) -> Path:
    path = b / _listed(b)[0]
    path.write_bytes(path.read_bytes() + b"\0")
    return b


def _rehashed_head(b: Path, tmp: Path) -> Path:
    _swap_head(b)
    _rewrite(b, lambda d: None)
    return b


def _rehashed_labels(b: Path, tmp: Path) -> Path:
    def change(d: dict) -> None:
        d["heads"][0]["labels"] = ["_background_", "open", "the", "door", "now"]
    _rewrite(b, change)
    return b


def _rehashed_version(b: Path, tmp: Path) -> Path:
    _rewrite(b, lambda d: d.update(bundle_version="9.9.9"))
    return b


def _rehashed_extra_listed(b: Path, tmp: Path) -> Path:
    (b / "payload.bin").write_bytes(b"\x7fELF")

    def change(d: dict) -> None:
        d["files"]["payload.bin"] = {}
    _rewrite(b, change)
    return b


def _rehashed_without_replay(b: Path, tmp: Path) -> Path:
    def change(d: dict) -> None:
        replay = d["heads"][0]["replay_file"]
        d["heads"][0]["replay_file"] = None
        del d["files"][replay]
        (b / replay).unlink()
    _rewrite(b, change)
    return b


def _rehashed_signed_by_other(b: Path, tmp: Path) -> Path:
    _swap_head(b)
    _rewrite(b, lambda d: None)
    _sign_raw(b, _other_key())
    return b


def _other_key_same_manifest(b: Path, tmp: Path) -> Path:
    _sign_raw(b, _other_key())
    return b


def _other_key_claims_trusted_id(b: Path, tmp: Path) -> Path:
    sig = _other_key().sign((b / MANIFEST).read_bytes(), BUNDLE_MANIFEST).to_dict()
    sig["key_id"] = _trusted_key().key_id
    _write_sig(b, sig)
    return b


def _fleet_head_purpose(b: Path, tmp: Path) -> Path:
    _sign_raw(b, _trusted_key(), FLEET_HEAD)
    return b


def _signature_of_another_bundle(b: Path, tmp: Path) -> Path:
    """A genuine signature by the trusted key, but of another manifest (an older release's)."""
    _rewrite(b, lambda d: d.update(bundle_version="0.0.1-old"))
    _sign_raw(b, _trusted_key())
    _rewrite(b, lambda d: d.update(bundle_version="9.9.9"))
    return b


def _unsigned(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).unlink()
    return b


def _sig_empty(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).write_bytes(b"")
    return b


def _sig_garbage(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).write_bytes(b"\xff\xfe not a signature")
    return b


def _sig_wrong_scheme(b: Path, tmp: Path) -> Path:
    _write_sig(b, dict(_sig_dict(b), scheme="rsa-pkcs1"))
    return b


def _sig_short(b: Path, tmp: Path) -> Path:
    import base64

    sig = _sig_dict(b)
    _write_sig(b, dict(sig, signature=base64.b64encode(base64.b64decode(sig["signature"])[:63]).decode()))
    return b


def _sig_bad_key_id(b: Path, tmp: Path) -> Path:
    _write_sig(b, dict(_sig_dict(b), key_id="../../etc/passwd"))
    return b


def _sig_list(b: Path, tmp: Path) -> Path:
    _write_sig(b, [_sig_dict(b)])
    return b


def _sig_huge(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).write_bytes(b" " * 100_000 + (b / SIGNATURE_FILE).read_bytes())
    return b


def _sig_nested(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).write_bytes(b"[" * 2000 + b"]" * 2000)  # under the file's size limit
    return b


def _sig_symlink(b: Path, tmp: Path) -> Path:
    outside = tmp / "copy.sig"
    outside.write_bytes((b / SIGNATURE_FILE).read_bytes())
    (b / SIGNATURE_FILE).unlink()
    (b / SIGNATURE_FILE).symlink_to(outside)
    return b


def _sig_directory(b: Path, tmp: Path) -> Path:
    (b / SIGNATURE_FILE).unlink()
    (b / SIGNATURE_FILE).mkdir()
    return b


def _symlink_outside(index: int):
    def tamper(b: Path, tmp: Path) -> Path:
        name = _listed(b)[index]
        copy = tmp / ("outside-" + name)
        copy.write_bytes((b / name).read_bytes())  # an identical copy: the bytes still match
        (b / name).unlink()
        (b / name).symlink_to(copy)
        return b
    return tamper


def _manifest_symlink(b: Path, tmp: Path) -> Path:
    copy = tmp / "outside-manifest.json"
    copy.write_bytes((b / MANIFEST).read_bytes())
    (b / MANIFEST).unlink()
    (b / MANIFEST).symlink_to(copy)
    return b


def _symlink_inside(b: Path, tmp: Path) -> Path:
    name = _listed(b)[0]
    (b / ".hidden-copy").write_bytes((b / name).read_bytes())
    (b / name).unlink()
    (b / name).symlink_to(".hidden-copy")
    return b


def _dir_symlink(b: Path, tmp: Path) -> Path:
    (tmp / "elsewhere").mkdir()
    (b / "sub").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return b


def _dangling_symlink(b: Path, tmp: Path) -> Path:
    (b / "dangling").symlink_to(tmp / "does-not-exist")
    return b


def _extra_file(b: Path, tmp: Path) -> Path:
    (b / "extra.onnx").write_bytes(b"not listed")
    return b


def _extra_hidden(b: Path, tmp: Path) -> Path:
    (b / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return b


def _extra_nested(b: Path, tmp: Path) -> Path:
    (b / "models" / "deep").mkdir(parents=True)
    (b / "models" / "deep" / "evil.onnx").write_bytes(b"x")
    return b


def _leftover_tmp(b: Path, tmp: Path) -> Path:
    (b / (MANIFEST + ".tmp")).write_bytes((b / MANIFEST).read_bytes())
    return b


def _missing(index: int):
    def tamper(b: Path, tmp: Path) -> Path:
        (b / _listed(b)[index]).unlink()
        return b
    return tamper


def _renamed(b: Path, tmp: Path) -> Path:
    name = _listed(b)[0]
    (b / name).rename(b / ("renamed-" + name))
    return b


def _fifo(b: Path, tmp: Path) -> Path:
    os.mkfifo(b / "pipe")
    return b


def _no_manifest(b: Path, tmp: Path) -> Path:
    (b / MANIFEST).unlink()
    return b


# Malformed manifests. Each is also signed by the *trusted* key (a buggy exporter, say), so that
# the parser itself is reached; an attacker without the key is stopped at the signature already.
def _malformed(raw: bytes | Callable[[dict], bytes]):
    def tamper(b: Path, tmp: Path) -> Path:
        data = json.loads((b / MANIFEST).read_text())
        (b / MANIFEST).write_bytes(raw(data) if callable(raw) else raw)
        _sign_raw(b, _trusted_key())
        return b
    return tamper


def _typed(change: Callable[[dict], None]) -> Callable[[dict], bytes]:
    def build(data: dict) -> bytes:
        change(data)
        return _canonical(data)
    return build


def _nan_manifest(data: dict) -> bytes:
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    body["metrics"] = {"accuracy": float("nan")}
    body["manifest_sha256"] = "0" * 64
    return json.dumps(body, sort_keys=True, indent=2).encode()  # NaN written bare, as a careless writer would


def _huge_number(data: dict) -> bytes:
    return _canonical(data).replace(b'"metrics": {', b'"metrics": {"x": 1e999,', 1)


def _duplicate_key(data: dict) -> bytes:
    return _canonical(data).replace(b'"bundle_version": ', b'"bundle_version": "evil", "bundle_version": ', 1)


def _tar_of(tamper_dir: Callable[[Path, Path], Path] | None = None, *, extra=None, compress: bool = False,
            truncate: bool = False):
    def tamper(b: Path, tmp: Path) -> Path:
        if tamper_dir is not None:
            tamper_dir(b, tmp)
        archive = _tar(b, tmp, extra)
        if compress:
            gz = tmp / "b.tar.gz"
            gz.write_bytes(gzip.compress(archive.read_bytes()))
            archive.unlink()
            archive = gz
        if truncate:
            archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        return archive
    return tamper


def _tar_two_bundles(b: Path, tmp: Path) -> Path:
    archive = tmp / "two.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(b, arcname="one")
        tar.add(b, arcname="two")
    return archive


def _not_a_tar(b: Path, tmp: Path) -> Path:
    path = tmp / "bundle.tar"
    path.write_bytes(b"this is not an archive\n" * 40)
    return path


def _tar_only_junk(b: Path, tmp: Path) -> Path:
    archive = tmp / "junk.tar"
    with tarfile.open(archive, "w") as tar:
        _member(tar, "bundle/readme.txt", data=b"no manifest here")
    return archive


REFUSED_SIG = r"does not verify"
TAMPERS: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    # byte flips in every file (manifest, signature, each listed file), at its start, middle and end
    *[(f"flip-{where}-file{i}", _file_flip(i, where), r"does not verify|sha256|signature|not trusted|scheme|"
       r"purpose|key_id")
      for i in range(6) for where in ("first", "middle", "last")],
    *[(f"truncate-file{i}", _truncate(i), r"bytes but the manifest records") for i in range(4)],
    ("append-a-byte", _append, r"bytes but the manifest records"),
    # the manifest rewritten with every hash recomputed, not re-signed
    ("rehashed-new-head", _rehashed_head, REFUSED_SIG),
    ("rehashed-new-labels", _rehashed_labels, REFUSED_SIG),
    ("rehashed-new-version", _rehashed_version, REFUSED_SIG),
    ("rehashed-extra-file-listed", _rehashed_extra_listed, REFUSED_SIG),
    ("rehashed-replay-removed", _rehashed_without_replay, REFUSED_SIG),
    # signatures that are not the trusted key's signature of this manifest
    ("rehashed-and-signed-by-another-key", _rehashed_signed_by_other, r"not trusted here"),
    ("signed-by-another-key", _other_key_same_manifest, r"not trusted here"),
    ("another-key-claiming-the-trusted-key-id", _other_key_claims_trusted_id, REFUSED_SIG),
    ("trusted-signature-for-a-fleet-head", _fleet_head_purpose, r"for 'edgetune fleet head'"),
    ("trusted-signature-of-another-manifest", _signature_of_another_bundle, REFUSED_SIG),
    ("unsigned", _unsigned, r"is not signed .*allow_unsigned_bundles"),
    ("signature-file-empty", _sig_empty, r"manifest\.sig: signature is not a JSON object"),
    ("signature-file-garbage", _sig_garbage, r"manifest\.sig: signature is not a JSON object"),
    ("signature-wrong-scheme", _sig_wrong_scheme, r"scheme is 'rsa-pkcs1'; expected 'ed25519-v1'"),
    ("signature-63-bytes", _sig_short, r"decodes to 63 bytes; expected 64"),
    ("signature-bad-key-id", _sig_bad_key_id, r"key_id is .*expected 16 lower-case hex digits"),
    ("signature-a-list", _sig_list, r"signature has keys list"),
    ("signature-file-huge", _sig_huge, r"manifest\.sig is 100\d+ bytes; expected at most 4096"),
    ("signature-deeply-nested", _sig_nested, r"not a JSON object \(RecursionError\)"),
    ("signature-a-symlink", _sig_symlink, r"manifest\.sig': a symbolic link|manifest\.sig: a symbolic link"),
    ("signature-a-directory", _sig_directory, r"manifest\.sig (is not a regular file|cannot be read)"),
    # links and file types: only regular files inside the bundle
    *[(f"symlink-to-identical-copy-outside-file{i}", _symlink_outside(i), r": a symbolic link") for i in range(4)],
    ("manifest-a-symlink-to-a-copy", _manifest_symlink, r"manifest\.json: a symbolic link"),
    ("symlink-to-a-file-inside", _symlink_inside, r": a symbolic link"),
    ("symlinked-folder", _dir_symlink, r"sub: a symbolic link"),
    ("dangling-symlink", _dangling_symlink, r"dangling: a symbolic link"),
    ("fifo", _fifo, r"pipe: not a regular file"),
    # extra, missing, renamed files
    ("extra-file", _extra_file, r"extra\.onnx: not listed in the manifest"),
    ("extra-hidden-file", _extra_hidden, r"\.DS_Store: not listed in the manifest"),
    ("extra-file-in-a-subfolder", _extra_nested, r"models/deep/evil\.onnx: not listed"),
    ("leftover-manifest-tmp", _leftover_tmp, r"manifest\.json\.tmp: not listed"),
    *[(f"missing-file{i}", _missing(i), r": missing") for i in range(4)],
    ("renamed-file", _renamed, r": missing.*renamed-.*not listed"),
    ("no-manifest", _no_manifest, r"no manifest\.json"),
    # malformed manifests (signed, so the parser is reached)
    ("manifest-not-utf8", _malformed(b'{"bundle_id": "\xff\xfe"}'), r"is not UTF-8 text"),
    ("manifest-nested-10k-deep", _malformed(b"[" * 10_000 + b"]" * 10_000), r"nested too deeply"),
    ("manifest-nested-10k-deep-objects", _malformed(b'{"a":' * 10_000 + b"1" + b"}" * 10_000), r"nested too deeply"),
    ("manifest-not-json", _malformed(b"schema_version = 2\n"), r"is not valid JSON"),
    ("manifest-empty", _malformed(b""), r"is not valid JSON"),
    ("manifest-top-level-list", _malformed(b"[1, 2, 3]\n"), r"is not a JSON object with a manifest_sha256"),
    ("manifest-digest-a-number", _malformed(lambda d: json.dumps(dict(d, manifest_sha256=5)).encode()),
     r"manifest_sha256 of type int"),
    ("manifest-heads-an-object", _malformed(_typed(lambda d: d.update(heads={"a": 1}))), r"heads is"),
    ("manifest-labels-a-string", _malformed(_typed(lambda d: d["heads"][0].update(labels="yes"))), r"labels"),
    ("manifest-audio-an-int", _malformed(_typed(lambda d: d.update(audio=3))), r"audio|manifest"),
    ("manifest-audio-params-wrong-types", _malformed(_typed(
        lambda d: d["audio"].update({k: [k] for k in d["audio"]}))), r"manifest"),
    ("manifest-schema-true", _malformed(_typed(lambda d: d.update(schema_version=True))), r"schema_version"),
    ("manifest-schema-2.0", _malformed(_typed(lambda d: d.update(schema_version=2.0))), r"schema_version"),
    ("manifest-files-a-list", _malformed(_typed(lambda d: d.update(files=[1]))), r"files"),
    ("manifest-file-entry-wrong-type", _malformed(_typed(
        lambda d: d["files"].update({k: "sha" for k in d["files"]}))), r"records 'sha'"),
    ("manifest-lists-a-path-outside", _malformed(_typed(
        lambda d: d["files"].update({"../outside.txt": {"sha256": "0" * 64, "bytes": 1}}))), r"'\.\./outside\.txt'"),
    ("manifest-lists-an-absolute-path", _malformed(_typed(
        lambda d: d["files"].update({"/etc/passwd": {"sha256": "0" * 64, "bytes": 1}}))), r"'/etc/passwd'"),
    ("manifest-lists-itself", _malformed(_typed(
        lambda d: d["files"].update({MANIFEST: {"sha256": "0" * 64, "bytes": 1}}))), r"not the manifest"),
    ("manifest-nan", _malformed(_nan_manifest), r"cannot be read as a manifest \(ValueError"),
    ("manifest-huge-number", _malformed(_huge_number), r"cannot be read as a manifest|changed after export"),
    ("manifest-duplicate-key", _malformed(_duplicate_key), r"canonical form|changed after export"),
    ("manifest-non-canonical-whitespace", _malformed(lambda d: json.dumps(d, indent=4).encode()),
     r"canonical form"),
    ("manifest-over-16-mib", _malformed(lambda d: b" " * (17 << 20) + _canonical(d)), r"larger than 16777216 bytes"),
    # hostile archives
    ("tar-with-a-tampered-file", _tar_of(_file_flip(2, "middle")), r"sha256"),
    ("tar-with-a-symlink", _tar_of(extra=lambda t: _member(t, "bundle/link", tarfile.SYMTYPE, linkname="/etc/passwd")),
     r"member 'bundle/link' is not allowed"),
    ("tar-with-a-hardlink", _tar_of(extra=lambda t: _member(t, "bundle/hard", tarfile.LNKTYPE,
                                                            linkname="bundle/manifest.json")),
     r"member 'bundle/hard' is not allowed"),
    ("tar-with-an-absolute-path", _tar_of(extra=lambda t: _member(t, "/tmp/edgetune-evil")), r"is not allowed"),
    ("tar-with-dot-dot", _tar_of(extra=lambda t: _member(t, "bundle/../../evil")), r"is not allowed"),
    ("tar-with-a-fifo", _tar_of(extra=lambda t: _member(t, "bundle/fifo", tarfile.FIFOTYPE)), r"is not allowed"),
    ("tar-with-a-device", _tar_of(extra=lambda t: _member(t, "bundle/dev", tarfile.CHRTYPE)), r"is not allowed"),
    ("tar-truncated", _tar_of(truncate=True), r"cannot be unpacked|not a tar archive|sha256|missing|found 0"),
    ("tar-gz-truncated", _tar_of(compress=True, truncate=True), r"cannot be unpacked|not a tar archive"),
    ("tar-with-an-extra-file", _tar_of(extra=lambda t: _member(t, "bundle/extra.bin")), r"extra\.bin: not listed"),
    ("tar-unsigned", _tar_of(_unsigned), r"is not signed"),
    ("tar-with-two-bundles", _tar_two_bundles, r"expected one manifest\.json .* found 2"),
    ("tar-without-a-manifest", _tar_only_junk, r"found 0"),
    ("not-a-tar", _not_a_tar, r"is a file but not a tar archive"),
]


def _kinds() -> int:
    return len(TAMPERS)


def test_there_are_at_least_forty_kinds_of_tamper():
    assert _kinds() >= 40 and len({name for name, _, _ in TAMPERS}) == _kinds()


@pytest.mark.parametrize("tamper, expected", [pytest.param(t, e, id=name) for name, t, e in TAMPERS])
def test_a_tampered_bundle_is_refused_with_a_clear_error(bundle_dir, tmp_path, tamper, expected):
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust

    # Prepare: a signed bundle, tampered with.
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tamper(bundle_dir, outside)
    # Execute: the device loads it with its trust policy.
    with pytest.raises((ContractError, UsageError)) as refused:
        load_bundle(target, trust=device_trust(), state_dir=tmp_path / "state")
    # Assert: refused, saying what was wrong, in a message a person can read.
    message = str(refused.value)
    assert len(message) < 2000, message
    assert re.search(expected, message, re.S), message
    assert not (tmp_path / "evil").exists() and not Path("/tmp/edgetune-evil").exists()


# A malformed manifest without a signature, on a device that allows unsigned bundles: the parser
# is reached without a signature at all, and still refuses cleanly.
MALFORMED_UNSIGNED = [(name, t, e) for name, t, e in TAMPERS if name.startswith("manifest-")]


@pytest.mark.parametrize("tamper, expected", [pytest.param(t, e, id=name) for name, t, e in MALFORMED_UNSIGNED])
def test_a_malformed_unsigned_manifest_is_refused_even_when_unsigned_bundles_are_allowed(
        bundle_dir, tmp_path, tamper, expected):
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust

    tamper(bundle_dir, tmp_path)
    (bundle_dir / SIGNATURE_FILE).unlink()
    with pytest.raises(ContractError) as refused:
        load_bundle(bundle_dir, trust=device_trust(allow_unsigned=True), state_dir=tmp_path / "state")
    assert re.search(expected, str(refused.value), re.S), str(refused.value)


CLI_CASES = ["rehashed-new-head", "signed-by-another-key", "symlink-to-identical-copy-outside-file0",
             "manifest-not-utf8", "manifest-nested-10k-deep", "manifest-audio-params-wrong-types",
             "tar-with-a-symlink", "tar-truncated", "unsigned"]


@pytest.mark.parametrize("name", CLI_CASES)
def test_the_command_line_refuses_a_tampered_bundle_with_exit_2_and_no_traceback(bundle_dir, tmp_path, name):
    tamper = next(t for n, t, _ in TAMPERS if n == name)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tamper(bundle_dir, outside)
    out = subprocess.run([sys.executable, "-m", "edgetune.cli", "edge", "heads", "--bundle", str(target),
                          "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "edgetune: error: " in out.stderr and "Traceback" not in out.stderr, out.stderr
