"""Export the audio graphs to ONNX and measure their parity with PyTorch.

Two graphs, with the tensor names of :mod:`edgetune.contract.tensors`:

- the front-end (:class:`~edgetune.export.audio.frontend.MfccFrontend`): ``pcm`` float32
  ``[B, N]`` to ``features`` float32 ``[B, T, F]``, batch and samples dynamic;
- the embedder (:class:`~edgetune.export.audio.model.DsCnn`): ``features`` float32
  ``[B, T_clip, F]`` to ``embedding`` float32 ``[B, D]``, batch dynamic, ``T_clip`` fixed.

The torch.export-based ("dynamo") exporter is used with the weights inside the ``.onnx`` file
(``external_data=False``) and an example batch of 2, since a batch of 1 would fix the batch
dimension. Opset 18 is the lowest this exporter writes without a version conversion.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from edgetune.contract import tensors
from edgetune.contract.audio_spec import MfccParams

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs.
OPSET = 18
_EXAMPLE_BATCH = 2


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The exporter's optimiser logs every pass at INFO; keep our own INFO log readable."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(logging.WARNING, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
            dynamic_shapes: dict[int, Any], metadata: Mapping[str, str]) -> Path:
    import onnx

    path = Path(path)
    module = module.eval()
    with torch.no_grad(), _quiet_exporter_logs():
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          dynamic_shapes=(dynamic_shapes,), dynamo=True, external_data=False, opset_version=OPSET,
                          verbose=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    log.info("exported %s (%d bytes, opset %d)", path.name, path.stat().st_size, OPSET)
    return path


def export_frontend(frontend: nn.Module, path: Path, *, example_samples: int | None = None) -> Path:
    """Write ``frontend`` (pcm ``[B, N]`` -> features ``[B, T, F]``) to ``path``; B and N dynamic."""
    params: MfccParams = frontend.params
    min_samples = params.frame_length_samples + params.lookback_samples  # one frame
    n = example_samples or max(params.sample_rate_hz + params.lookback_samples, min_samples + 1)
    example = 0.1 * torch.randn(_EXAMPLE_BATCH, n, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=min_samples)}
    return _export(frontend, example, path, tensors.AUDIO_FRONTEND_INPUT, tensors.AUDIO_FRONTEND_OUTPUT, dims,
                   {"edgetune.graph": "audio_frontend", "edgetune.frontend.kind": params.kind})


def export_embedder(embedder: nn.Module, path: Path, *, n_frames: int, n_features: int) -> Path:
    """Write ``embedder`` (features ``[B, n_frames, n_features]`` -> embedding ``[B, D]``); B dynamic."""
    example = torch.randn(_EXAMPLE_BATCH, n_frames, n_features, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch")}
    return _export(embedder, example, path, tensors.AUDIO_EMBEDDER_INPUT, tensors.AUDIO_EMBEDDER_OUTPUT, dims,
                   {"edgetune.graph": "audio_embedder"})


def onnx_session(path: Path):
    """An ONNX Runtime CPU session for ``path`` (the host's reference runtime)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure_parity(module: nn.Module, path: Path, inputs: np.ndarray) -> dict[str, Any]:
    """Run ``inputs`` through ``module`` (torch, eager, float32) and ONNX Runtime on ``path`` (CPU).

    Returns a JSON-ready report: ``max_abs_error``; ``max_rel_error``, the largest absolute error
    divided by the largest absolute reference value (an error relative to the output's scale,
    since element-wise ratios blow up where the reference crosses zero); ``reference_max_abs``;
    ``n_inputs`` (rows of the batch); ``input_shape``; and the runtimes compared.
    """
    import onnxruntime as ort

    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    session = onnx_session(path)
    (got,) = session.run(None, {session.get_inputs()[0].name: inputs})
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(inputs)).numpy()
    if got.shape != want.shape:
        raise RuntimeError(f"{Path(path).name}: ONNX Runtime gives shape {got.shape}, torch gives {want.shape}")
    abs_err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return {
        "max_abs_error": abs_err,
        "max_rel_error": abs_err / scale if scale > 0 else abs_err,
        "reference_max_abs": scale,
        "n_inputs": int(inputs.shape[0]),
        "input_shape": [int(d) for d in inputs.shape],
        "reference": f"torch {torch.__version__.split('+')[0]} eager CPU float32",
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
    }


def parity_signal(sample_rate_hz: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A deterministic test signal for parity checks: float32 ``[n]`` in [-1, 1].

    A logarithmic chirp from 50 Hz to near Nyquist, two steady tones, white-noise bursts, a
    stretch of digital silence (which exercises the log floor) and a near-full-scale segment.
    """
    if seconds <= 0:
        raise ValueError(f"seconds is {seconds!r}; expected a positive number")
    n = int(round(seconds * sample_rate_hz))
    t = np.arange(n) / sample_rate_hz
    rng = np.random.default_rng(seed)
    f0, f1 = 50.0, 0.45 * sample_rate_hz
    k = np.log(f1 / f0) / max(seconds, 1e-9)
    chirp = 0.4 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    tones = 0.2 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 3000.0 * t)
    noise = 0.3 * rng.standard_normal(n) * (np.sin(2 * np.pi * 1.5 * t) > 0.3)
    signal = chirp + tones + noise
    quarter = n // 4
    signal[quarter: quarter + n // 10] = 0.0  # silence
    signal[-n // 10:] *= 2.0  # louder tail
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def parity_clips(pcm: np.ndarray, clip_samples: int, lookback: int) -> np.ndarray:
    """``pcm`` as clips float32 ``[B', clip_samples + lookback]`` (a long signal is cut into clips;
    clips without their look-back get zeros in front)."""
    pcm = np.asarray(pcm, dtype=np.float32)
    width = clip_samples + lookback
    if pcm.ndim == 2 and pcm.shape[1] == width:
        return pcm
    if pcm.ndim == 2 and pcm.shape[1] == clip_samples:
        return np.pad(pcm, ((0, 0), (lookback, 0)))
    flat = pcm.reshape(-1)
    if flat.size < width:
        flat = np.pad(flat, (0, width - flat.size))
    n_clips = flat.size // width
    return flat[: n_clips * width].reshape(n_clips, width)


def torch_audio_graphs(frontend: nn.Module, embedder: nn.Module, audio, parity_pcm: np.ndarray | None = None):
    """A graph writer (``export/bundle.py``) for a torch front-end and a whole-clip embedder.

    ``embedder`` maps features ``[B, frames_per_clip, F]`` to ``[B, D]``. Parity is measured
    torch vs ONNX Runtime on ``parity_pcm`` (samples ``[n]``, cut into clips, or clips ``[B, N]``;
    default :func:`parity_signal`, 3 s).
    """
    params = audio.frontend

    def write(staging: Path) -> dict[str, Any]:
        frontend.eval()
        embedder.eval()
        export_frontend(frontend, staging / audio.frontend_file)
        export_embedder(embedder, staging / audio.embedder_file, n_frames=audio.frames_per_clip,
                        n_features=params.n_features)
        source = parity_signal(params.sample_rate_hz) if parity_pcm is None else parity_pcm
        clips = parity_clips(source, audio.clip_samples, params.lookback_samples)
        with torch.no_grad():
            features = frontend(torch.from_numpy(clips)).numpy()
        return {audio.frontend_file: measure_parity(frontend, staging / audio.frontend_file, clips),
                audio.embedder_file: measure_parity(embedder, staging / audio.embedder_file, features)}

    return write
