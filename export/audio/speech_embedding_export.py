"""The ``speech_embedding`` backbone in a bundle: its audio spec, and a graph writer with parity.

:func:`audio_spec` says how the backbone covers a clip (``n_windows`` windows of 76 frames, 80 ms
apart, pooled); :func:`speech_embedding_graphs` writes the two rewritten graphs
(:mod:`.speech_embedding`) into a bundle, and for a clip of several windows the embedder's
streaming graph (:mod:`.speech_embedding_stream`), and measures their parity under ONNX Runtime:
the front-end and the embedder against the wheel's own graphs (the reference here is the
pretrained ONNX, not a torch model) -- the front-end on each parity clip alone, with a little
dither, compared where neither the wheel's call-wide floor nor the bundle's fixed floor binds (the
report says what fraction that is), the embedder on the front-end's windows; the stream graph
against the bundle's own ``audio_embedder.onnx``: each parity clip's windows, streamed 8 frames a
call from a zero state, against the window graph on each window.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.contract import tensors
from edgetune.contract.audio_spec import AudioEmbedderSpec, AudioSpec, SpeechMelParams
from edgetune.contract.graphs import Graph

from . import speech_embedding as se
from . import speech_embedding_stream as ses

#: Dither added to the parity clips, float PCM rms (about 3 LSB of int16): no floor binds.
PARITY_DITHER_RMS = 1e-4


def audio_spec(n_windows: int, pooling: str) -> AudioSpec:
    """The audio section of a ``speech_embedding`` bundle whose clip is ``n_windows`` windows
    (with the streaming embedder graph when there are several)."""
    frames = se.EMBEDDER_WINDOW_FRAMES + (n_windows - 1) * se.EMBEDDER_STRIDE_FRAMES
    clip_samples = se.FRAME_LENGTH_SAMPLES + (frames - 1) * se.FRAME_HOP_SAMPLES
    return AudioSpec(
        frontend=SpeechMelParams(floor_db=se.FLOOR_DB),
        embedder=AudioEmbedderSpec(backbone="speech_embedding", window_frames=se.EMBEDDER_WINDOW_FRAMES,
                                   window_embedding_size=se.EMBEDDING_SIZE, n_windows=n_windows,
                                   stride_frames=se.EMBEDDER_STRIDE_FRAMES,
                                   pooling="none" if n_windows == 1 else pooling),
        clip_samples=clip_samples,
        embedder_stream_graph=Graph.fp32(tensors.AUDIO_EMBEDDER_STREAM_FILE) if n_windows > 1 else None)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _report(got: np.ndarray, want: np.ndarray, inputs: np.ndarray, reference: str,
            mask: np.ndarray | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    if mask is None:
        mask = np.ones(want.shape, dtype=bool)
    err = float(np.max(np.abs(got.astype(np.float64) - want)[mask])) if mask.any() else 0.0
    scale = float(np.max(np.abs(want[mask]))) if mask.any() else 0.0
    extra = {} if mask.all() else {"compared_fraction": round(float(mask.mean()), 6)}
    return {**extra, "max_abs_error": err, "max_rel_error": err / scale if scale > 0 else err, "reference_max_abs": scale,
            "n_inputs": int(inputs.shape[0]), "input_shape": [int(d) for d in inputs.shape],
            "reference": reference, "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider"}


def measure_parity(bundle_dir: Path, clips: np.ndarray, spec: AudioSpec | None = None) -> dict[str, dict[str, Any]]:
    """Parity of the written graphs in ``bundle_dir`` with the wheel's, on clips float32 [B, N];
    when ``spec`` declares a stream graph, that graph's against the window graph too."""
    mel_src, emb_src = se.locate_wheel_models()
    rng = np.random.default_rng(0)
    clips = (np.asarray(clips, dtype=np.float32)
             + PARITY_DITHER_RMS * rng.standard_normal(clips.shape).astype(np.float32))
    ours_fe, wheel_fe = _session(bundle_dir / tensors.AUDIO_FRONTEND_FILE), _session(mel_src)
    got = ours_fe.run(None, {tensors.AUDIO_FRONTEND_INPUT: clips})[0]  # [B, T, 32]
    wheel_in = wheel_fe.get_inputs()[0].name
    wheel_db = np.stack([wheel_fe.run(None, {wheel_in: se.PCM_TO_INT16_SCALE * clip[None]})[0][0, 0]
                         for clip in clips])  # one clip per call: the floor is that clip's max - 80 dB
    want = wheel_db / se.DB_DIVISOR + se.DB_OFFSET
    # Compared where neither floor binds: the rules differ there by design (see speech_embedding.py).
    call_floor = wheel_db.max(axis=(1, 2), keepdims=True) - se.TOP_DB_SOURCE
    unfloored = (wheel_db > call_floor + 1e-3) & (wheel_db > se.FLOOR_DB + 1e-3)
    w = se.EMBEDDER_WINDOW_FRAMES
    windows = np.ascontiguousarray(got[:, -w:], dtype=np.float32)  # [B, 76, 32]
    ours_em, wheel_em = _session(bundle_dir / tensors.AUDIO_EMBEDDER_FILE), _session(emb_src)
    got_e = ours_em.run(None, {tensors.AUDIO_EMBEDDER_INPUT: windows})[0]
    want_e = wheel_em.run(None, {wheel_em.get_inputs()[0].name: windows[..., None]})[0].reshape(len(windows), -1)
    wheel = f"the wheel's own graph ({se.WHEEL}) in ONNX Runtime"
    parity = {tensors.AUDIO_FRONTEND_FILE: _report(got, want, clips, wheel + ", one dithered clip per call, where "
                                                   "neither floor binds", unfloored),
              tensors.AUDIO_EMBEDDER_FILE: _report(got_e, want_e, windows, wheel)}
    if spec is not None and spec.embedder_stream_graph is not None:
        name = spec.embedder_stream_graph.file("fp32")
        parity[name] = _stream_parity(_session(bundle_dir / name), ours_em, got, spec)
    return parity


def _stream_parity(stream, window, features: np.ndarray, spec: AudioSpec) -> dict[str, Any]:
    """The stream graph against the window graph on the windows of each clip's features [B, T, F]
    (the whole windows ``stride_frames`` apart that end with the clip's last frame: a clip of
    ``spec.clip_samples`` has ``n_windows``), the stream fed a stride a call from a zero state."""
    e = spec.embedder
    t = features.shape[1]
    if t < e.window_frames:
        raise ValueError(f"parity clips give {t} frames; the stream graph's parity needs >= {e.window_frames}")
    n = 1 + (t - e.window_frames) // e.stride_frames
    pad = -t % e.stride_frames  # at the front: the calls then end where the windows do
    padded = np.pad(features, ((0, 0), (pad, 0), (0, 0)))
    got = ses.stream_embeddings(stream, padded, e.stride_frames)[:, -n:]  # [B, n, D]
    starts = [t - e.window_frames - (n - 1 - j) * e.stride_frames for j in range(n)]
    windows = np.stack([features[:, s:s + e.window_frames] for s in starts], axis=1)  # [B, n, W, F]
    flat = np.ascontiguousarray(windows.reshape(-1, *windows.shape[2:]), dtype=np.float32)
    want = window.run(None, {tensors.AUDIO_EMBEDDER_INPUT: flat})[0]
    return _report(got.reshape(want.shape), want, flat,
                   f"this bundle's {tensors.AUDIO_EMBEDDER_FILE} on each window of the parity clips in ONNX Runtime; "
                   f"the stream fed {e.stride_frames} frames a call from a zero state")


class SpeechEmbeddingGraphs:
    """A graph writer (``export/bundle.py``): the rewritten graphs, their parity, and their
    provenance (available as :attr:`provenance` once written).

    :meth:`write` builds the graphs into a folder (the exporter embeds its training data with
    them); a writer made with ``source_dir`` then copies those files into the bundle instead of
    building them again.
    """

    def __init__(self, spec: AudioSpec, parity_pcm: np.ndarray | None = None, source_dir: Path | None = None) -> None:
        self.spec = spec
        self.parity_pcm = parity_pcm
        self.source_dir = source_dir
        self.provenance: dict[str, Any] = {}

    def write(self, directory: Path) -> dict[str, Any]:
        """Build the graphs into ``directory``; returns (and keeps) their provenance."""
        from ..backbones import backbone

        files = se.write_graphs(directory)
        stream = self.spec.embedder_stream_graph
        if stream is not None:
            name = stream.file("fp32")
            ses.write_stream_graph(directory / tensors.AUDIO_EMBEDDER_FILE, directory / name)
            files[name] = {**files[tensors.AUDIO_EMBEDDER_FILE], "sha256": se.sha256_file(directory / name),
                           "rewrite": ses.REWRITE}
        self.provenance = backbone("speech_embedding").provenance(files=files)
        self.source_dir = Path(directory)
        return self.provenance

    def __call__(self, staging: Path) -> dict[str, dict[str, Any]]:
        if self.source_dir is None:
            self.write(staging)
        else:
            for name in self.spec.files:
                shutil.copyfile(self.source_dir / name, staging / name)
        clips = self.parity_pcm
        if clips is None:
            from ..onnx_export import parity_signal

            clips = parity_signal(se.SAMPLE_RATE_HZ)
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim == 1:
            n = self.spec.clip_samples
            clips = np.pad(clips, (0, max(0, n - clips.size)))
            clips = clips[: clips.size // n * n].reshape(-1, n)
        return measure_parity(staging, clips, self.spec)


def speech_embedding_graphs(spec: AudioSpec, parity_pcm: np.ndarray | None = None) -> SpeechEmbeddingGraphs:
    """The graph writer of a ``speech_embedding`` bundle described by ``spec``."""
    return SpeechEmbeddingGraphs(spec, parity_pcm)
