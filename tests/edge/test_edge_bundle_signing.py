"""Signed bundles and signed payloads: the exporter's key, the device's trust, the same scheme for fleet heads."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from edgetune.cli import main
from edgetune.contract.signing import (BUNDLE_MANIFEST, FLEET_HEAD, SIGNATURE_FILE, PublicKey, Signature,
                                       SignatureError, TrustPolicy, parse_public_key, verify_payload)
from edgetune.edge.config import ConfigError, DaemonConfig
from edgetune.errors import UsageError

pytest.importorskip("cryptography")


def _key(seed: int):
    from edgetune.export.signing import SigningKey

    return SigningKey.from_seed(bytes([seed]) * 32)


# -- payloads (what the server's fleet heads will use) -------------------------------------------


def test_a_signed_payload_verifies_against_the_trusted_key_and_names_it():
    key = _key(1)
    signature = key.sign(b'{"head": [1, 2]}', FLEET_HEAD)
    trust = TrustPolicy.of([key.public.to_text()])
    assert verify_payload(b'{"head": [1, 2]}', signature, trust, FLEET_HEAD) == key.public
    # A signature survives its JSON form (how a message carries it).
    assert Signature.from_json(signature.to_json()) == signature


def test_a_changed_payload_is_refused():
    key = _key(1)
    signature = key.sign(b"payload", FLEET_HEAD)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_payload(b"payloaD", signature, TrustPolicy.of([key.public]), FLEET_HEAD, what="fleet head")


def test_a_bundle_signature_cannot_be_replayed_as_a_fleet_head():
    key = _key(1)
    signature = key.sign(b"same bytes", BUNDLE_MANIFEST)
    with pytest.raises(SignatureError, match="for 'edgetune bundle manifest'; expected one for 'edgetune fleet head'"):
        verify_payload(b"same bytes", signature, TrustPolicy.of([key.public]), FLEET_HEAD)
    # Even with the purpose field rewritten, the signed bytes differ (the purpose is inside them).
    forged = Signature(key_id=signature.key_id, signature=signature.signature, purpose=FLEET_HEAD)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_payload(b"same bytes", forged, TrustPolicy.of([key.public]), FLEET_HEAD)


def test_an_untrusted_key_is_named_with_the_trusted_ones():
    signature = _key(2).sign(b"x", FLEET_HEAD)
    trusted = _key(1).public
    with pytest.raises(SignatureError, match=f"signed by key {_key(2).key_id}.*trusted key ids: \\['{trusted.key_id}'\\]"):
        verify_payload(b"x", signature, TrustPolicy.of([trusted]), FLEET_HEAD)


@pytest.mark.parametrize("text, words", [
    ("ed25519:not base64!", "not valid base64"),
    ("ed25519:" + "QUFB", "decodes to 3 bytes; expected 32"),
    ("rsa:AAAA", "neither 'ed25519:<base64>' nor an existing file"),
])
def test_a_malformed_public_key_is_refused_saying_the_form(text, words):
    with pytest.raises(SignatureError, match=words):
        parse_public_key(text)


def test_a_public_key_file_with_comments_parses(tmp_path):
    key = _key(3).public
    path = tmp_path / "exporter.pub"
    path.write_text(f"# the workstation's key\n\n{key.to_text()}\n")
    assert parse_public_key(path) == key == PublicKey.from_text(key.to_text())


# -- the exporter's key --------------------------------------------------------------------------


def test_the_signing_key_is_created_once_private_and_reloaded(tmp_path):
    from edgetune.export.signing import KEY_FILE, PUBLIC_KEY_FILE, load_signing_key

    first = load_signing_key(tmp_path / "keys")
    second = load_signing_key(tmp_path / "keys")
    assert first.key_id == second.key_id
    assert stat.S_IMODE((tmp_path / "keys" / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert parse_public_key(tmp_path / "keys" / PUBLIC_KEY_FILE) == first.public


def test_a_key_others_can_read_is_refused(tmp_path):
    from edgetune.export.signing import KEY_FILE, load_signing_key

    load_signing_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(UsageError, match="mode 0644; expected 0600"):
        load_signing_key(tmp_path)


def test_export_keys_show_public_prints_the_key_line(tmp_path, capsys):
    from edgetune.export.signing import load_signing_key

    assert main(["export", "keys", "--key-dir", str(tmp_path), "--show-public"]) == 0
    assert capsys.readouterr().out.strip() == load_signing_key(tmp_path).public.to_text()


# -- bundles -------------------------------------------------------------------------------------


def test_a_signed_bundle_loads_and_the_log_names_the_key(bundle_dir, tmp_path, caplog):
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust, signing_key

    caplog.set_level(logging.INFO, logger="edgetune.edge.bundle")
    load_bundle(bundle_dir, trust=device_trust(), state_dir=tmp_path)
    assert f"signed by trusted key {signing_key().key_id}" in caplog.text


def test_the_signature_file_covers_the_manifest_bytes(bundle_dir):
    from support.bundles import signing_key

    signature = Signature.from_json((bundle_dir / SIGNATURE_FILE).read_bytes())
    verify_payload((bundle_dir / "manifest.json").read_bytes(), signature,
                   TrustPolicy.of([signing_key().public]), BUNDLE_MANIFEST)
    assert SIGNATURE_FILE not in json.loads((bundle_dir / "manifest.json").read_text())["files"]


def test_an_unsigned_bundle_is_refused_unless_allowed_and_then_a_warning_is_logged(bundle_dir, tmp_path, caplog):
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust

    (bundle_dir / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="not signed .*allow_unsigned_bundles = true"):
        load_bundle(bundle_dir, trust=device_trust(), state_dir=tmp_path)
    load_bundle(bundle_dir, trust=device_trust(allow_unsigned=True), state_dir=tmp_path)
    assert any(r.levelno == logging.WARNING and "allow_unsigned_bundles is on" in r.getMessage()
               for r in caplog.records)


def test_allowing_unsigned_bundles_never_lets_a_wrong_signature_through(bundle_dir, tmp_path):
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust

    (bundle_dir / SIGNATURE_FILE).write_bytes(_key(9).sign((bundle_dir / "manifest.json").read_bytes(),
                                                           BUNDLE_MANIFEST).to_json())
    with pytest.raises(SignatureError, match="not trusted here"):
        load_bundle(bundle_dir, trust=device_trust(allow_unsigned=True), state_dir=tmp_path)


def test_sign_bundle_refuses_to_sign_a_bundle_that_does_not_verify(bundle_dir):
    from edgetune.contract import IntegrityError
    from edgetune.export.signing import sign_bundle

    (bundle_dir / "extra.bin").write_bytes(b"x")
    before = (bundle_dir / SIGNATURE_FILE).read_bytes()
    with pytest.raises(IntegrityError, match="extra.bin: not listed"):
        sign_bundle(bundle_dir, _key(4))
    assert (bundle_dir / SIGNATURE_FILE).read_bytes() == before


def test_export_sign_re_signs_a_bundle_with_the_exporters_key(bundle_dir, tmp_path, capsys):
    from edgetune.edge.bundle import load_bundle
    from edgetune.export.signing import load_signing_key

    assert main(["export", "sign", "--bundle", str(bundle_dir), "--key-dir", str(tmp_path / "k")]) == 0
    key = load_signing_key(tmp_path / "k")
    assert key.key_id in capsys.readouterr().out
    load_bundle(bundle_dir, trust=TrustPolicy.of([key.public]), state_dir=tmp_path)


# -- the device's config and command line --------------------------------------------------------


def test_trusted_keys_in_the_config_are_parsed_at_start_up(tmp_path):
    from edgetune.edge.config_file import load_config

    key = _key(5).public
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "exporter.pub").write_text(key.to_text() + "\n")
    path = tmp_path / "edgetune.toml"
    path.write_text(f'device_id = "d1"\nbundle = "b"\ntrusted_keys = ["keys/exporter.pub", "{_key(6).public.to_text()}"]\n')
    config = load_config(path)  # the key file is relative to the config file
    assert config.bundle_trust().key_ids == (key.key_id, _key(6).key_id)
    assert config.bundle_trust().allow_unsigned is False
    assert DaemonConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("value, words", [
    ("ed25519:AAAA", r"trusted_keys is 'ed25519:AAAA'; expected a list of public keys"),
    (["ed25519:AAAA"], r"trusted_keys\[0\]: .*decodes to 3 bytes"),
    (["/nonexistent/exporter.pub"], r"trusted_keys\[0\]: .*neither 'ed25519:<base64>' nor an existing file"),
    ([3], r"trusted_keys\[0\] is 3; expected a list of public keys"),
])
def test_a_wrong_trusted_key_is_a_config_error_naming_it(value, words):
    with pytest.raises(ConfigError, match=words):
        DaemonConfig(device_id="d1", bundle="b", trusted_keys=value)


def test_allow_unsigned_bundles_must_be_a_boolean():
    with pytest.raises(ConfigError, match="allow_unsigned_bundles is 'yes'; expected true or false"):
        DaemonConfig(device_id="d1", bundle="b", allow_unsigned_bundles="yes")


def test_the_daemon_refuses_a_bundle_its_config_does_not_trust(bundle_dir, tmp_path):
    from edgetune.edge.wiring import Device

    config = DaemonConfig(device_id="d1", bundle=bundle_dir, state_dir=tmp_path / "state",
                          audio={"source": "wav:x.wav"}, trusted_keys=[_key(7).public.to_text()])
    with pytest.raises(SignatureError, match="not trusted here"):
        Device.from_config(config)


def test_edge_heads_takes_the_trusted_key_flag_and_refuses_another_key(bundle_dir, tmp_path, capsys):
    from support.bundles import public_key_text

    state = str(tmp_path / "state")
    assert main(["edge", "heads", "--bundle", str(bundle_dir), "--state-dir", state,
                 "--trusted-key", _key(8).public.to_text()]) == 2
    assert "not trusted here" in capsys.readouterr().err
    assert main(["edge", "heads", "--bundle", str(bundle_dir), "--state-dir", state,
                 "--trusted-key", public_key_text()]) == 0


def test_edge_evaluate_reads_trust_from_the_config_file(bundle_dir, tmp_path, capsys):
    path = tmp_path / "edgetune.toml"
    path.write_text(f'device_id = "d1"\nbundle = "{bundle_dir}"\ntrusted_keys = ["{_key(8).public.to_text()}"]\n')
    rc = main(["edge", "evaluate", "--config", str(path), "--data", str(tmp_path), "--state-dir",
               str(tmp_path / "state")])
    assert rc == 2 and "not trusted here" in capsys.readouterr().err


def test_edge_heads_allows_an_unsigned_bundle_only_with_the_flag(bundle_dir, tmp_path, capsys, caplog):
    (bundle_dir / SIGNATURE_FILE).unlink()
    state = str(tmp_path / "state")
    assert main(["edge", "heads", "--bundle", str(bundle_dir), "--state-dir", state]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert main(["edge", "heads", "--bundle", str(bundle_dir), "--state-dir", state, "--allow-unsigned-bundles"]) == 0
    assert "allow_unsigned_bundles is on" in caplog.text
