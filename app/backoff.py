"""Reconnect waits, one policy for every program: doubling from a first wait up to a cap, each
wait drawn uniformly in [(1 - JITTER) x, x] of its nominal value x, so that a fleet of devices
(or several server instances, or cameras) that lost the same peer does not retry in lock-step.
The device's telemetry link, the server's ingest and the camera sources all use it.
"""

from __future__ import annotations

import random
from typing import Iterator

#: Share of the nominal wait that is random: each wait lies in [(1 - JITTER) x, x].
JITTER = 0.5


class JitteredBackoff:
    """Waits doubling from ``first_s`` up to ``longest_s``, jittered; :meth:`reset` after a success."""

    def __init__(self, first_s: float, longest_s: float, rng: random.Random | None = None) -> None:
        self.first_s, self.longest_s = first_s, longest_s
        self._attempts = 0
        self._rng = rng or random.Random()

    def next_s(self) -> float:
        nominal = min(self.longest_s, self.first_s * 2 ** min(self._attempts, 32))
        self._attempts += 1
        return nominal * (1.0 - JITTER * self._rng.random())

    def reset(self) -> None:
        self._attempts = 0

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next_s()
