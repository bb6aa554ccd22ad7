"""Reading audio files: mono, float32, the bundle's rate, and errors that name the file."""

import numpy as np
import pytest
import soundfile as sf

from edgetune.edge.audio.io import AudioFileError, fit_clip, iter_labelled_folder, load_clip, read_audio
from edgetune.errors import UsageError


def test_stereo_44k_file_is_mixed_down_and_resampled(tmp_path, tone, write_wav):
    left, right = tone(440, 0.5, rate=44100), np.zeros(22050, dtype=np.float32)
    path = write_wav(tmp_path / "st.wav", np.stack([left, right], axis=1), rate=44100)
    x = read_audio(path, 16000)
    assert x.dtype == np.float32 and x.shape == (8000,)
    assert 0.13 < np.abs(x).max() <= 0.17  # the mean of a 0.3 tone and silence


def test_flac_reads_like_wav(tmp_path, tone, write_wav):
    samples = tone(300, 0.25)
    a = read_audio(write_wav(tmp_path / "a.wav", samples, subtype="FLOAT"), 16000)
    b = read_audio(write_wav(tmp_path / "a.flac", samples, subtype="PCM_24"), 16000)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind, message", [
    ("truncated", "truncated"), ("garbage", "unreadable"), ("empty_file", "unreadable"),
    ("no_samples", "empty"), ("nan", "NaN or Inf"), ("missing", "no such file")])
def test_bad_files_raise_an_error_naming_the_file(tmp_path, tone, write_wav, kind, message):
    path = tmp_path / f"{kind}.wav"
    if kind == "truncated":
        full = write_wav(tmp_path / "full.wav", tone(300, 1.0)).read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not audio" * 10)
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "no_samples":
        write_wav(path, np.zeros(0, dtype=np.float32))
    elif kind == "nan":
        write_wav(path, np.array([0.1, np.nan, 0.2], dtype=np.float32), subtype="FLOAT")
    with pytest.raises(AudioFileError, match=message) as info:
        read_audio(path, 16000)
    assert str(path) in str(info.value)


def test_short_recording_is_centred_in_zeros():
    out = fit_clip(np.ones(4, dtype=np.float32), 10)
    assert out.tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]


def test_long_recording_keeps_the_loudest_window():
    x = np.zeros(100, dtype=np.float32)
    x[60:70] = 1.0
    out = fit_clip(x, 20)
    assert out.shape == (20,) and out.sum() == 10.0  # the burst is whole inside the clip


def test_load_clip_has_the_clip_length(tmp_path, tone, write_wav):
    path = write_wav(tmp_path / "long.wav", tone(300, 2.5))
    assert load_clip(path, 16000, 16000).shape == (16000,)


def test_labelled_folder_lists_audio_and_reports_other_files(labelled_folder):
    (labelled_folder / "stray.wav").write_bytes(b"")
    listing = iter_labelled_folder(labelled_folder)
    assert listing.labels == ("whistle", "yes")
    assert len(listing) == 9  # 4 whistle (one 44.1 kHz stereo) + 5 yes (one corrupt: found when read)
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in ((s.path, s.reason) for s in listing.skipped)}
    assert "not an audio file" in reasons["notes.txt"] and "not inside a label folder" in reasons["stray.wav"]


def test_missing_or_empty_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        iter_labelled_folder(tmp_path / "nope")
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(UsageError, match="no audio files"):
        iter_labelled_folder(tmp_path / "empty")


def test_soundfile_still_reads_the_stereo_fixture(labelled_folder):
    # Guard for the fixture itself: the 44.1 kHz file really is stereo.
    info = sf.info(str(labelled_folder / "whistle" / "w_44k_stereo.wav"))
    assert (info.samplerate, info.channels) == (44100, 2)
