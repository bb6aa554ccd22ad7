"""The bundle's audio graphs in ONNX Runtime: PCM -> features -> window embeddings -> pooled.

The device has no DSP code of its own: ``audio_frontend.onnx`` turns PCM into features and
``audio_embedder.onnx`` turns one window of features into an embedding (names and shapes in
``contract/tensors.py``); a clip is ``n_windows`` windows ``stride_frames`` apart, pooled as the
manifest says (``contract/audio_spec.py``). :meth:`AudioModels.embed_clips` is the clip path that
enrolment and evaluation use; the streaming path (:mod:`.preprocess`, :mod:`.embed`) calls the
same graphs hop by hop and gets the same numbers.

A bundle may also carry ``audio_embedder_stream.onnx``, the embedder as a streaming graph with
state (``speech_embedding``: :mod:`edgetune.export.audio.speech_embedding_stream`): only a hop's
new frames go in, the new windows' embeddings and the next state come out. When it is there,
:meth:`AudioModels.window_embeddings` (so every whole-clip path) runs a clip's frames through it in
one call, and :class:`~.embed.AudioEmbedder` feeds it each hop's frames; both give the window
graph's embeddings (measured: bit for bit in ONNX Runtime's CPU provider, one thread).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from edgetune.contract import ContractError, tensors
from edgetune.contract.audio_spec import AudioSpec
from edgetune.errors import UsageError
from ..runtime.providers import ProviderSettings, create_session
from .pooling import pool

log = logging.getLogger(__name__)

#: Clips per embedder call in :meth:`AudioModels.embed_clips`.
DEFAULT_BATCH = 32


def _fixed(shape: Any) -> bool:
    return all(isinstance(d, int) and d > 0 for d in shape)


def _stream_io(session: Any, file: str, n_features: int, width: int) -> list[tuple[int, ...]]:
    """Checks a stream graph's inputs and outputs against the contract; the states' shapes (no batch).

    Inputs ``features`` [B, T, F] and ``state_in_0..n-1``; outputs ``embedding`` [B, k, D] and
    ``state_out_0..n-1``, each ``state_out_<i>`` of ``state_in_<i>``'s shape, which is fixed but
    for the batch (the device makes the first state from zeros).
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    n = len(inputs) - 1
    want_in = [tensors.AUDIO_EMBEDDER_INPUT] + [f"{tensors.AUDIO_EMBEDDER_STATE_IN}{i}" for i in range(n)]
    want_out = [tensors.AUDIO_EMBEDDER_OUTPUT] + [f"{tensors.AUDIO_EMBEDDER_STATE_OUT}{i}" for i in range(n)]
    if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(want_out):
        raise ContractError(f"bundle file {file}: inputs {list(inputs)}, outputs {list(outputs)}; expected inputs "
                            f"{tensors.AUDIO_EMBEDDER_INPUT!r} + {tensors.AUDIO_EMBEDDER_STATE_IN}<i> and outputs "
                            f"{tensors.AUDIO_EMBEDDER_OUTPUT!r} + {tensors.AUDIO_EMBEDDER_STATE_OUT}<i>, i = 0.."
                            f"{max(n - 1, 0)}, paired by index (contract/tensors.py)")
    for name, io, last, what in ((want_in[0], inputs, n_features, "[B, k * stride, n_features]"),
                                 (want_out[0], outputs, width, "[B, k, window_embedding_size]")):
        shape = io[name].shape
        if len(shape) != 3 or (isinstance(shape[2], int) and shape[2] != last):
            raise ContractError(f"bundle file {file}: {name!r} has shape {shape}; expected {what} = [B, ., {last}]")
    shapes = []
    for i in range(n):
        s_in, s_out = inputs[want_in[i + 1]].shape, outputs[want_out[i + 1]].shape
        if len(s_in) < 2 or not _fixed(s_in[1:]) or (_fixed(s_out[1:]) and list(s_out[1:]) != list(s_in[1:])) \
                or len(s_out) != len(s_in):
            raise ContractError(f"bundle file {file}: {want_in[i + 1]!r} has shape {s_in} and {want_out[i + 1]!r} "
                                f"{s_out}; expected the same shape [B, ...], fixed but for the batch")
        shapes.append(tuple(s_in[1:]))
    return shapes


def _io(session: Any, file: str, input_name: str, output_name: str, rank: int) -> tuple[Any, Any]:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if input_name not in inputs or output_name not in outputs:
        raise ContractError(f"bundle file {file}: inputs {list(inputs)}, outputs {list(outputs)}; expected input "
                            f"{input_name!r} and output {output_name!r} (contract/tensors.py)")
    if len(inputs[input_name].shape) != rank:
        raise ContractError(f"bundle file {file}: input {input_name!r} has shape {inputs[input_name].shape}; "
                            f"expected rank {rank}")
    return inputs[input_name], outputs[output_name]


class AudioModels:
    """ONNX Runtime sessions for a bundle's audio front-end and embedder.

    Attributes: ``params`` (the front-end's parameters), ``spec`` (the manifest's audio
    section), ``clip_samples``, ``frames_per_clip``, ``n_features``, ``embedding_size`` (pooled),
    ``provider`` (the provider the embedder runs on), ``providers`` (per graph) and ``streams``
    (the bundle has a stream graph; then ``stream_state_shapes``: its states' shapes, no batch).
    """

    def __init__(self, bundle: Bundle, settings: ProviderSettings | None = None, *,
                 state_dir: Path | None = None, available: list[str] | None = None) -> None:
        audio = bundle.manifest.audio
        if audio is None:
            raise ContractError(f"bundle {bundle.bundle_id} has no audio modality (modalities: "
                                f"{list(bundle.manifest.modalities)}); audio inference needs one")
        self._open(audio, bundle.directory, settings, state_dir, available)

    @classmethod
    def from_files(cls, audio: AudioSpec, directory: Path, settings: ProviderSettings | None = None) -> "AudioModels":
        """Sessions over graphs in ``directory`` that ``audio`` describes (the exporter embeds its
        training data this way, so host and device compute the same embeddings)."""
        self = cls.__new__(cls)
        self._open(audio, Path(directory), settings, None, None)
        return self

    def _open(self, audio: AudioSpec, directory: Path, settings: ProviderSettings | None, state_dir: Path | None,
              available: list[str] | None) -> None:
        settings = settings or ProviderSettings()
        self.spec = audio
        self.params = audio.frontend
        self.embedder_spec = audio.embedder
        self.rate_hz = self.params.sample_rate_hz
        self.clip_samples = audio.clip_samples
        self.frames_per_clip = audio.frames_per_clip
        self.n_features = self.params.n_features
        self.embedding_size = audio.embedding_size
        fe_path, em_path = directory / audio.frontend_file, directory / audio.embedder_file
        self._frontend = create_session(fe_path, settings, state_dir=state_dir, available=available)
        self._embedder = create_session(em_path, settings, state_dir=state_dir, available=available)
        _io(self._frontend, audio.frontend_file, tensors.AUDIO_FRONTEND_INPUT, tensors.AUDIO_FRONTEND_OUTPUT, 2)
        em_in, _ = _io(self._embedder, audio.embedder_file, tensors.AUDIO_EMBEDDER_INPUT,
                       tensors.AUDIO_EMBEDDER_OUTPUT, 3)
        window = self.embedder_spec.window_frames
        fixed = [d for d in em_in.shape[1:] if isinstance(d, int)]
        if fixed and tuple(em_in.shape[1:]) != (window, self.n_features):
            raise ContractError(f"bundle file {audio.embedder_file}: input shape {em_in.shape}; expected "
                                f"[B, {window}, {self.n_features}] from the manifest's embedder window")
        # A graph exported with a fixed batch of 1 takes windows one at a time.
        self.max_batch = 1 if em_in.shape[0] == 1 else None
        self.providers = {"frontend": self._frontend.get_providers()[0],
                          "embedder": self._embedder.get_providers()[0]}
        self.provider = self.providers["embedder"]
        self._stream = None
        self.stream_state_shapes: list[tuple[int, ...]] = []
        if audio.embedder_stream_graph is not None:
            file = audio.embedder_stream_graph.file("fp32")
            self._stream = create_session(directory / file, settings, state_dir=state_dir, available=available)
            self.stream_state_shapes = _stream_io(self._stream, file, self.n_features,
                                                  self.embedder_spec.window_embedding_size)
            n = len(self.stream_state_shapes)
            self._stream_inputs = [f"{tensors.AUDIO_EMBEDDER_STATE_IN}{i}" for i in range(n)]
            self._stream_outputs = [tensors.AUDIO_EMBEDDER_OUTPUT] + [
                f"{tensors.AUDIO_EMBEDDER_STATE_OUT}{i}" for i in range(n)]
            self.providers["embedder_stream"] = self._stream.get_providers()[0]
            stream_in = next(i for i in self._stream.get_inputs() if i.name == tensors.AUDIO_EMBEDDER_INPUT)
            self._stream_max_batch = 1 if stream_in.shape[0] == 1 else None

    @property
    def streams(self) -> bool:
        """Whether the bundle's embedder has a stream graph (``audio_embedder_stream.onnx``)."""
        return self._stream is not None

    @property
    def history_frames(self) -> int:
        """Frames of history that make a stream state: ``window_frames`` rounded up to the stride."""
        e = self.embedder_spec
        return -(-e.window_frames // e.stride_frames) * e.stride_frames

    def features(self, pcm: np.ndarray) -> np.ndarray:
        """float32 [B, N] PCM (the first ``lookback_samples`` are context) -> float32 [B, T, n_features]."""
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        out = self._frontend.run([tensors.AUDIO_FRONTEND_OUTPUT], {tensors.AUDIO_FRONTEND_INPUT: pcm})[0]
        expected = (pcm.shape[0], self.params.n_frames(pcm.shape[1]), self.n_features)
        if out.shape != expected:
            raise ContractError(f"audio front-end returned {out.shape} for PCM {pcm.shape}; expected {expected}")
        return out

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """float32 [B, window_frames, n_features] -> float32 [B, window_embedding_size]."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        width = self.embedder_spec.window_embedding_size
        parts = []
        step = self.max_batch or max(1, windows.shape[0])
        for start in range(0, windows.shape[0], step):
            out = self._embedder.run([tensors.AUDIO_EMBEDDER_OUTPUT],
                                     {tensors.AUDIO_EMBEDDER_INPUT: windows[start:start + step]})[0]
            parts.append(out)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out.shape != (windows.shape[0], width):
            raise ContractError(f"audio embedder returned {out.shape}; expected [{windows.shape[0]}, {width}]")
        return out

    def zero_stream_state(self, batch: int = 1) -> tuple[np.ndarray, ...]:
        """The stream graph's zero state for ``batch`` streams (not a history: see :meth:`stream_state`)."""
        self._need_stream()
        return tuple(np.zeros((batch, *shape), dtype=np.float32) for shape in self.stream_state_shapes)

    def embed_stream(self, frames: np.ndarray, state: tuple[np.ndarray, ...]
                     ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """New frames float32 [B, k * stride_frames, F] and the state after the frames before them ->
        (the embeddings of the k windows that end in them, float32 [B, k, D], oldest first; the state
        after them). Window ``j`` ends with new frame ``(j + 1) * stride_frames - 1``."""
        self._need_stream()
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        stride, width = self.embedder_spec.stride_frames, self.embedder_spec.window_embedding_size
        if frames.ndim != 3 or frames.shape[1] == 0 or frames.shape[1] % stride or frames.shape[2] != self.n_features:
            raise ValueError(f"stream frames have shape {frames.shape}; expected [B, k * {stride}, {self.n_features}], "
                             f"k >= 1")
        b, k = frames.shape[0], frames.shape[1] // stride
        if len(state) != len(self.stream_state_shapes) or any(
                s.shape != (b, *shape) for s, shape in zip(state, self.stream_state_shapes)):
            raise ValueError(f"stream state has shapes {[np.shape(s) for s in state]}; expected "
                             f"{[(b, *shape) for shape in self.stream_state_shapes]}")
        feed = dict(zip(self._stream_inputs, state))
        feed[tensors.AUDIO_EMBEDDER_INPUT] = frames
        out = self._stream.run(self._stream_outputs, feed)
        if out[0].shape != (b, k, width):
            raise ContractError(f"audio stream embedder returned {out[0].shape}; expected [{b}, {k}, {width}]")
        return out[0], tuple(out[1:])

    def stream_state(self, history: np.ndarray) -> tuple[np.ndarray, ...]:
        """The stream state after ``history``, features float32 [B, T, F] with T >= :attr:`history_frames`
        (e.g. the features of silence): its last ``history_frames`` frames fed to a zero state."""
        self._need_stream()
        need = self.history_frames
        if history.ndim != 3 or history.shape[1] < need:
            raise ValueError(f"history has shape {history.shape}; expected [B, >= {need}, {self.n_features}]")
        return self.embed_stream(history[:, -need:], self.zero_stream_state(history.shape[0]))[1]

    def _need_stream(self) -> None:
        if self._stream is None:
            raise UsageError(f"this bundle's embedder has no stream graph ({tensors.AUDIO_EMBEDDER_STREAM_FILE}); "
                             "use embed() on windows")

    def windows_of(self, features: np.ndarray) -> np.ndarray:
        """A clip's features [B, frames_per_clip, F] -> its windows [B, n_windows, window_frames, F] (views)."""
        e = self.embedder_spec
        starts = [j * e.stride_frames for j in range(e.n_windows)]
        return np.stack([features[:, s:s + e.window_frames] for s in starts], axis=1)

    def pool(self, sequence: np.ndarray) -> np.ndarray:
        """Window embeddings [B, n_windows, D] in time order -> the clip's embedding [B, embedding_size]."""
        kind = self.embedder_spec.pooling
        return np.ascontiguousarray(sequence[:, 0], dtype=np.float32) if kind == "none" else pool(sequence, kind)

    def window_embeddings(self, features: np.ndarray) -> np.ndarray:
        """A clip's features [B, frames_per_clip, F] -> its window embeddings [B, n_windows, D], in time order.

        With a stream graph: one call from a zero state on the frames, padded at the front to a
        multiple of the stride so that calls end where windows do; the last ``n_windows`` outputs
        are the clip's windows (none of them reaches into the padding). Otherwise the window graph
        on each window.
        """
        features = np.asarray(features, dtype=np.float32)
        e = self.embedder_spec
        if features.ndim != 3 or features.shape[1:] != (self.frames_per_clip, self.n_features):
            raise ValueError(f"clip features have shape {features.shape}; expected [B, {self.frames_per_clip}, "
                             f"{self.n_features}]")
        if self._stream is None or e.n_windows == 1:
            windows = self.windows_of(features)  # [B, n, W, F]
            b, n = windows.shape[:2]
            return self.embed(windows.reshape(b * n, *windows.shape[2:])).reshape(b, n, -1)
        pad = -self.frames_per_clip % e.stride_frames
        frames = np.pad(features, ((0, 0), (pad, 0), (0, 0))) if pad else features
        step = self._stream_max_batch or max(1, frames.shape[0])
        parts = [self.embed_stream(frames[i:i + step], self.zero_stream_state(frames[i:i + step].shape[0]))[0]
                 for i in range(0, frames.shape[0], step)]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out[:, -e.n_windows:]

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """A clip's features [B, frames_per_clip, F] -> its pooled embedding [B, embedding_size]."""
        return self.pool(self.window_embeddings(features))

    def clip_window_embeddings(self, clips: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Whole clips float32 [B, clip_samples] -> their window embeddings [B, n_windows, D], before
        pooling (enrolment fits on single windows). Zero look-back samples go before each clip."""
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise ValueError(f"clips have shape {clips.shape}; expected [B, {self.clip_samples}]")
        lookback = self.params.lookback_samples
        parts = [self.window_embeddings(self.features(np.pad(clips[i:i + batch_size], ((0, 0), (lookback, 0)))))
                 for i in range(0, clips.shape[0], batch_size)]
        width = self.embedder_spec.window_embedding_size
        return np.concatenate(parts) if parts else np.zeros((0, self.embedder_spec.n_windows, width), np.float32)

    def embed_clips(self, clips: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Whole clips float32 [B, clip_samples] -> embeddings float32 [B, embedding_size]: the
        pooled :meth:`clip_window_embeddings`."""
        return self.pool(self.clip_window_embeddings(clips, batch_size))
