"""A folder-per-label dataset: clips loaded, bad files reported by name and skipped."""

import numpy as np
import pytest
import soundfile as sf

from edgetune.errors import UsageError
from edgetune.export.data.folder import load_labelled_folder


def _tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_loads_clips_and_skips_bad_files_by_name(tmp_path):
    # Prepare: good files in two labels (one stereo at 44.1 kHz), a truncated WAV, a text file
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    sf.write(tmp_path / "yes" / "a.wav", _tone(0.5, 16000), 16000, subtype="PCM_16")
    sf.write(tmp_path / "no" / "b.wav", _tone(1.5, 44100, channels=2), 44100, subtype="PCM_16")
    sf.write(tmp_path / "no" / "cut.wav", _tone(1.0, 16000), 16000, subtype="PCM_16")
    data = (tmp_path / "no" / "cut.wav").read_bytes()
    (tmp_path / "no" / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "yes" / "notes.txt").write_text("not audio")
    # Execute
    dataset = load_labelled_folder(tmp_path, sample_rate_hz=16000, clip_samples=16000)
    # Assert
    assert dataset.audio.shape == (2, 16000) and dataset.audio.dtype == np.float32
    assert dataset.label_names == ("no", "yes")
    assert sorted(s.path.rsplit("/", 1)[-1] for s in dataset.skipped) == ["cut.wav", "notes.txt"]
    assert "cut.wav" in dataset.report() and "2 files skipped" in dataset.report()


def test_label_order_can_be_fixed_and_unknown_labels_are_skipped(tmp_path):
    for label in ("yes", "maybe"):
        (tmp_path / label).mkdir()
        sf.write(tmp_path / label / "x.wav", _tone(1.0, 16000), 16000)
    dataset = load_labelled_folder(tmp_path, sample_rate_hz=16000, clip_samples=16000,
                                   label_names=("_background_", "yes"))
    assert dataset.labels.tolist() == [1]
    assert [s.reason for s in dataset.skipped] == ["label 'maybe' is not one of ['_background_', 'yes']"]


def test_a_folder_without_usable_audio_is_a_usage_error(tmp_path):
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(UsageError, match="broken.wav"):
        load_labelled_folder(tmp_path, sample_rate_hz=16000, clip_samples=16000)
