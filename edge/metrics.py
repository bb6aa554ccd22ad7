"""Figures for the metrics message: latency percentiles, memory, temperature."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99/max/mean of latencies in ms (all 0.0 when there are none)."""
    if len(latencies_ms) == 0:
        return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p95": round(float(p95), 4),
            "p99": round(float(p99), 4), "max": round(float(values.max()), 4), "mean": round(float(values.mean()), 4)}


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux), or ``None``."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)


def temperature_c(thermal_root: Path = Path("/sys/class/thermal")) -> float | None:
    """The hottest thermal zone in degrees Celsius (a Jetson has several), or ``None``."""
    temps = []
    for zone in sorted(thermal_root.glob("thermal_zone*/temp")):
        try:
            temps.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    plausible = [t for t in temps if -40.0 < t < 150.0]
    return round(max(plausible), 1) if plausible else None
