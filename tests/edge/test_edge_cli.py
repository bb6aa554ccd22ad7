"""`edgetune edge run|enroll|evaluate|heads` end to end, in-process."""

import json

import pytest

from edgetune.cli import main


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "state")


def test_run_prints_one_json_line_per_detection_and_ends_with_the_file(bundle_dir, state_dir, tmp_path, tone,
                                                                       write_wav, capsys):
    path = write_wav(tmp_path / "a.wav", tone(440, 2.0))
    rc = main(["edge", "run", "--bundle", str(bundle_dir), "--audio", f"wav:{path}", "--state-dir", state_dir,
               "--json", "--threshold", "0.05", "--providers", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out  # threshold 0.05: a random head fires at once
    events = [json.loads(line) for line in out]
    assert {"label", "score", "offset_s", "latency_ms", "head_version", "observed_at"} <= set(events[0])
    assert all(0 < e["offset_s"] <= 2.0 for e in events)


def test_run_refuses_a_tampered_bundle_naming_the_file(bundle_dir, state_dir, capsys):
    path = bundle_dir / "audio_embedder.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    rc = main(["edge", "run", "--bundle", str(bundle_dir), "--audio", "wav:x.wav", "--state-dir", state_dir])
    err = capsys.readouterr().err
    assert rc == 2 and "audio_embedder.onnx" in err and "refusing" in err


def test_run_with_an_unknown_scheme_suggests_one(bundle_dir, state_dir, capsys):
    rc = main(["edge", "run", "--bundle", str(bundle_dir), "--audio", "mick:", "--state-dir", state_dir])
    assert rc == 2 and "did you mean 'mic:'" in capsys.readouterr().err


def test_enroll_evaluate_heads_and_rollback(bundle_dir, state_dir, labelled_folder, capsys):
    common = ["--bundle", str(bundle_dir), "--state-dir", state_dir, "--json"]
    assert main(["edge", "enroll", "--data", str(labelled_folder), *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == 1 and report["new_labels"] == ["whistle"]
    assert report["promoted"] and report["accuracy_after"] == 1.0  # the tones are learnt (test_edge_enroll)
    assert any(s["path"].endswith("broken.wav") for s in report["skipped"])

    assert main(["edge", "heads", *common]) == 0
    heads = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in heads["versions"]] == [0, 1]
    assert heads["current"] == 1

    assert main(["edge", "heads", "--rollback", "0", *common]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 0
    assert main(["edge", "heads", "--rollback", "1", *common]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 1
    assert main(["edge", "evaluate", "--data", str(labelled_folder), *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["head_version"] == 1 and result["n"] == 8 and "whistle" in result["labels"]
    assert {"accuracy", "confusion", "per_class_recall"} <= set(result)

    assert main(["edge", "heads", "--rollback", "0", "--bundle", str(bundle_dir), "--state-dir", state_dir]) == 0
    assert "* v0" in capsys.readouterr().out
