"""The front-end's DSP constants against librosa and scipy."""

import numpy as np
import pytest
import scipy.fft

from edgetune.export.audio.mel import dct_ii_matrix, dft_kernel, mel_filterbank

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize(
    "sample_rate_hz, n_fft, n_mels, fmin_hz, fmax_hz",
    [(16000, 512, 40, 20.0, 7600.0), (16000, 400, 64, 0.0, 8000.0), (22050, 1024, 80, 50.0, 11025.0)],
)
def test_mel_filterbank_matches_librosa(sample_rate_hz, n_fft, n_mels, fmin_hz, fmax_hz):
    # Execute
    ours = mel_filterbank(sample_rate_hz, n_fft, n_mels, fmin_hz, fmax_hz)
    theirs = librosa.filters.mel(sr=sample_rate_hz, n_fft=n_fft, n_mels=n_mels, fmin=fmin_hz, fmax=fmax_hz)
    # Assert: filter peaks are ~1e-2, so 1e-8 absolute is float32 rounding
    assert ours.dtype == np.float32 and ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


def test_dct_matrix_is_scipy_orthonormal_dct_ii():
    x = np.random.default_rng(0).standard_normal((40, 7))
    np.testing.assert_allclose(dct_ii_matrix(40, 13) @ x, scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:13],
                               atol=1e-5)


def test_dft_kernel_gives_the_rfft_of_a_windowed_frame():
    # Prepare
    n_fft, window = 512, 400
    frame = np.random.default_rng(1).standard_normal(n_fft)
    kernel = dft_kernel(n_fft, window)[:, 0, :].astype(np.float64)  # [2K, n_fft]
    padded_window = np.pad(librosa.filters.get_window("hann", window, fftbins=True), (56, 56))
    # Execute
    out = kernel @ frame
    want = np.fft.rfft(frame * padded_window)
    # Assert
    np.testing.assert_allclose(out[:257] + 1j * out[257:], want, atol=1e-4)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(16000, 512, 300, 20.0, 7600.0)
    with pytest.raises(ValueError, match="fmin_hz"):
        mel_filterbank(16000, 512, 40, 20.0, 9000.0)
