"""The bundle's audio graphs in ONNX Runtime: PCM -> features -> window embeddings -> pooled.

The device has no DSP code of its own: ``audio_frontend.onnx`` turns PCM into features and
``audio_embedder.onnx`` turns one window of features into an embedding (names and shapes in
``contract/tensors.py``); a clip is ``n_windows`` windows ``stride_frames`` apart, pooled as the
manifest says (``contract/audio_spec.py``). :meth:`AudioModels.embed_clips` is the clip path that
enrolment and evaluation use; the streaming path (:mod:`.preprocess`, :mod:`.embed`) calls the
same graphs hop by hop and gets the same numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from edgetune.contract import ContractError, tensors
from edgetune.contract.audio_spec import AudioSpec
from ..runtime.providers import ProviderSettings, create_session
from .pooling import pool

log = logging.getLogger(__name__)

#: Clips per embedder call in :meth:`AudioModels.embed_clips`.
DEFAULT_BATCH = 32


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
    ``provider`` (the provider the embedder runs on) and ``providers`` (per graph).
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

    def windows_of(self, features: np.ndarray) -> np.ndarray:
        """A clip's features [B, frames_per_clip, F] -> its windows [B, n_windows, window_frames, F] (views)."""
        e = self.embedder_spec
        starts = [j * e.stride_frames for j in range(e.n_windows)]
        return np.stack([features[:, s:s + e.window_frames] for s in starts], axis=1)

    def pool(self, sequence: np.ndarray) -> np.ndarray:
        """Window embeddings [B, n_windows, D] in time order -> the clip's embedding [B, embedding_size]."""
        kind = self.embedder_spec.pooling
        return np.ascontiguousarray(sequence[:, 0], dtype=np.float32) if kind == "none" else pool(sequence, kind)

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """A clip's features [B, frames_per_clip, F] -> its pooled embedding [B, embedding_size]."""
        windows = self.windows_of(features)  # [B, n, W, F]
        b, n = windows.shape[:2]
        flat = self.embed(windows.reshape(b * n, *windows.shape[2:]))  # [B*n, D]
        return self.pool(flat.reshape(b, n, -1))

    def embed_clips(self, clips: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Whole clips float32 [B, clip_samples] -> embeddings float32 [B, embedding_size].

        Zero look-back samples go before each clip, as in the stream's first window.
        """
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise ValueError(f"clips have shape {clips.shape}; expected [B, {self.clip_samples}]")
        lookback = self.params.lookback_samples
        out = np.empty((clips.shape[0], self.embedding_size), dtype=np.float32)
        for start in range(0, clips.shape[0], batch_size):
            part = clips[start:start + batch_size]
            pcm = np.concatenate([np.zeros((part.shape[0], lookback), dtype=np.float32), part], axis=1)
            out[start:start + part.shape[0]] = self.embed_features(self.features(pcm))
        return out
