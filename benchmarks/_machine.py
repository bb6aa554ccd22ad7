"""What every benchmark prints first: the machine and the versions it measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**versions: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"CPU: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online)",
             f"Python {platform.python_version()} on {platform.system()} {platform.release()}",
             ", ".join(f"{k} {v}" for k, v in versions.items()),
             (f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '<unset>')}; "
              f"load average at start {os.getloadavg()[0]:.2f} (1 min): other processes share these cores")]
    return "\n".join(parts)
