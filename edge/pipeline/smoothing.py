"""What every postprocessor starts from: the posteriors of the last few steps averaged, and the
best label that is not the background label, with its smoothed score.

The audio detector (refractory period, re-arming) and the camera's frame detector (hold time)
differ only in what they do with that score.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np


class SmoothedBest:
    """Feed one posterior vector per step, in stream order, to :meth:`update`."""

    def __init__(self, labels: Sequence[str], window: int, background_label: str | None) -> None:
        self.labels = tuple(labels)
        self._candidates = np.array([lab != background_label for lab in self.labels])
        if not self._candidates.any():
            raise ValueError(f"labels {self.labels} hold nothing but the background label; nothing could fire")
        self._recent: deque[np.ndarray] = deque(maxlen=window)

    def reset(self) -> None:
        self._recent.clear()

    def update(self, posteriors: np.ndarray) -> tuple[int, float]:
        """(index of the best non-background label, its score averaged over the window)."""
        post = np.asarray(posteriors, dtype=np.float64)
        if post.shape != (len(self.labels),):
            raise ValueError(f"posteriors have shape {post.shape}; expected [{len(self.labels)}]")
        self._recent.append(post)
        smoothed = np.mean(self._recent, axis=0)
        best = int(np.argmax(np.where(self._candidates, smoothed, -np.inf)))
        return best, float(smoothed[best])
