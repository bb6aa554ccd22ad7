"""DSP constants for the front-end, in NumPy: the Slaney mel filterbank and the DCT-II matrix.

Both match librosa's defaults (``librosa.filters.mel(..., htk=False, norm="slaney")`` and
``scipy.fft.dct(..., type=2, norm="ortho")``) so that a feature computed by the exported graph
can be checked against librosa. They are computed in float64 and returned as float32, the dtype
the graph uses.
"""

from __future__ import annotations

import numpy as np

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP_HZ_PER_MEL = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """Frequencies in Hz to Slaney mels (float64, same shape)."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    mels = freq_hz / _F_SP_HZ_PER_MEL
    log_part = freq_hz >= _MIN_LOG_HZ
    safe = np.where(log_part, freq_hz, _MIN_LOG_HZ)
    return np.where(log_part, _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOG_STEP, mels)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Slaney mels to frequencies in Hz (float64, same shape)."""
    mels = np.asarray(mels, dtype=np.float64)
    freq_hz = mels * _F_SP_HZ_PER_MEL
    log_part = mels >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL)), freq_hz)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney area normalisation.

    Returns float32 ``[n_mels, n_fft // 2 + 1]``: ``mel_power = filters @ power_spectrum``.
    Equal to ``librosa.filters.mel(sr=sample_rate_hz, n_fft=n_fft, n_mels=n_mels, fmin=fmin_hz,
    fmax=fmax_hz)`` (its defaults ``htk=False, norm="slaney"``).
    """
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz is {sample_rate_hz!r}; expected a positive integer")
    if n_fft < 2:
        raise ValueError(f"n_fft is {n_fft!r}; expected an integer >= 2")
    if not 0 < n_mels <= n_fft // 2 + 1:
        raise ValueError(f"n_mels is {n_mels!r}; expected 1..{n_fft // 2 + 1}")
    if not 0 <= fmin_hz < fmax_hz <= sample_rate_hz / 2:
        raise ValueError(f"fmin_hz, fmax_hz are {(fmin_hz, fmax_hz)!r}; "
                         f"expected 0 <= fmin < fmax <= {sample_rate_hz / 2}")
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate_hz)  # [K]
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin_hz), hz_to_mel(fmax_hz), n_mels + 2))  # [M + 2]
    widths_hz = np.diff(edges_hz)  # [M + 1]
    ramps = edges_hz[:, None] - bin_hz[None, :]  # [M + 2, K]
    lower = -ramps[:-2] / widths_hz[:-1, None]  # [M, K] rising edge
    upper = ramps[2:] / widths_hz[1:, None]  # [M, K] falling edge
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [M, K]
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # Slaney: constant area per filter
    return weights.astype(np.float32)


def dct_ii_matrix(n_inputs: int, n_outputs: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix, truncated to its first ``n_outputs`` coefficients.

    Returns float32 ``[n_outputs, n_inputs]``: ``coeffs = matrix @ x`` equals
    ``scipy.fft.dct(x, type=2, norm="ortho")[:n_outputs]``.
    """
    if n_inputs < 1:
        raise ValueError(f"n_inputs is {n_inputs!r}; expected a positive integer")
    if not 0 < n_outputs <= n_inputs:
        raise ValueError(f"n_outputs is {n_outputs!r}; expected 1..n_inputs ({n_inputs})")
    k = np.arange(n_outputs, dtype=np.float64)[:, None]  # [n_outputs, 1]
    n = np.arange(n_inputs, dtype=np.float64)[None, :]  # [1, n_inputs]
    matrix = np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_inputs)) * np.sqrt(2.0 / n_inputs)
    matrix[0] *= np.sqrt(0.5)  # k = 0 row: sqrt(1 / N)
    return matrix.astype(np.float32)


def periodic_hann(window_samples: int) -> np.ndarray:
    """The periodic Hann window (``scipy.signal.get_window("hann", n, fftbins=True)``), float64 ``[n]``."""
    if window_samples < 1:
        raise ValueError(f"window_samples is {window_samples!r}; expected a positive integer")
    n = np.arange(window_samples, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / window_samples)


def dft_kernel(n_fft: int, window_samples: int) -> np.ndarray:
    """Windowed real-DFT basis for a ``conv1d``: float32 ``[2 * (n_fft // 2 + 1), 1, n_fft]``.

    Rows ``0..K-1`` are ``w[n] cos(2 pi k n / n_fft)``, rows ``K..2K-1`` are ``-w[n] sin(...)``,
    with ``K = n_fft // 2 + 1`` and ``w`` the periodic Hann window of ``window_samples`` zero-padded
    centred in ``n_fft`` (librosa's convention). Convolving a frame with row ``k`` and ``K + k``
    gives the real and imaginary part of its ``k``-th rfft bin.
    """
    if not 0 < window_samples <= n_fft:
        raise ValueError(f"window_samples is {window_samples!r}; expected 1..n_fft ({n_fft})")
    window = np.zeros(n_fft, dtype=np.float64)  # [n_fft]
    left = (n_fft - window_samples) // 2
    window[left:left + window_samples] = periodic_hann(window_samples)
    n_bins = n_fft // 2 + 1
    k = np.arange(n_bins, dtype=np.int64)[:, None]  # [K, 1]
    n = np.arange(n_fft, dtype=np.int64)[None, :]  # [1, n_fft]
    phase = 2.0 * np.pi * ((k * n) % n_fft) / n_fft  # [K, n_fft]; exact integer reduction first
    kernel = np.concatenate([np.cos(phase), -np.sin(phase)], axis=0) * window[None, :]  # [2K, n_fft]
    return kernel[:, None, :].astype(np.float32)
