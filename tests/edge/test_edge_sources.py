"""Audio sources as URIs: files, raw PCM on stdin, microphones; bad chunks counted, not fatal."""

import importlib.util
import io

import numpy as np
import pytest

from edgetune.edge.audio.io import AudioFileError, read_audio
from edgetune.edge.audio.sources import FileSource, RawPcmSource, open_source
from edgetune.errors import UsageError


def _collect(source):
    with source:
        return np.concatenate(list(source))


@pytest.mark.parametrize("prefix", ["wav:", "file:", ""])
def test_file_source_yields_the_file_in_chunks(tmp_path, tone, write_wav, prefix):
    path = write_wav(tmp_path / "a.wav", tone(300, 0.55))
    source = open_source(f"{prefix}{path}", 16000, chunk_samples=1000)
    assert isinstance(source, FileSource)
    np.testing.assert_array_equal(_collect(source), read_audio(path, 16000))
    assert source.stats.samples == 8800 and source.stats.chunks == 9


def test_file_at_another_rate_is_resampled_in_stream(tmp_path, tone, write_wav):
    path = write_wav(tmp_path / "b.wav", tone(300, 0.5, rate=44100), rate=44100)
    out = _collect(open_source(f"wav:{path}", 16000, chunk_samples=777))
    np.testing.assert_allclose(out, read_audio(path, 16000), atol=1e-6)


def test_raw_pcm_on_stdin_is_read_at_the_bundle_rate():
    pcm = (np.arange(-1000, 1001, dtype=np.int16) * 16).astype("<i2").tobytes()
    source = open_source("-", 16000, stdin=io.BytesIO(pcm[:-1] + pcm[-1:]), chunk_samples=333)
    assert isinstance(source, RawPcmSource)
    out = _collect(source)
    assert out.shape == (2001,) and out[0] == pytest.approx(-16000 / 32768)


def test_raw_pcm_at_a_declared_rate_is_resampled(tone):
    pcm = (tone(300, 0.5, rate=8000) * 32767).astype("<i2").tobytes()
    out = _collect(open_source("-", 16000, raw_rate_hz=8000, stdin=io.BytesIO(pcm)))
    assert out.shape == (8000,)


def test_nan_samples_are_counted_and_replaced_by_zeros(tmp_path, tone, write_wav):
    x = tone(300, 0.3)
    x[1000:1010] = np.nan
    x[3000] = np.inf
    path = write_wav(tmp_path / "nan.wav", x, subtype="FLOAT")
    source = open_source(str(path), 16000, chunk_samples=1600)
    out = _collect(source)
    assert np.isfinite(out).all() and out.shape == x.shape and out[1000] == 0.0
    assert source.stats.nonfinite_chunks == 2 and source.stats.nonfinite_samples == 11
    assert source.stats.errors() == {"nonfinite_chunks": 2}


def test_unknown_scheme_suggests_the_closest_one():
    with pytest.raises(UsageError, match="unknown scheme 'wavv:'; did you mean 'wav:'"):
        open_source("wavv:/tmp/x.wav", 16000)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(AudioFileError, match="nope.wav: no such file"):
        open_source(str(tmp_path / "nope.wav"), 16000)


@pytest.mark.skipif(importlib.util.find_spec("sounddevice") is not None, reason="sounddevice is installed")
@pytest.mark.parametrize("uri", ["mic:", "alsa:hw:1,0", "alsa"])
def test_microphone_without_sounddevice_names_the_extra(uri):
    expected = r"sounddevice is not installed; install it with: pip install 'edgetune\[mic\]'"
    with pytest.raises(UsageError, match=expected):
        open_source(uri, 16000)
