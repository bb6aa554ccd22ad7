"""Training from a user's folder per label: split layout, flat layout, bad files, too few files."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from edgetune.cli import main
from edgetune.contract.manifest import verify_bundle
from edgetune.errors import UsageError
from edgetune.export.data.folder import load_folder_splits
from edgetune.export.data.speech import SpeechDataConfig, write_dataset_folder
from edgetune.export.train import TrainConfig, train_folder_bundle

RATE_HZ = 16000


def _tiny_config() -> TrainConfig:
    """Seconds, not minutes: a narrow model and a few epochs (cf. TrainConfig.small)."""
    return TrainConfig(channels=16, n_blocks=2, epochs=4, batch_size=16, baselines=False, replay_per_class=4,
                       threads=1, bundle_id="edgetune-kws-test")


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """``DIR/{train,val,test}/{_background_,yes,no}/*.wav`` made by espeak-ng (4 / 1 / 2 voices)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    root = tmp_path_factory.mktemp("speech")
    data = SpeechDataConfig(words=("yes", "no"), train_voices=("en-us", "en-gb", "en+f3", "en+m3"),
                            val_voices=("en+m6",), test_voices=("en-us+f3", "en+m5"), renderings_per_voice=2,
                            train_copies=1, cache_dir=str(root / "cache"))
    write_dataset_folder(root / "data", data)
    return root / "data"


@pytest.fixture
def flat_folder(split_folder, tmp_path):
    """The same clips as ``DIR/<label>/*.wav``, without split folders."""
    flat = tmp_path / "flat"
    for split in ("train", "val", "test"):
        for label_dir in (split_folder / split).iterdir():
            (flat / label_dir.name).mkdir(parents=True, exist_ok=True)
            for wav in label_dir.iterdir():
                shutil.copy(wav, flat / label_dir.name / f"{split}_{wav.name}")
    return flat


def _noise_wav(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.1 * np.random.default_rng(seed).standard_normal(RATE_HZ), RATE_HZ, subtype="PCM_16")


@pytest.mark.slow
@pytest.mark.espeak
def test_split_layout_trains_a_verified_bundle_with_its_folder_in_the_provenance(split_folder, tmp_path):
    # Execute
    result = train_folder_bundle(split_folder, tmp_path / "bundle", _tiny_config(), progress=False)
    # Assert
    manifest = verify_bundle(result.bundle_dir)
    head = manifest.heads[0]
    assert head.labels == ("_background_", "no", "yes") and head.background_label == "_background_"
    data = manifest.provenance["data"]
    assert data["path"] == str(split_folder.resolve()) and data["layout"].startswith("split folders")
    assert data["counts"]["train"] == {"_background_": 16, "no": 8, "yes": 8}
    assert data["counts"]["test"] == {"_background_": 8, "no": 4, "yes": 4}
    assert "split" not in data  # the user's own splits, nothing carved
    assert result.metrics["test"]["n"] == 16 and any(result.test_data_dir.rglob("*.wav"))


@pytest.mark.slow
@pytest.mark.espeak
def test_flat_folder_is_split_per_label_and_trains(flat_folder, tmp_path):
    # Prepare: a label without _background_, so the head has no background label
    shutil.rmtree(flat_folder / "_background_")
    # Execute
    result = train_folder_bundle(flat_folder, tmp_path / "bundle", _tiny_config(), progress=False)
    # Assert: 14 files per label -> 10 train, 2 val, 2 test each
    manifest = verify_bundle(result.bundle_dir)
    assert manifest.heads[0].labels == ("no", "yes") and manifest.heads[0].background_label is None
    data = manifest.provenance["data"]
    assert data["counts"] == {"train": {"no": 10, "yes": 10}, "val": {"no": 2, "yes": 2},
                              "test": {"no": 2, "yes": 2}}
    assert data["split"]["seed"] == 0 and len(data["split"]["files"]["test"]) == 4
    assert result.metrics["split_sizes"] == {"train": 20, "val": 4, "test": 4}


def test_flat_split_is_stratified_seeded_and_disjoint(tmp_path):
    # Prepare: 3, 10 and 2 files in three labels
    for label, n in (("a", 3), ("b", 10), ("c", 2)):
        for i in range(n):
            _noise_wav(tmp_path / label / f"{i}.wav", seed=i)
    # Execute
    first = load_folder_splits(tmp_path, sample_rate_hz=RATE_HZ, clip_samples=RATE_HZ, seed=3)
    again = load_folder_splits(tmp_path, sample_rate_hz=RATE_HZ, clip_samples=RATE_HZ, seed=3)
    # Assert
    counts = first.description["counts"]
    assert counts["val"] == {"a": 1, "b": 2, "c": 0} and counts["test"] == {"a": 1, "b": 2, "c": 1}
    assert counts["train"] == {"a": 1, "b": 6, "c": 1}
    paths = [set(first.splits[s].paths) for s in ("train", "val", "test")]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert sum(map(len, paths)) == 15
    assert first.description["split"] == again.description["split"]


def test_corrupt_wav_is_skipped_and_reported_by_name(tmp_path):
    # Prepare: split layout with a truncated WAV in train/yes
    for split in ("train", "val", "test"):
        for label in ("yes", "no"):
            _noise_wav(tmp_path / split / label / "ok.wav")
    (tmp_path / "train" / "yes" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    # Execute
    folder = load_folder_splits(tmp_path, sample_rate_hz=RATE_HZ, clip_samples=RATE_HZ)
    # Assert
    assert [s["path"].rsplit("/", 1)[-1] for s in folder.description["skipped"]] == ["broken.wav"]
    assert folder.description["counts"]["train"] == {"no": 1, "yes": 1}


def test_label_with_one_file_in_a_flat_folder_is_a_usage_error_naming_it(tmp_path):
    for i in range(3):
        _noise_wav(tmp_path / "yes" / f"{i}.wav", seed=i)
    _noise_wav(tmp_path / "lonely" / "0.wav")
    with pytest.raises(UsageError, match="'lonely' has 1 usable file"):
        load_folder_splits(tmp_path, sample_rate_hz=RATE_HZ, clip_samples=RATE_HZ)


def test_empty_label_folder_is_a_usage_error_naming_it(tmp_path):
    for i in range(3):
        _noise_wav(tmp_path / "yes" / f"{i}.wav", seed=i)
    (tmp_path / "no").mkdir()
    with pytest.raises(UsageError, match=r"label folder \S*/no holds no usable audio"):
        load_folder_splits(tmp_path, sample_rate_hz=RATE_HZ, clip_samples=RATE_HZ)


def test_cli_refuses_data_with_words(tmp_path, capsys):
    rc = main(["-q", "export", "train", "--data", str(tmp_path), "--words", "yes", "--out", str(tmp_path / "b")])
    assert rc == 2 and "--data and --words conflict" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_from_data_and_prints_json(tmp_path, capsys):
    # Prepare: two labels of distinct noise, flat layout
    for label, seed in (("hiss", 0), ("hum", 100)):
        for i in range(4):
            _noise_wav(tmp_path / "data" / label / f"{i}.wav", seed=seed + i)
    # Execute
    rc = main(["-q", "export", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "bundle"),
               "--epochs", "1", "--no-baselines", "--json"])
    # Assert
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["metrics"]["split_sizes"] == {"train": 4, "val": 2, "test": 2}
    assert verify_bundle(tmp_path / "bundle").bundle_id == "edgetune-kws-folder"
