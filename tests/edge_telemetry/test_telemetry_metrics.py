"""The metrics window: percentiles, real-time factor, fps, and the host readings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetune.edge.contract import messages
from edgetune.edge.telemetry.metrics import MetricsWindow, read_rss_mb, read_temperature_c


def test_snapshot_is_a_valid_metrics_body_with_exact_figures() -> None:
    # Prepare: 1..100 ms, one each
    window = MetricsWindow()
    for ms in range(1, 101):
        window.record(float(ms))
    # Execute
    body = window.snapshot("CPUExecutionProvider", audio_seconds=10.0, wall_seconds=10.0, errors={"nan_frame": 2})
    # Assert
    messages.make("jetson-test-01", 1, 1.0, "metrics", body)  # the contract accepts it
    expected = np.percentile(np.arange(1, 101), [50, 90, 95, 99])
    assert [body["latency_ms"][k] for k in ("p50", "p90", "p95", "p99")] == pytest.approx(expected)
    assert (body["latency_ms"]["max"], body["latency_ms"]["mean"]) == (100.0, 50.5)
    assert body["inferences"] == 100 and body["window_s"] == 10.0
    assert body["rtf"] == pytest.approx(5.05 / 10.0)  # 5050 ms of processing for 10 s of audio
    assert body["fps"] is None and body["errors"] == {"nan_frame": 2}


def test_fps_counts_frames_over_the_window() -> None:
    window = MetricsWindow()
    for _ in range(30):
        window.record(5.0, frames=1)
    body = window.snapshot("CUDAExecutionProvider", wall_seconds=2.0)
    assert body["fps"] == 15.0 and body["rtf"] is None


def test_snapshot_starts_a_new_window_and_an_empty_window_reports_no_latency() -> None:
    window = MetricsWindow()
    window.record(3.0)
    window.snapshot("CPUExecutionProvider")
    body = window.snapshot("CPUExecutionProvider")
    assert body["inferences"] == 0 and body["latency_ms"] == {} and body["window_s"] > 0
    messages.make("jetson-test-01", 1, 1.0, "metrics", body)


def test_percentiles_use_the_newest_samples_when_the_buffer_wraps() -> None:
    window = MetricsWindow(max_samples=10)
    for ms in [1000.0] * 5 + [1.0] * 10:
        window.record(ms)
    body = window.snapshot("CPUExecutionProvider", wall_seconds=1.0)
    assert body["latency_ms"]["p99"] == 1.0  # the 1000s were overwritten ...
    assert body["latency_ms"]["max"] == 1000.0 and body["inferences"] == 15  # ... but max and count stay exact


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_a_bad_latency_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        MetricsWindow().record(bad)


def test_rss_is_read_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  204800 kB\nThreads:\t3\n")
    assert read_rss_mb(status) == 200.0
    assert read_rss_mb(tmp_path / "absent") is None


def _zone(root: Path, i: int, kind: str, milli_c: str) -> None:
    zone = root / f"thermal_zone{i}"
    zone.mkdir(parents=True)
    (zone / "type").write_text(kind + "\n")
    (zone / "temp").write_text(milli_c + "\n")


def test_temperature_prefers_the_hottest_cpu_zone_and_ignores_the_pmic(tmp_path: Path) -> None:
    # Prepare: zones as a Jetson Nano lists them
    _zone(tmp_path, 0, "AO-therm", "39500")
    _zone(tmp_path, 1, "CPU-therm", "41000")
    _zone(tmp_path, 2, "GPU-therm", "44500")
    _zone(tmp_path, 3, "PMIC-Die", "100000")
    _zone(tmp_path, 4, "cpu-thermal", "43250")
    _zone(tmp_path, 5, "broken", "n/a")
    # Execute / Assert
    assert read_temperature_c(tmp_path) == 43.2
    assert read_temperature_c(tmp_path / "none") is None


def test_temperature_without_a_cpu_zone_uses_the_hottest(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "soc", "51000")
    _zone(tmp_path, 1, "board", "35000")
    assert read_temperature_c(tmp_path) == 51.0
