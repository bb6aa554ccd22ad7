"""The whole path as a user runs it: exporter's bundle -> `edgetune edge run` -> Mosquitto ->
`edgetune server` -> SQLite and the JSON API. Every program is a real process.

The bundle is a small keyword model trained on espeak-ng speech (yes, no, zero, one); the
stream is those words spoken by voices the model never heard.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from support.telemetry import wait_for

from edgetune.contract import messages, topics
from edgetune.localbroker import LocalBroker, find_mosquitto, free_port

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.espeak]

if find_mosquitto() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

WORDS = ("yes", "no", "zero", "one")
TOKEN = "e2e-secret"
DEVICE = "e2e-jetson-01"


def edgetune(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True,
                          timeout=180, **kw)


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory) -> Path:
    from support.bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("e2e") / "bundle", labels=("_background_", *WORDS), trained=True)


@pytest.fixture(scope="module")
def stream_wav(tmp_path_factory) -> tuple[Path, list[str]]:
    """Twelve words by two held-out voices, 1.5 s apart, with quiet noise between them."""
    from edgetune.export.data.speech import synthesize

    rng = np.random.default_rng(0)
    said, pieces = [], [np.zeros(8000, np.float32)]
    for voice in ("en+m5", "en-us+f3"):
        for word in WORDS + WORDS[:2]:
            audio = synthesize(word, voice, 160, 50)  # 16 kHz, silence trimmed
            slot = np.zeros(24000, np.float32)
            slot[4000:4000 + len(audio)] = 0.5 * audio / max(1e-6, np.abs(audio).max())
            pieces.append(slot + rng.normal(0, 1e-3, slot.shape).astype(np.float32))
            said.append(word)
    path = tmp_path_factory.mktemp("e2e-audio") / "stream.wav"
    sf.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
    return path, said


@pytest.fixture
def broker(tmp_path):
    """Mosquitto as deployed: persistent, so the server's session and what is queued for it
    survive a broker restart."""
    with LocalBroker(tmp_path / "broker", persistence=True) as b:
        yield b


@pytest.fixture
def server(tmp_path, broker):
    """`edgetune server` as a process, with a token; yields (base url, database path)."""
    port, db = free_port(), tmp_path / "server.db"
    proc = subprocess.Popen([sys.executable, "-m", "edgetune.cli", "server", "--broker", f"127.0.0.1:{broker.port}",
                             "--db", str(db), "--http", f"127.0.0.1:{port}", "--token", TOKEN,
                             "--client-id", "e2e-server"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        # /api/health answers 200 only once the server is subscribed to the broker.
        assert wait_for(lambda: _get(url, "/api/health"), timeout_s=30) is not None, "the server did not come up"
        yield url, db
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


def _get(url: str, path: str, **params):
    try:
        r = httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _run_device(bundle: Path, wav: Path, broker, state: Path, *extra: str) -> list[dict]:
    result = edgetune("-q", "edge", "run", "--bundle", str(bundle), "--audio", f"wav:{wav}", "--broker",
                      f"127.0.0.1:{broker.port}", "--device-id", DEVICE, "--state-dir", str(state), "--json",
                      "--metrics-interval", "5", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _stored_events(url: str, at_least: int, timeout_s: float) -> list[dict]:
    """The device's events as the server's API returns them, once it holds ``at_least`` of them."""
    return wait_for(lambda: (lambda ev: ev["events"] if ev and len(ev["events"]) >= at_least else None)(
        _get(url, "/api/events", device=DEVICE, limit=1000)), timeout_s=timeout_s)


def _observation(event: dict) -> tuple:
    """A stored event as the device printed it (its body and its observation time, to the ms)."""
    return tuple(sorted({**event["body"], "observed_at": round(event["observed_at"], 3)}.items()))


def _assert_stored_as_observed(events: list[dict], *runs: list[dict]) -> None:
    """Each detection the device printed, run after run, is stored once with its time, label and
    the rest of its body; and each run's sequence numbers rise, and lie above the run before's."""
    printed = [[tuple(sorted(d.items())) for d in run] for run in runs]
    seq_of = {_observation(e): e["seq"] for e in events}
    assert len(seq_of) == len(events), "two stored events look the same"
    assert sorted(seq_of) == sorted(o for run in printed for o in run)
    seqs = [[seq_of[o] for o in run] for run in printed]
    for run in seqs:
        assert run == sorted(run), f"sequence numbers out of observation order: {run}"
    for before, after in zip(seqs, seqs[1:]):
        assert max(before, default=-1) < min(after, default=2**63), f"restart: {before} then {after}"


def test_detections_reach_the_database_once_each_and_survive_a_device_restart(trained_bundle, stream_wav, broker,
                                                                               server, tmp_path):
    # Prepare
    url, _ = server
    wav, said = stream_wav
    state = tmp_path / "device-state"

    # Execute: the device runs twice over the same audio (a restart), publishing over MQTT.
    first = _run_device(trained_bundle, wav, broker, state)
    second = _run_device(trained_bundle, wav, broker, state)
    events = _stored_events(url, len(first) + len(second), timeout_s=20)

    # Assert: the model hears most of what was said; the server holds each detection once, as
    # the device observed it (time, label, score, offset); sequence numbers rise across the restart.
    labels = [e["label"] for e in first]
    hits = sum(1 for word in set(said) if word in labels)
    assert hits >= 3, f"detections {labels} for speech {said}"
    assert first and second
    _assert_stored_as_observed(events, first, second)
    device = _get(url, f"/api/devices/{DEVICE}")
    assert device is not None and device["state"] == "offline"  # closed cleanly at the end of the file


def test_a_replayed_message_is_stored_once_and_a_malformed_one_is_counted(trained_bundle, stream_wav, broker,
                                                                          server, tmp_path):
    import paho.mqtt.client as mqtt

    # Prepare: one real run, then a client that replays one stored event and sends garbage.
    url, _ = server
    wav, _ = stream_wav
    detections = _run_device(trained_bundle, wav, broker, tmp_path / "state")
    assert detections, "the trained model detected nothing in the stream"
    before = wait_for(lambda: (lambda ev: ev if ev and len(ev["events"]) == len(detections) else None)(
        _get(url, "/api/events", device=DEVICE, limit=1000)), timeout_s=20)
    assert before is not None
    event = before["events"][0]
    replay = messages.make(DEVICE, event["seq"], event["observed_at"], "event", event["body"])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-replayer")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()

    # Execute
    infos = [client.publish(topics.device_topic(DEVICE, "events"), messages.encode(replay), qos=1),
             client.publish(topics.device_topic(DEVICE, "events"), b"{not json", qos=1)]
    for info in infos:
        info.wait_for_publish(5)
    stats = wait_for(lambda: (lambda s: s if s and s["rejected"].get("not_json") and s["duplicates"] else None)(
        _get(url, "/api/stats")), timeout_s=10)
    client.loop_stop()
    client.disconnect()

    # Assert
    assert stats is not None, _get(url, "/api/stats")
    after = _get(url, "/api/events", device=DEVICE, limit=1000)
    assert len(after["events"]) == len(detections)
    assert stats["rejected"]["not_json"] == 1 and stats["duplicates"] >= 1


def test_the_api_refuses_a_request_without_the_token(server):
    url, _ = server
    assert httpx.get(url + "/api/devices", timeout=5).status_code == 401


def test_a_tampered_bundle_is_refused_naming_the_file(trained_bundle, tmp_path):
    # Prepare: a copy of the bundle with one byte of the embedder changed.
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    target = bundle / "audio_embedder.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)

    # Execute
    result = edgetune("edge", "run", "--bundle", str(bundle), "--audio", f"wav:{wav}", "--state-dir",
                      str(tmp_path / "state"))

    # Assert
    assert result.returncode == 2
    assert "audio_embedder.onnx" in result.stderr and "refusing" in result.stderr


def test_enrol_then_evaluate_from_the_command_line(trained_bundle, tmp_path):
    # Prepare: a folder per label, with a word the bundle never heard and one unreadable file.
    from edgetune.export.data.speech import SpeechDataConfig, write_dataset_folder

    data = tmp_path / "site"
    write_dataset_folder(data, SpeechDataConfig(words=("yes", "marvin"), train_voices=("en-us", "en+f3", "en+m3"),
                                                val_voices=("en-029",), test_voices=("en+m5", "en-us+f3"),
                                                renderings_per_voice=2, train_copies=1, background_ratio=1.0))
    (data / "train" / "marvin" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    state = ["--bundle", str(trained_bundle), "--state-dir", str(tmp_path / "state"), "--json"]

    # Execute
    before = edgetune("-q", "edge", "evaluate", "--data", str(data / "test"), *state)
    enrolled = edgetune("-q", "edge", "enroll", "--data", str(data / "train"), *state)
    after = edgetune("-q", "edge", "evaluate", "--data", str(data / "test"), *state)
    host = edgetune("-q", "export", "evaluate", "--bundle", str(trained_bundle), "--data", str(data / "test"),
                    "--json")

    # Assert
    for r in (before, enrolled, after, host):
        assert r.returncode == 0, r.stderr[-3000:]
    before, enrolled, after, host = (json.loads(r.stdout) for r in (before, enrolled, after, host))
    assert "marvin" in enrolled["new_labels"] and any("broken.wav" in str(s) for s in enrolled["skipped"])
    assert after["head_version"] == enrolled["version"] if enrolled["promoted"] else after["head_version"] == 0
    assert after["accuracy"] > before["accuracy"]
    assert host["accuracy"] == pytest.approx(before["accuracy"])  # the bundle's head is v0
    assert set(host) >= {"accuracy", "n", "confusion"} and host["n"] == before["n"]


def test_the_device_runs_where_torch_cannot_be_imported(trained_bundle, stream_wav, tmp_path):
    # Prepare: a child interpreter in which `import torch` fails, as on a Jetson with only [edge].
    wav, said = stream_wav
    code = ("import sys; sys.modules.update(dict.fromkeys(['torch', 'torchvision', 'onnx'], None)); "
            "from edgetune.cli import main; sys.exit(main(sys.argv[1:]))")

    # Execute
    result = subprocess.run([sys.executable, "-c", code, "-q", "edge", "run", "--bundle", str(trained_bundle),
                             "--audio", f"wav:{wav}", "--state-dir", str(tmp_path / "state"), "--json"],
                            capture_output=True, text=True, timeout=120)

    # Assert
    assert result.returncode == 0, result.stderr[-3000:]
    labels = {json.loads(line)["label"] for line in result.stdout.splitlines() if line.strip()}
    assert labels & set(said)


def test_detections_made_while_the_broker_is_down_arrive_after_it_returns(trained_bundle, stream_wav, broker,
                                                                           server, tmp_path):
    # Prepare: the server is up and subscribed; then the broker goes down.
    url, _ = server
    wav, _ = stream_wav
    state = tmp_path / "device-state"
    broker.stop()

    # Execute: the device runs offline (its outbox keeps what it saw), the broker comes back on
    # the same port, and the device runs again.
    offline = _run_device(trained_bundle, wav, broker, state, "--flush-timeout", "1")
    broker.restart()
    online = _run_device(trained_bundle, wav, broker, state)
    events = _stored_events(url, len(offline) + len(online), timeout_s=60)

    # Assert: nothing observed offline was lost or changed, nothing stored twice, and the
    # numbers kept rising from the offline run to the online one.
    assert offline and online
    _assert_stored_as_observed(events, offline, online)
