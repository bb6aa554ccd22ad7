"""The bundle's audio graphs in ONNX Runtime: PCM -> features -> embedding.

The device has no DSP code of its own: ``audio_frontend.onnx`` turns PCM into features and
``audio_embedder.onnx`` turns one clip's features into an embedding (names and shapes in
``contract/tensors.py``). :meth:`AudioModels.embed_clips` is the clip pipeline that enrolment and
evaluation use; the streaming path (:mod:`.stream`) calls the same two graphs hop by hop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..contract import ContractError, tensors
from ..runtime.providers import ProviderSettings, create_session

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

    Attributes: ``params`` (the front-end's :class:`MfccParams`), ``clip_samples``,
    ``frames_per_clip``, ``n_features``, ``embedding_size``, ``provider`` (the provider the
    embedder runs on) and ``providers`` (per graph).
    """

    def __init__(self, bundle: Bundle, settings: ProviderSettings | None = None, *,
                 state_dir: Path | None = None, available: list[str] | None = None) -> None:
        audio = bundle.manifest.audio
        if audio is None:
            raise ContractError(f"bundle {bundle.bundle_id} has no audio modality (modalities: "
                                f"{list(bundle.manifest.modalities)}); audio inference needs one")
        settings = settings or ProviderSettings()
        self.params = audio.frontend
        self.rate_hz = self.params.sample_rate_hz
        self.clip_samples = audio.clip_samples
        self.frames_per_clip = audio.frames_per_clip
        self.n_features = self.params.n_features
        self.embedding_size = audio.embedding_size
        fe_path, em_path = bundle.directory / audio.frontend_file, bundle.directory / audio.embedder_file
        self._frontend = create_session(fe_path, settings, state_dir=state_dir, available=available)
        self._embedder = create_session(em_path, settings, state_dir=state_dir, available=available)
        _io(self._frontend, audio.frontend_file, tensors.AUDIO_FRONTEND_INPUT, tensors.AUDIO_FRONTEND_OUTPUT, 2)
        em_in, _ = _io(self._embedder, audio.embedder_file, tensors.AUDIO_EMBEDDER_INPUT,
                       tensors.AUDIO_EMBEDDER_OUTPUT, 3)
        fixed = [d for d in em_in.shape[1:] if isinstance(d, int)]
        if fixed and tuple(em_in.shape[1:]) != (self.frames_per_clip, self.n_features):
            raise ContractError(f"bundle file {audio.embedder_file}: input shape {em_in.shape}; expected "
                                f"[B, {self.frames_per_clip}, {self.n_features}] from the manifest's front-end")
        # A graph exported with a fixed batch of 1 takes clips one at a time.
        self.max_batch = 1 if em_in.shape[0] == 1 else None
        self.providers = {"frontend": self._frontend.get_providers()[0],
                          "embedder": self._embedder.get_providers()[0]}
        self.provider = self.providers["embedder"]

    def features(self, pcm: np.ndarray) -> np.ndarray:
        """float32 [B, N] PCM (pcm[:, 0] is the look-back sample) -> float32 [B, T, n_features]."""
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        out = self._frontend.run([tensors.AUDIO_FRONTEND_OUTPUT], {tensors.AUDIO_FRONTEND_INPUT: pcm})[0]
        expected = (pcm.shape[0], self.params.n_frames(pcm.shape[1]), self.n_features)
        if out.shape != expected:
            raise ContractError(f"audio front-end returned {out.shape} for PCM {pcm.shape}; expected {expected}")
        return out

    def embed(self, features: np.ndarray) -> np.ndarray:
        """float32 [B, frames_per_clip, n_features] -> float32 [B, embedding_size]."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        out = self._embedder.run([tensors.AUDIO_EMBEDDER_OUTPUT], {tensors.AUDIO_EMBEDDER_INPUT: features})[0]
        if out.shape != (features.shape[0], self.embedding_size):
            raise ContractError(f"audio embedder returned {out.shape}; expected [{features.shape[0]}, "
                                f"{self.embedding_size}]")
        return out

    def embed_clips(self, clips: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Whole clips float32 [B, clip_samples] -> embeddings float32 [B, embedding_size].

        A zero look-back sample goes before each clip, as in the stream's first window.
        """
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise ValueError(f"clips have shape {clips.shape}; expected [B, {self.clip_samples}]")
        batch = min(batch_size, self.max_batch or batch_size)
        lookback = self.params.lookback_samples
        out = np.empty((clips.shape[0], self.embedding_size), dtype=np.float32)
        for start in range(0, clips.shape[0], batch):
            part = clips[start:start + batch]
            pcm = np.concatenate([np.zeros((part.shape[0], lookback), dtype=np.float32), part], axis=1)
            out[start:start + part.shape[0]] = self.embed(self.features(pcm))
        return out
