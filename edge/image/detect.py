"""The image postprocessor: per-frame scores to events, one per object in view.

A camera sees the same object in many frames. Per frame the :class:`FrameDetector` averages the
posteriors of the last ``smoothing_frames`` frames, takes the best label that is not the
background label, and fires when that score reaches ``threshold`` and the label was not the
frame's best label above the threshold at any time in the last ``hold_s`` seconds. A cup left on
the desk gives one event; a cup taken away and brought back a minute later gives two; two labels
that flicker between frames give one event each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgetune.errors import UsageError

from ..pipeline.smoothing import SmoothedBest
from ..pipeline.stages import Detection


@dataclass(frozen=True)
class FrameDetectorSettings:
    """threshold: smoothed posterior in (0, 1] at which a label fires. smoothing_frames: frames
    averaged (1 = none). hold_s: seconds a label must be gone before it fires again."""

    threshold: float = 0.6
    smoothing_frames: int = 3
    hold_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not (isinstance(self.threshold, (int, float))
                                                    and 0.0 < self.threshold <= 1.0):
            raise UsageError(f"camera threshold is {self.threshold!r}; expected a number in (0, 1]")
        if isinstance(self.smoothing_frames, bool) or not (isinstance(self.smoothing_frames, int)
                                                           and 1 <= self.smoothing_frames <= 100):
            raise UsageError(f"camera smoothing_frames is {self.smoothing_frames!r}; expected an integer in 1..100")
        if isinstance(self.hold_s, bool) or not (isinstance(self.hold_s, (int, float)) and 0.0 <= self.hold_s <= 3600):
            raise UsageError(f"camera hold_s is {self.hold_s!r}; expected seconds in [0, 3600]")


class FrameDetector:
    """Stateful: feed one posterior vector per frame, in stream order, to :meth:`update`."""

    def __init__(self, labels: Sequence[str], settings: FrameDetectorSettings = FrameDetectorSettings(), *,
                 background_label: str | None = None) -> None:
        self.labels = tuple(labels)
        self.settings = settings
        self._best = SmoothedBest(self.labels, settings.smoothing_frames, background_label)
        self._last_seen_s = np.full(len(self.labels), -np.inf)

    def update(self, posteriors: np.ndarray, offset_s: float, latency_ms: float = 0.0) -> Detection | None:
        """Posteriors float [C] of the frame at ``offset_s``; an event or ``None``."""
        best, score = self._best.update(posteriors)
        if score < self.settings.threshold:
            return None
        fire = offset_s - self._last_seen_s[best] > self.settings.hold_s + 1e-9
        self._last_seen_s[best] = offset_s
        if not fire:
            return None
        return Detection(label=self.labels[best], score=min(1.0, max(0.0, score)), offset_s=offset_s,
                         latency_ms=float(latency_ms))
