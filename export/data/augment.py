"""Waveform augmentation for synthesised keyword clips: noise colours, gain, SNR, placement.

All functions take a NumPy ``Generator`` so a dataset is reproducible from one seed, and work
on float32 mono samples in [-1, 1].
"""

from __future__ import annotations

import numpy as np

#: Noise colours: spectral slope of the power spectrum in dB per octave.
NOISE_COLOURS = {"white": 0.0, "pink": -3.0, "brown": -6.0, "blue": 3.0}


def coloured_noise(n_samples: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise float32 ``[n_samples]`` with unit RMS and the given colour's spectral slope."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"colour is {colour!r}; expected one of {sorted(NOISE_COLOURS)}")
    white = rng.standard_normal(n_samples)
    if NOISE_COLOURS[colour] != 0.0:
        spectrum = np.fft.rfft(white)  # [n//2 + 1]
        freqs = np.fft.rfftfreq(n_samples)
        freqs[0] = freqs[1]  # no infinite gain at DC
        spectrum *= freqs ** (NOISE_COLOURS[colour] / (20.0 * np.log10(2.0)))  # amplitude slope
        white = np.fft.irfft(spectrum, n=n_samples)
    return (white / max(float(np.sqrt(np.mean(white ** 2))), 1e-12)).astype(np.float32)


def hum(n_samples: int, sample_rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz and a few harmonics at random phases), float32 with unit RMS."""
    t = np.arange(n_samples) / sample_rate_hz
    base_hz = rng.choice([50.0, 60.0])
    wave = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * k * base_hz * t + rng.uniform(0, 2 * np.pi))
               for k in range(1, 6))
    return (wave / np.sqrt(np.mean(wave ** 2))).astype(np.float32)


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, margin_samples: int = 160) -> np.ndarray:
    """``x`` without the leading and trailing stretch quieter than ``threshold_db`` below its peak."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) >= peak * 10.0 ** (threshold_db / 20.0))
    start = max(int(loud[0]) - margin_samples, 0)
    stop = min(int(loud[-1]) + 1 + margin_samples, x.size)
    return x[start:stop]


def place(sound: np.ndarray, clip_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``sound`` at a random offset inside a clip of zeros, float32 ``[clip_samples]``.

    A sound longer than the clip is cropped to a random window of ``clip_samples``.
    """
    out = np.zeros(clip_samples, dtype=np.float32)
    if sound.size >= clip_samples:
        start = int(rng.integers(0, sound.size - clip_samples + 1))
        out[:] = sound[start:start + clip_samples]
    else:
        offset = int(rng.integers(0, clip_samples - sound.size + 1))
        out[offset:offset + sound.size] = sound
    return out


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float, signal_rms: float | None = None) -> np.ndarray:
    """``signal + noise`` with the noise scaled to ``snr_db`` below the signal's RMS.

    ``signal_rms`` overrides the reference level (e.g. the RMS of the word alone, not of the clip
    that is mostly silence around it).
    """
    level = rms(signal) if signal_rms is None else signal_rms
    return signal + noise * (level / max(rms(noise), 1e-12)) * 10.0 ** (-snr_db / 20.0)


def with_peak_db(x: np.ndarray, peak_db: float) -> np.ndarray:
    """``x`` scaled so its peak is ``peak_db`` dBFS (unchanged if silent)."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x if peak == 0.0 else x * (10.0 ** (peak_db / 20.0) / peak)
