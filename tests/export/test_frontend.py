"""The exported MFCC front-end (run by ONNX Runtime) against librosa, and its dynamic shapes."""

import numpy as np
import pytest
import scipy.fft
import torch

from edgetune.contract import tensors
from edgetune.contract.manifest import MfccParams
from edgetune.export.audio.frontend import MfccFrontend
from edgetune.export.onnx_export import export_frontend, onnx_session, parity_signal

librosa = pytest.importorskip("librosa")

PARAMS = MfccParams()  # 16 kHz, n_fft 512, window 400, hop 160, 40 mels 20..7600 Hz, 13 MFCC


@pytest.fixture(scope="module")
def frontend_session(tmp_path_factory):
    path = export_frontend(MfccFrontend(PARAMS), tmp_path_factory.mktemp("fe") / tensors.AUDIO_FRONTEND_FILE)
    return onnx_session(path)


def _run(session, pcm: np.ndarray) -> np.ndarray:
    return session.run([tensors.AUDIO_FRONTEND_OUTPUT], {tensors.AUDIO_FRONTEND_INPUT: pcm.astype(np.float32)})[0]


def _librosa_mfcc(x: np.ndarray) -> np.ndarray:
    """librosa's MFCC on the same parameters, pre-emphasised with a zero before x[0]: [T, 13]."""
    emphasised = x - PARAMS.preemphasis * np.concatenate([[0.0], x[:-1]])
    mel = librosa.feature.melspectrogram(
        y=emphasised, sr=16000, n_fft=512, win_length=400, hop_length=160, window="hann", center=False,
        power=2.0, n_mels=40, fmin=20, fmax=7600)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return scipy.fft.dct(db, type=2, norm="ortho", axis=0)[:13].T


@pytest.mark.parametrize("signal", ["test_signal", "quiet_noise"])
def test_onnx_mfcc_matches_librosa(frontend_session, signal):
    # Prepare: the graph's input is the clip with a zero look-back sample in front.
    rng = np.random.default_rng(0)
    x = parity_signal(16000, 2.0) if signal == "test_signal" else 1e-3 * rng.standard_normal(32000)
    x = x.astype(np.float32)
    # Execute
    ours = _run(frontend_session, np.concatenate([[0.0], x])[None])[0]
    want = _librosa_mfcc(x.astype(np.float64))
    # Assert. Tolerance: 5e-5 of the feature scale (max |MFCC|, a few hundred, since c0 sums 40
    # dB values), i.e. about 0.02 on a scale of 400. The graph runs in float32 (~7 digits), librosa
    # in float64. A float32 DFT's rounding floor sits ~140 dB below a frame's loudest bin, so a mel
    # band 60-70 dB below the peak (the chirp's far side here) is off by ~1e-2 dB; on white noise
    # the error is ~5e-7 of the scale (FINDINGS: 2e-4 absolute on a scale of 400).
    scale = np.abs(want).max()
    assert ours.shape == want.shape == (PARAMS.n_frames(x.size + 1), 13)
    np.testing.assert_allclose(ours, want, rtol=0, atol=5e-5 * scale)


@pytest.mark.parametrize("batch, n_samples", [(1, 513), (1, 16001), (3, 16001), (2, 4000), (5, 48001)])
def test_onnx_frontend_takes_any_batch_and_length(frontend_session, batch, n_samples):
    pcm = (0.1 * np.random.default_rng(n_samples).standard_normal((batch, n_samples))).astype(np.float32)
    got = _run(frontend_session, pcm)
    with torch.no_grad():
        want = MfccFrontend(PARAMS)(torch.from_numpy(pcm)).numpy()
    assert got.shape == (batch, PARAMS.n_frames(n_samples), PARAMS.n_features)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_features_of_a_prefix_are_the_first_frames_of_the_whole(frontend_session):
    # A streaming device computes features hop by hop; absolute dB scaling makes that possible.
    # Only float32 rounding differs (a different length takes a different conv code path).
    pcm = parity_signal(16000, 1.5)[None]
    whole = _run(frontend_session, pcm)[0]
    hop = PARAMS.frame_hop_samples
    later = _run(frontend_session, pcm[:, 40 * hop:])[0]  # starts exactly 40 frames in
    head = _run(frontend_session, pcm[:, : 1 + PARAMS.n_fft + 29 * hop])[0]  # 30 frames
    tol = 5e-5 * np.abs(whole).max()  # as in test_onnx_mfcc_matches_librosa
    np.testing.assert_allclose(head, whole[:30], rtol=0, atol=tol)
    np.testing.assert_allclose(later, whole[40:40 + later.shape[0]], rtol=0, atol=tol)


def test_logmel_kind_gives_n_mels_features():
    params = MfccParams(kind="logmel")
    out = MfccFrontend(params)(torch.zeros(2, 16001))
    assert out.shape == (2, params.n_frames(16001), 40)
    # digital silence sits at the absolute floor, 10*log10(1e-10) dB, whatever the clip holds
    torch.testing.assert_close(out, torch.full_like(out, -100.0))


def test_frontend_refuses_a_non_params_argument():
    with pytest.raises(TypeError, match="MfccParams"):
        MfccFrontend({"n_fft": 512})
