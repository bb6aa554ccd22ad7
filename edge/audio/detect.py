"""The audio postprocessor: per-hop class posteriors to detections (smoothing, threshold, refractory).

One spoken word spans several hops, and each of them may score high; the detector turns that
run of hops into one event. Per hop it averages the posteriors of the last ``smoothing_hops``
hops, takes the best label that is not the background label, and fires when that score reaches
``threshold`` -- unless an event fired less than ``refractory_s`` seconds of audio earlier, or
the score has stayed at or above the threshold ever since the last event (the detector re-arms
only after the score drops below it once, so a word that keeps a window high for longer than the
refractory period still gives one event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgetune.errors import UsageError

from ..pipeline.smoothing import SmoothedBest
from ..pipeline.stages import Detection


@dataclass(frozen=True)
class DetectorSettings:
    """How posteriors become events.

    threshold: smoothed posterior in (0, 1] at which a label fires.
    smoothing_hops: posteriors averaged over this many most recent hops (1 = no smoothing).
    refractory_s: seconds of audio after an event in which no other event fires; ``None`` means
        one clip (a word fills at most one clip, so it gives one event).
    """

    threshold: float = 0.5
    smoothing_hops: int = 3
    refractory_s: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and 0.0 < self.threshold <= 1.0):
            raise UsageError(f"detector.threshold is {self.threshold!r}; expected a number in (0, 1]")
        if not (isinstance(self.smoothing_hops, int) and 1 <= self.smoothing_hops <= 100):
            raise UsageError(f"detector.smoothing_hops is {self.smoothing_hops!r}; expected an integer in 1..100")
        if self.refractory_s is not None and not (isinstance(self.refractory_s, (int, float))
                                                  and 0.0 <= self.refractory_s <= 3600.0):
            raise UsageError(f"detector.refractory_s is {self.refractory_s!r}; expected null (one clip) or "
                             "seconds in [0, 3600]")


class Detector:
    """Stateful: feed one posterior vector per hop, in stream order, to :meth:`update`."""

    def __init__(self, labels: Sequence[str], settings: DetectorSettings, *, clip_s: float,
                 background_label: str | None) -> None:
        self.labels = tuple(labels)
        self.settings = settings
        self.refractory_s = clip_s if settings.refractory_s is None else float(settings.refractory_s)
        self._best = SmoothedBest(self.labels, settings.smoothing_hops, background_label)
        self._last_event_s: float | None = None
        self._armed = True

    def reset(self) -> None:
        self._best.reset()
        self._last_event_s = None
        self._armed = True

    def update(self, posteriors: np.ndarray, offset_s: float, latency_ms: float = 0.0) -> Detection | None:
        """Posteriors float [C] of the window ending at ``offset_s``; an event or ``None``."""
        best, score = self._best.update(posteriors)
        if score < self.settings.threshold:
            self._armed = True
            return None
        # A small tolerance keeps float rounding of hop offsets from splitting the period.
        if not self._armed or (self._last_event_s is not None
                               and offset_s - self._last_event_s < self.refractory_s - 1e-9):
            return None
        self._last_event_s = offset_s
        self._armed = False
        return Detection(label=self.labels[best], score=min(1.0, max(0.0, score)), offset_s=offset_s,
                         latency_ms=float(latency_ms))
