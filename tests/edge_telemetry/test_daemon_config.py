"""The daemon's TOML config: the example loads, mistakes are named, flags win."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgetune.edge.config import (
    AudioConfig,
    ConfigError,
    DaemonConfig,
    MqttConfig,
    RuntimeConfig,
    TlsConfig,
)
from edgetune.edge.config_file import load_config, parse_broker
from edgetune.errors import UsageError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "edgetune.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgetune.toml"
    path.write_text('device_id = "jetson-test-01"\nbundle = "bundles/kws"\n' + text)
    return path


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.device_id == "jetson-orin-07"
    assert config.mqtt.enabled and config.mqtt.port == 8883
    assert config.mqtt.tls == TlsConfig(ca_file=Path("/etc/edgetune/ca.crt"))
    assert config.audio == AudioConfig()  # the example shows the defaults


def test_defaults_turn_telemetry_off_and_keyword_construction_validates() -> None:
    config = DaemonConfig(device_id="jetson-test-01", bundle="b", audio={"threshold": 0.7})
    assert not config.mqtt.enabled and config.mqtt.host is None
    assert config.audio.threshold == 0.7 and isinstance(config.bundle, Path)
    with pytest.raises(ConfigError, match=r"\[audio\] hop_ms is -5; expected a number in \(0, 10000\]"):
        dataclasses.replace(config, audio=AudioConfig(hop_ms=-5))


def test_an_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, "[audio]\nthreshhold = 0.6\n")
    with pytest.raises(ConfigError, match=r"unknown key 'threshhold' in \[audio\]; did you mean 'threshold'\?"):
        load_config(path)


def test_an_unknown_section_gets_a_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqqt]\nhost = 'b'\n")
    with pytest.raises(ConfigError, match="unknown key 'mqqt' at the top level; did you mean 'mqtt'"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nthreshold = 1.5\n", r"edgetune.toml: \[audio\] threshold is 1.5; expected a number in \(0, 1\]"),
        ("[mqtt]\nport = '1883'\n", r"\[mqtt\] port is '1883'; expected an integer in \[1, 65535\]"),
        ("[mqtt]\noutbox_overflow = 'drop_all'\n",
         r"\[mqtt\] outbox_overflow is 'drop_all'; expected one of \['drop_oldest', 'drop_newest'\]"),
        ("[runtime]\nproviders = ['cdua']\n", r"\[runtime\] providers is 'cdua'; .*did you mean 'cuda'"),
        ("[mqtt]\nhost = 'b'\npassword_file = 'pw'\n", r"password_file .* only together with a username"),
        ("[mqtt.tls]\nkey_file = 'k'\n", r"\[mqtt.tls\] key_file .* without a cert_file"),
    ],
)
def test_a_bad_value_names_the_field_the_value_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_a_bad_device_id_says_what_an_id_may_contain(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('device_id = "jetson 07"\nbundle = "b"\n')
    with pytest.raises(ConfigError, match="device id 'jetson 07' is not allowed; expected 1-64 characters"):
        load_config(path)


def test_missing_file_and_bad_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    assert issubclass(ConfigError, UsageError)  # the CLI prints it without a traceback, exit status 2


def test_command_line_overrides_win_and_none_means_not_given(tmp_path: Path) -> None:
    # Prepare
    path = write(tmp_path, "[audio]\nthreshold = 0.6\nhop_ms = 50\n[mqtt]\nhost = 'from-file'\n")
    # Execute
    config = load_config(path, {"audio.threshold": 0.8, "audio.hop_ms": None, "mqtt": {"host": "from-flag"},
                                "runtime.providers": "cuda,cpu", "device_id": "jetson-test-02"})
    # Assert
    assert config.audio.threshold == 0.8 and config.audio.hop_ms == 50.0
    assert config.mqtt.host == "from-flag" and config.device_id == "jetson-test-02"
    assert config.runtime.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_a_bad_override_is_reported_as_one(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"command-line override: \[audio\] threshold is 0"):
        load_config(path, {"audio.threshold": 0})
    with pytest.raises(ConfigError, match="command-line override: unknown key 'treshold' in .*'threshold'"):
        load_config(path, {"audio.treshold": 0.5})


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir = 'state'\n[mqtt]\nhost = 'b'\nusername = 'u'\npassword_file = 'pw'\n")
    config = load_config(path)
    assert config.bundle == tmp_path / "bundles" / "kws"
    assert config.state_dir == tmp_path / "state" and config.mqtt.password_file == tmp_path / "pw"


def test_password_file_is_read_at_start_up_with_a_clear_error(tmp_path: Path) -> None:
    mqtt = MqttConfig(host="b", username="u", password_file=tmp_path / "pw")
    with pytest.raises(ConfigError, match="password_file .* cannot be read"):
        mqtt.read_password()
    (tmp_path / "pw").write_text("s3cret\n")
    assert mqtt.read_password() == "s3cret"


def test_to_dict_round_trips() -> None:
    config = DaemonConfig(device_id="jetson-test-01", bundle=Path("/b"), state_dir="/s",
                          runtime=RuntimeConfig(providers=["trt", "cpu"]),
                          mqtt=MqttConfig(host="b", tls=True))
    assert DaemonConfig.from_dict(config.to_dict()) == config


def test_a_missing_device_id_names_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('bundle = "b"\n')
    with pytest.raises(ConfigError, match="device_id is missing; .*--device-id"):
        load_config(path)


@pytest.mark.parametrize(("text", "expected"), [("broker", ("broker", None)), ("b.local:1884", ("b.local", 1884)),
                                                 ("[::1]:8883", ("::1", 8883))])
def test_parse_broker(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_broker(text) == expected


def test_parse_broker_refuses_a_bad_port() -> None:
    with pytest.raises(ConfigError, match="broker is 'b:http'"):
        parse_broker("b:http")


def test_without_a_file_the_overrides_and_defaults_make_the_config() -> None:
    config = load_config(None, {"device_id": "jetson-test-01", "bundle": "b", "mqtt.host": "broker"})
    assert config.mqtt.host == "broker" and config.audio == AudioConfig() and config.state_dir is None


def test_the_default_device_id_is_a_valid_topic_level() -> None:
    from edgetune.edge.config_file import default_device_id

    DaemonConfig(device_id=default_device_id(), bundle="b")  # does not raise
