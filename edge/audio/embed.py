"""The audio embed stage: each hop's feature window -> the clip's pooled embedding, incrementally.

A windowed embedder (``n_windows > 1``, e.g. ``speech_embedding``: 76-frame windows every 8
frames) embeds only the windows that end in the new hop (``hop_frames / stride_frames`` of
them) and keeps the clip's last ``n_windows`` window embeddings in a ring; pooling the ring gives,
to float rounding, what :meth:`~.models.AudioModels.embed_clips` gives on the last clip whole. A
whole-clip embedder (``n_windows == 1``, the DS-CNN) embeds the full window every hop.

The ring starts with the embeddings of silence (the stream's history of zeros). A hop that
failed upstream, or whose embedding fails, puts silence in its place so the ring stays aligned.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from edgetune.errors import UsageError

from ..pipeline.stages import Step


class AudioEmbedder:
    """Steps of :class:`~.preprocess.AudioPreprocessor` -> pooled embeddings float32 [embedding_size]."""

    def __init__(self, models, hop_samples: int, silence_features: np.ndarray) -> None:
        self.models = models
        spec = models.embedder_spec
        self.window, self.stride, self.n_windows = spec.window_frames, spec.stride_frames, spec.n_windows
        hop_frames = hop_samples // models.params.frame_hop_samples
        if self.n_windows > 1 and (hop_frames % self.stride or hop_frames // self.stride > self.n_windows):
            raise UsageError(f"a hop of {hop_frames} frames does not fit embedder windows every {self.stride} "
                             f"frames ({self.n_windows} per clip); choose a hop of a multiple of {self.stride} frames")
        self.new_windows = 1 if self.n_windows == 1 else hop_frames // self.stride
        silence = models.embed(models.windows_of(silence_features[None])[0])  # [n_windows, D]
        self._silence = silence[-1]
        self._ring: deque[np.ndarray] = deque(silence, maxlen=self.n_windows)

    def _new_windows(self, features: np.ndarray) -> np.ndarray:
        """The windows ending in the new hop, oldest first: [new_windows, window, F]."""
        if self.n_windows == 1:
            return features[None]
        end = features.shape[0]
        starts = [end - self.window - (self.new_windows - 1 - j) * self.stride for j in range(self.new_windows)]
        return np.stack([features[s:s + self.window] for s in starts])

    def skip(self, step: Step) -> None:
        """A hop that failed upstream: silence in its place."""
        self._ring.extend([self._silence] * self.new_windows)

    def __call__(self, step: Step) -> np.ndarray:
        try:
            fresh = self.models.embed(self._new_windows(step.data))  # [new_windows, D]
        except Exception:
            self.skip(step)
            raise
        self._ring.extend(fresh)
        return self.models.pool(np.stack(self._ring)[None])[0]
