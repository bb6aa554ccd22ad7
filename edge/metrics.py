"""Figures for the metrics message: latency percentiles, memory, temperature."""

from __future__ import annotations

import glob
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


def rss_mb(status_path: str | Path = "/proc/self/status") -> float | None:
    """Resident memory of this process in MiB (``VmRSS``), or None where /proc is absent."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)  # the value is in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def temperature_c(thermal_root: str | Path = "/sys/class/thermal") -> float | None:
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
