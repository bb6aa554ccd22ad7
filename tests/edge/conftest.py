"""Fixtures for the device tests.

Most tests here need only NumPy; those that run the bundle's graphs take ``bundle_dir``, a real
bundle written by the exporter's test helper (random weights), which needs the ``export`` extra
and is skipped without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


RATE = 16000


@pytest.fixture(scope="session")
def _session_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from support.bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("edge-bundle") / "random")


@pytest.fixture
def bundle_dir(_session_bundle, tmp_path) -> Path:
    """A private copy of a real bundle (random weights): a test may change its bytes."""
    from support.bundles import make_bundle

    return make_bundle(tmp_path / "bundle")


@pytest.fixture(scope="session")
def bundle(_session_bundle):
    """The loaded session bundle; do not modify its directory."""
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust

    return load_bundle(_session_bundle, trust=device_trust())


@pytest.fixture(scope="session")
def models(bundle):
    """CPU ONNX Runtime sessions for the session bundle."""
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.runtime.providers import ProviderSettings

    return AudioModels(bundle, ProviderSettings(providers=("cpu",), intra_op_threads=1))


def _tone(freq_hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine burst with a little noise, float32 [seconds * rate]."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = amplitude * np.sin(2 * np.pi * freq_hz * t) + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


@pytest.fixture(name="tone")
def tone_fixture():
    """``tone(freq_hz, seconds, rate=16000, amplitude=0.3, seed=0)`` -> float32 samples."""
    return _tone


@pytest.fixture(name="write_wav")
def write_wav_fixture():
    """``write_wav(path, samples, rate=16000, subtype="PCM_16")`` -> path."""
    return _write_wav


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    """DIR/<label>/*.wav: 'yes' (a known label) and 'whistle' (new), 4 files each, 0.6-1.2 s
    tones; one 'whistle' file at 44.1 kHz stereo; one corrupt file 'yes/broken.wav'."""
    root = tmp_path / "data"
    for i in range(4):
        _write_wav(root / "yes" / f"yes_{i}.wav", _tone(300 + 20 * i, 0.6 + 0.2 * i, seed=i))
    for i in range(3):
        _write_wav(root / "whistle" / f"w_{i}.wav", _tone(2500 + 50 * i, 0.8, seed=10 + i))
    stereo = np.stack([_tone(2600, 0.9, rate=44100, seed=20), _tone(2600, 0.9, rate=44100, seed=21)], axis=1)
    _write_wav(root / "whistle" / "w_44k_stereo.wav", stereo, rate=44100)
    (root / "yes" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (root / "yes" / "notes.txt").write_text("not audio")
    return root
