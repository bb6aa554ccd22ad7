"""Per-window inference statistics for the ``metrics`` message, and the host readings beside them.

The streaming loop calls :meth:`MetricsWindow.record` after each inference; every
``[metrics] interval_s`` the daemon calls :meth:`MetricsWindow.snapshot`, publishes the body and
starts a new window.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

logger = logging.getLogger(__name__)

#: Percentiles reported, as (body key, percentile in [0, 100]).
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0))


class MetricsWindow:
    """Latencies and counts of the inferences in one window.

    Args:
        max_samples: latencies kept for the percentiles. Beyond it the newest ``max_samples``
            are kept (a ring buffer); ``inferences``, ``max`` and ``mean`` stay exact.

    Thread-safe: the streaming loop records while a timer thread takes snapshots.
    """

    def __init__(self, max_samples: int = 65_536) -> None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples is {max_samples!r}; expected an integer >= 1")
        self._lock = threading.Lock()
        self._latencies_ms = np.empty(max_samples, dtype=np.float64)  # (max_samples,) ring buffer
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self._count = 0  # inferences recorded in this window
        self._frames = 0  # image frames among them (for fps)
        self._sum_ms = 0.0
        self._max_ms = 0.0
        self._started = now  # time.monotonic() seconds

    def record(self, latency_ms: float, *, frames: int = 0) -> None:
        """Record one inference that took ``latency_ms`` milliseconds.

        Args:
            latency_ms: wall time of the inference, >= 0 (a NaN or negative value is a bug in
                the caller and raises ValueError).
            frames: image frames this inference consumed (0 for audio), for ``fps``.
        """
        if not (isinstance(latency_ms, (int, float, np.floating)) and math.isfinite(latency_ms)
                and latency_ms >= 0):
            raise ValueError(f"latency_ms is {latency_ms!r}; expected a finite number of milliseconds >= 0")
        with self._lock:
            self._latencies_ms[self._count % self._latencies_ms.size] = latency_ms
            self._count += 1
            self._frames += frames
            self._sum_ms += latency_ms
            self._max_ms = max(self._max_ms, float(latency_ms))

    @property
    def inferences(self) -> int:
        """Inferences recorded in the current window."""
        with self._lock:
            return self._count

    def snapshot(
        self,
        provider: str,
        audio_seconds: float | None = None,
        wall_seconds: float | None = None,
        errors: Mapping[str, int] | None = None,
        *,
        reset: bool = True,
    ) -> dict[str, Any]:
        """The ``metrics`` body for the current window, then (by default) start a new window.

        Args:
            provider: the execution provider in use, e.g. ``"CUDAExecutionProvider"``.
            audio_seconds: seconds of audio processed in the window, for the real-time factor
                (``rtf`` = summed inference time / audio time; < 1 keeps up with real time).
                None or 0 when no audio was processed (``rtf`` is then null).
            wall_seconds: the window's length in seconds; None measures it (monotonic clock,
                since the previous snapshot or the window's creation).
            errors: counters of per-frame errors in the window, name -> integer >= 0.
            reset: start a new window after the snapshot.

        Returns:
            A body for ``messages.make(..., "metrics", body)``: ``window_s``, ``inferences``,
            ``latency_ms`` (p50/p90/p95/p99/max/mean in milliseconds; empty when there were no
            inferences), ``rtf``, ``fps`` (null unless frames were recorded), ``provider``,
            ``rss_mb`` (resident memory, MiB), ``temperature_c`` (hottest CPU zone) and ``errors``.
        """
        now = time.monotonic()
        with self._lock:
            count, frames, sum_ms, max_ms = self._count, self._frames, self._sum_ms, self._max_ms
            kept = self._latencies_ms[: min(count, self._latencies_ms.size)].copy()
            window_s = wall_seconds if wall_seconds is not None else now - self._started
            if reset:
                self._reset(now)
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            if wall_seconds is not None:
                raise ValueError(f"wall_seconds is {wall_seconds!r}; expected seconds > 0")
            window_s = 1e-6  # two snapshots in the same clock tick
        latency: dict[str, float] = {}
        if count:
            values = np.percentile(kept, [q for _, q in PERCENTILES])
            latency = {key: round(float(v), 4) for (key, _), v in zip(PERCENTILES, values)}
            latency["max"] = round(max_ms, 4)
            latency["mean"] = round(sum_ms / count, 4)
        rtf = None
        if audio_seconds:
            if not (math.isfinite(audio_seconds) and audio_seconds > 0):
                raise ValueError(f"audio_seconds is {audio_seconds!r}; expected seconds > 0 or None")
            rtf = round(sum_ms / 1000.0 / audio_seconds, 6)
        return {
            "window_s": float(window_s),
            "inferences": count,
            "latency_ms": latency,
            "rtf": rtf,
            "fps": round(frames / window_s, 3) if frames else None,
            "provider": provider,
            "rss_mb": read_rss_mb(),
            "temperature_c": read_temperature_c(),
            "errors": dict(errors or {}),
        }


def read_rss_mb(status_path: str | Path = "/proc/self/status") -> float | None:
    """Resident memory of this process in MiB (``VmRSS``), or None where /proc is absent."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_temperature_c(thermal_root: str | Path = "/sys/class/thermal") -> float | None:
    """The hottest CPU thermal zone in degrees Celsius, or None where there are no zones.

    Jetsons expose ``thermal_zone*/type`` (``CPU-therm``, ``GPU-therm``, ``SOC0-thermal``…) and
    ``temp`` in millidegrees. Zones whose type mentions the CPU are preferred; without one, the
    hottest zone of any type is used. ``PMIC`` zones are skipped: on the Jetson Nano its
    ``PMIC-Die`` zone reads a constant 100 °C and would hide every real reading.
    """
    cpu: list[float] = []
    other: list[float] = []
    for zone in sorted(glob.glob(os.path.join(str(thermal_root), "thermal_zone*"))):
        try:
            kind = Path(zone, "type").read_text(encoding="ascii", errors="replace").strip().lower()
            milli_c = int(Path(zone, "temp").read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue  # some zones refuse reads (powered-down sensors) or are not numbers
        celsius = milli_c / 1000.0
        if "pmic" in kind or not -60.0 < celsius < 200.0:
            continue
        (cpu if "cpu" in kind else other).append(celsius)
    readings = cpu or other
    return round(max(readings), 1) if readings else None
