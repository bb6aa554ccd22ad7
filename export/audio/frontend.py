"""The audio front-end as a graph: raw PCM to MFCC (or log-mel) features.

:class:`MfccFrontend` is a thin ``nn.Module`` whose every constant (the windowed DFT basis, the
mel filterbank, the DCT) is a registered buffer, so that it exports to ONNX as plain
``Conv``/``MatMul``/``Log`` nodes. There is no STFT op: TensorRT cannot run one. The device runs
the exported graph and therefore has no DSP code of its own.

The maths follows librosa with ``center=False`` (no padding; frame ``t`` covers pre-emphasised
samples ``t*hop .. t*hop + n_fft - 1``) and absolute dB scaling (never relative to the clip's
maximum), so that a streamed clip gives the same features as the whole clip.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgetune.contract.manifest import MfccParams

from .mel import dct_ii_matrix, dft_kernel, mel_filterbank


class MfccFrontend(nn.Module):
    """PCM float32 ``[B, N]`` to features float32 ``[B, T, F]``.

    ``T = params.n_frames(N)`` and ``F = params.n_features``. ``pcm[:, 0]`` is look-back context
    only: pre-emphasis of the first framed sample needs it. Samples are expected in ``[-1, 1]``.
    """

    def __init__(self, params: MfccParams) -> None:
        super().__init__()
        if not isinstance(params, MfccParams):
            raise TypeError(f"params is {type(params).__name__}; expected MfccParams")
        self.params = params
        self.n_bins = params.n_fft // 2 + 1
        self.hop_samples = params.frame_hop_samples
        self.preemphasis = float(params.preemphasis)
        self.log_floor = float(params.log_floor)
        self.register_buffer("dft_kernel", torch.from_numpy(dft_kernel(params.n_fft, params.window_samples)))
        mel = mel_filterbank(params.sample_rate_hz, params.n_fft, params.n_mels, params.fmin_hz, params.fmax_hz)
        self.register_buffer("mel_t", torch.from_numpy(mel.T.copy()))  # [K, M]
        if params.kind == "mfcc":
            dct = dct_ii_matrix(params.n_mels, params.n_mfcc)
            self.register_buffer("dct_t", torch.from_numpy(dct.T.copy()))  # [M, n_mfcc]
        else:
            self.dct_t = None

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        emphasised = pcm[:, 1:] - self.preemphasis * pcm[:, :-1]  # [B, N-1]
        spectrum = nn.functional.conv1d(emphasised.unsqueeze(1), self.dft_kernel, stride=self.hop_samples)  # [B, 2K, T]
        real, imag = spectrum[:, : self.n_bins], spectrum[:, self.n_bins :]  # [B, K, T] each
        power = (real * real + imag * imag).transpose(1, 2)  # [B, T, K]
        mel = power @ self.mel_t  # [B, T, K] @ [K, M] -> [B, T, M]
        log_mel = (10.0 / math.log(10.0)) * torch.log(torch.clamp(mel, min=self.log_floor))  # [B, T, M] dB
        if self.dct_t is None:
            return log_mel
        return log_mel @ self.dct_t  # [B, T, M] @ [M, n_mfcc] -> [B, T, n_mfcc]

    def extra_repr(self) -> str:
        p = self.params
        return (f"kind={p.kind}, sample_rate_hz={p.sample_rate_hz}, n_fft={p.n_fft}, "
                f"window_samples={p.window_samples}, hop_samples={p.frame_hop_samples}, n_mels={p.n_mels}, "
                f"n_features={p.n_features}")
