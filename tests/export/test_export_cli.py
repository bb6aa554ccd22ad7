"""`edgetune export …` from the command line."""

import json
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from edgetune.cli import main
from edgetune.errors import UsageError


def test_prepare_data_writes_a_folder_per_split_and_label(tmp_path, capsys):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    rc = main(["-q", "export", "prepare-data", "--out", str(tmp_path / "data"), "--words", "yes",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    for split in ("train", "val", "test"):
        for label in ("_background_", "yes"):
            files = list((tmp_path / "data" / split / label).glob("*.wav"))
            assert files and sf.info(str(files[0])).samplerate == 16000
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["words"] == ["yes"]


def test_evaluate_reports_accuracy_of_the_bundle_head_as_json(random_bundle, tmp_path, capsys):
    # Prepare: two labelled clips of noise
    rng = np.random.default_rng(0)
    for label in ("yes", "no"):
        (tmp_path / label).mkdir()
        sf.write(str(tmp_path / label / "a.wav"), 0.1 * rng.standard_normal(16000), 16000, subtype="PCM_16")
    # Execute
    rc = main(["-q", "export", "evaluate", "--bundle", str(random_bundle), "--data", str(tmp_path), "--json"])
    # Assert: random weights, so only the report's form is checked
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n"] == 2 and 0.0 <= out["accuracy"] <= 1.0
    assert out["labels"] == ["_background_", "yes", "no", "zero", "one"]


def test_train_without_torch_names_the_extra(monkeypatch):
    from edgetune.export import cli

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UsageError, match=r"edgetune\[export\]"):
        cli._require_torch()


def test_bad_words_are_a_usage_error_not_a_traceback(tmp_path, capsys):
    rc = main(["-q", "export", "prepare-data", "--out", str(tmp_path / "d"), "--words", "Yes!"])
    assert rc == 2 and "words" in capsys.readouterr().err
