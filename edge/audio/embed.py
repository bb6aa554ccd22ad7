"""The audio embed stage: each hop's feature window -> the clip's pooled embedding, incrementally.

A windowed embedder (``n_windows > 1``, e.g. ``speech_embedding``: 76-frame windows every 8
frames) embeds only the windows that end in the new hop (``hop_frames / stride_frames`` of
them) and keeps the clip's last ``n_windows`` window embeddings in a ring; pooling the ring gives,
to float rounding, what :meth:`~.models.AudioModels.embed_clips` gives on the last clip whole. A
whole-clip embedder (``n_windows == 1``, the DS-CNN) embeds the full window every hop.

When the bundle has a stream graph (:meth:`~.models.AudioModels.embed_stream`), the new windows
come from it: the hop's new frames (the last ``hop_frames`` rows of the step's window) and the
state it keeps go in, the new windows' embeddings and the next state come out -- the same numbers
as the window graph (bit for bit on ONNX Runtime's CPU provider), for a fraction of the work.
Otherwise the window graph runs on each new window.

The ring starts with the embeddings of silence (the stream's history of zeros), and the stream
state with the state of that history. A hop that failed upstream, or whose embedding fails, puts
silence in its place so the ring stays aligned; the stream state advances over silence frames in
its place. After a failed front-end that is exactly what the feature ring holds for the hop, so
the later windows that overlap it equal the window graph's. After a failed embedding the feature
ring holds the hop's real frames, which the state could not take in: those windows (the next
``window_frames / stride_frames``) then see silence where the window graph would see the frames.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from edgetune.errors import UsageError

from ..pipeline.stages import Step

log = logging.getLogger(__name__)


class AudioEmbedder:
    """Steps of :class:`~.preprocess.AudioPreprocessor` -> pooled embeddings float32 [embedding_size].

    ``silence_features``: the features of the stream's history of zeros, float32
    [frames_per_clip, F] (the preprocessor's ``ring.silence``).
    """

    def __init__(self, models, hop_samples: int, silence_features: np.ndarray) -> None:
        self.models = models
        spec = models.embedder_spec
        self.window, self.stride, self.n_windows = spec.window_frames, spec.stride_frames, spec.n_windows
        hop_frames = hop_samples // models.params.frame_hop_samples
        if self.n_windows > 1 and (hop_frames % self.stride or hop_frames // self.stride > self.n_windows):
            raise UsageError(f"a hop of {hop_frames} frames does not fit embedder windows every {self.stride} "
                             f"frames ({self.n_windows} per clip); choose a hop of a multiple of {self.stride} frames")
        self.hop_frames = hop_frames
        self.new_windows = 1 if self.n_windows == 1 else hop_frames // self.stride
        #: the stream graph is used (the bundle has one and the embedder is windowed)
        self.streaming = bool(models.streams) and self.n_windows > 1
        silence = models.window_embeddings(silence_features[None])[0]  # [n_windows, D]
        self._silence = silence[-1]
        self._ring: deque[np.ndarray] = deque(silence, maxlen=self.n_windows)
        if self.streaming:
            self._silence_frames = np.ascontiguousarray(silence_features[None, -hop_frames:])  # [1, hop_frames, F]
            self._silence_state = models.stream_state(silence_features[None])
            self._state = self._silence_state

    def _new_windows(self, features: np.ndarray) -> np.ndarray:
        """The windows ending in the new hop, oldest first: [new_windows, window, F]."""
        if self.n_windows == 1:
            return features[None]
        end = features.shape[0]
        starts = [end - self.window - (self.new_windows - 1 - j) * self.stride for j in range(self.new_windows)]
        return np.stack([features[s:s + self.window] for s in starts])

    def skip(self, step: Step) -> None:
        """A hop that failed upstream (or whose embedding failed): silence in its place.

        The state advances over silence frames, as the feature ring does after a failed front-end;
        should that fail too, it restarts from the state of silence (aligned again, the windows
        that overlap the hop then see silence before it as well). Never raises.
        """
        self._ring.extend([self._silence] * self.new_windows)
        if self.streaming:
            try:
                self._state = self.models.embed_stream(self._silence_frames, self._state)[1]
            except Exception as exc:  # an ONNX Runtime failure must not end the stream
                log.error("stream state not advanced over a skipped hop, restarted from silence: %s", exc)
                self._state = self._silence_state

    def __call__(self, step: Step) -> np.ndarray:
        try:
            if self.streaming:
                fresh, state = self.models.embed_stream(step.data[None, -self.hop_frames:], self._state)
                fresh = fresh[0]  # [new_windows, D]
                self._state = state
            else:
                fresh = self.models.embed(self._new_windows(step.data))  # [new_windows, D]
        except Exception:
            self.skip(step)
            raise
        self._ring.extend(fresh)
        return self.models.pool(np.stack(self._ring)[None])[0]
