"""Host readings and latency figures for the metrics message."""

from pathlib import Path

from edgetune.edge.metrics import latency_percentiles, rss_mb, temperature_c


def test_latency_percentiles_of_nothing_are_zero_and_of_values_are_ordered():
    assert latency_percentiles([]) == {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    figures = latency_percentiles([float(i) for i in range(1, 101)])
    assert figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"] == 100.0
    assert figures["mean"] == 50.5


def test_rss_is_read_from_proc_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  204800 kB\nThreads:\t3\n")
    assert rss_mb(status) == 200.0
    assert rss_mb(tmp_path / "absent") is None


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
    assert temperature_c(tmp_path) == 43.2
    assert temperature_c(tmp_path / "none") is None


def test_temperature_without_a_cpu_zone_uses_the_hottest(tmp_path: Path) -> None:
    _zone(tmp_path, 0, "soc", "51000")
    _zone(tmp_path, 1, "board", "35000")
    assert temperature_c(tmp_path) == 51.0
