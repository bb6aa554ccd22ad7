"""The audio preprocessor: PCM chunks of any size -> one step per hop of incremental features.

Chunks are cut into hops of ``hop_samples``; each hop advances the feature ring
(:class:`~.features.FeatureRing`: only the frames the hop completes are computed), and the step
carries the window's features, float32 [frames_per_clip, F]. The stream starts with one clip of
zeros as history, so the first step comes after the first hop. Steps depend only on the samples,
never on how they were chunked.

A hop whose front-end fails is counted in ``errors["hop_failures"]``, logged, and given as a
failed step; its frames become silence frames so the window stays aligned.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from edgetune.errors import UsageError

from ..pipeline.stages import Step
from .features import FeatureRing

log = logging.getLogger(__name__)

#: Default hop: 100 ms.
DEFAULT_HOP_MS = 100.0


def hop_samples_for(hop_ms: float, rate_hz: int, step_samples: int) -> int:
    """``hop_ms`` in samples at ``rate_hz``; it must be a whole number of ``step_samples`` (the
    front-end's frame hop, or the embedder's stride for a windowed embedder)."""
    exact = hop_ms * rate_hz / 1000.0
    samples = int(round(exact))
    if samples <= 0 or abs(samples - exact) > 1e-6 or samples % step_samples:
        step_ms = 1000.0 * step_samples / rate_hz
        example = max(step_samples, int(round(0.1 * rate_hz / step_samples)) * step_samples)
        raise UsageError(f"hop_ms is {hop_ms!r}: {exact:g} samples at {rate_hz} Hz; expected a positive multiple of "
                         f"{step_samples} samples ({step_ms:g} ms) for this bundle, e.g. "
                         f"{1000 * example / rate_hz:g}")
    return samples


class AudioPreprocessor:
    """Chunks -> :class:`Step` per hop, ``data`` the window's features. One stream per instance.

    ``frontend``: float32 [1, N] -> [1, T, F] (a bundle's ``AudioModels.features``).
    """

    def __init__(self, frontend, params, clip_samples: int, hop_samples: int) -> None:
        self.rate_hz = params.sample_rate_hz
        self.hop_samples = hop_samples
        self.ring = FeatureRing(frontend, params, clip_samples, hop_samples)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self.errors = {"hop_failures": 0}

    @classmethod
    def for_models(cls, models, hop_samples: int) -> "AudioPreprocessor":
        return cls(models.features, models.params, models.clip_samples, hop_samples)

    @property
    def hops(self) -> int:
        return self.ring.hops

    @property
    def position_s(self) -> float:
        """Seconds of audio processed so far (whole hops)."""
        return self.ring.hops * self.hop_samples / self.rate_hz

    def push(self, chunk: np.ndarray) -> Iterator[Step]:
        """Add float32 [n] samples (any n >= 0); yield a step per hop they complete (lazily: the
        caller times each step)."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if chunk.size == 0:
            return
        self._pending.append(chunk)
        self._pending_n += chunk.size
        if self._pending_n < self.hop_samples:
            return
        samples = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_hops = samples.size // self.hop_samples
        rest = samples[n_hops * self.hop_samples:]
        self._pending = [rest] if rest.size else []
        self._pending_n = rest.size
        for i in range(n_hops):
            yield self._hop(samples[i * self.hop_samples:(i + 1) * self.hop_samples])

    def flush(self) -> Iterator[Step]:
        """Complete a partial last hop with zeros (the end of a file) and yield its step."""
        if self._pending_n:
            yield from self.push(np.zeros(self.hop_samples - self._pending_n, dtype=np.float32))

    def _hop(self, hop: np.ndarray) -> Step:
        index = self.ring.hops + 1
        offset_s = index * self.hop_samples / self.rate_hz
        try:
            window = self.ring.advance(hop)
        except Exception as exc:  # an ONNX Runtime failure must not end the stream
            self.errors["hop_failures"] += 1
            log.error("hop %d (%.2f s): front-end failed, skipped: %s", index, offset_s, exc)
            return Step(index, offset_s, None, failed=True)
        return Step(index, offset_s, window)
