"""The streaming classifier: audio chunks in, one result per hop out.

Chunks of any size are cut into hops of ``hop_samples``; each hop advances the feature ring
(:class:`~.features.FeatureRing`), then the embedder and the head run on the window, giving class
posteriors for the last clip. The stream starts with one clip of zeros as history, so the first
result comes after the first hop. Results depend only on the samples, never on how they were
chunked.

A hop that fails (an ONNX Runtime error) is counted in ``errors["hop_failures"]``, logged, and
reported with ``posteriors=None``; the stream goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgetune.errors import UsageError

from ..contract.manifest import MfccParams
from ..head import Head
from .features import FeatureRing

log = logging.getLogger(__name__)

#: Default hop: 100 ms.
DEFAULT_HOP_MS = 100.0


def hop_samples_for(hop_ms: float, rate_hz: int, frame_hop_samples: int) -> int:
    """``hop_ms`` in samples at ``rate_hz``; it must be a whole number of feature frames."""
    exact = hop_ms * rate_hz / 1000.0
    samples = int(round(exact))
    if samples <= 0 or abs(samples - exact) > 1e-6 or samples % frame_hop_samples:
        frame_ms = 1000.0 * frame_hop_samples / rate_hz
        raise UsageError(f"hop_ms is {hop_ms!r}: {exact:g} samples at {rate_hz} Hz; expected a positive multiple of "
                         f"the feature hop ({frame_hop_samples} samples = {frame_ms:g} ms), e.g. 100")
    return samples


@dataclass(frozen=True, eq=False)
class HopResult:
    """The result of hop ``index`` (1-based): posteriors float32 [C] of the window that ends
    ``offset_s`` seconds into the audio (``None`` if the hop failed), its embedding float32 [D],
    and the inference time ``latency_ms`` (front-end + embedder + head)."""

    index: int
    offset_s: float
    posteriors: np.ndarray | None
    embedding: np.ndarray | None
    latency_ms: float


class StreamingClassifier:
    """Chunks -> :class:`HopResult` per hop. Not thread-safe: one stream per instance.

    ``frontend``: float32 [1, N] -> [1, T, F]; ``embedder``: float32 [1, frames_per_clip, F] ->
    [1, D] (for a bundle, ``AudioModels.features`` and ``AudioModels.embed``).
    """

    def __init__(self, frontend: Callable[[np.ndarray], np.ndarray], embedder: Callable[[np.ndarray], np.ndarray],
                 head: Head, params: MfccParams, clip_samples: int, hop_samples: int) -> None:
        self.rate_hz = params.sample_rate_hz
        self.hop_samples = hop_samples
        self.head = head
        self._embedder = embedder
        self._ring = FeatureRing(frontend, params, clip_samples, hop_samples)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self.errors = {"hop_failures": 0}

    @classmethod
    def for_models(cls, models, head: Head, hop_samples: int) -> "StreamingClassifier":
        """A classifier over a bundle's :class:`~.models.AudioModels`."""
        return cls(models.features, models.embed, head, models.params, models.clip_samples, hop_samples)

    @property
    def hops(self) -> int:
        return self._ring.hops

    def window_features(self) -> np.ndarray:
        """A copy of the current window's features, float32 [frames_per_clip, n_features]."""
        return self._ring.window().copy()

    def set_head(self, head: Head) -> None:
        """Use another head from the next hop on (after an enrolment or a rollback)."""
        self.head = head

    def push(self, chunk: np.ndarray) -> list[HopResult]:
        """Add float32 [n] samples (any n >= 0); return the results of the hops they complete."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return []
        self._pending.append(chunk)
        self._pending_n += chunk.size
        if self._pending_n < self.hop_samples:
            return []
        samples = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_hops = samples.size // self.hop_samples
        rest = samples[n_hops * self.hop_samples:]
        self._pending = [rest] if rest.size else []
        self._pending_n = rest.size
        return [self._hop(samples[i * self.hop_samples:(i + 1) * self.hop_samples]) for i in range(n_hops)]

    def flush(self) -> list[HopResult]:
        """Complete a partial last hop with zeros (the end of a file) and return its result."""
        if self._pending_n == 0:
            return []
        return self.push(np.zeros(self.hop_samples - self._pending_n, dtype=np.float32))

    def _hop(self, hop: np.ndarray) -> HopResult:
        t0 = time.perf_counter()
        index = self._ring.hops + 1
        offset_s = index * self.hop_samples / self.rate_hz
        try:
            window = self._ring.advance(hop)
            embedding = np.asarray(self._embedder(window[None, :, :]))[0]
            posteriors = self.head.predict_proba(embedding)
        except Exception as exc:  # an ONNX Runtime failure must not end the stream
            self.errors["hop_failures"] += 1
            log.error("hop %d (%.2f s) failed, skipped: %s", index, offset_s, exc)
            return HopResult(index, offset_s, None, None, 1000.0 * (time.perf_counter() - t0))
        return HopResult(index, offset_s, posteriors, embedding, 1000.0 * (time.perf_counter() - t0))
