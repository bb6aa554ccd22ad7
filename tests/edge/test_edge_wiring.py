"""The daemon wired from its config: one pipeline per modality, several run side by side."""

import pytest

from edgetune.contract import ContractError
from edgetune.edge import wiring
from edgetune.edge.config import DaemonConfig
from edgetune.edge.sinks import CollectingSink


def _config(bundle_dir, tmp_path, source):
    return DaemonConfig(device_id="jetson-wiring-01", bundle=bundle_dir, state_dir=tmp_path / "state",
                        audio={"source": source, "hop_ms": 100.0, "threshold": 0.05},
                        runtime={"providers": "cpu"})


def test_the_device_runs_the_bundles_audio_pipeline_from_its_config(bundle_dir, tmp_path, tone, write_wav):
    path = write_wav(tmp_path / "a.wav", tone(440, 2.0))
    sink = CollectingSink()
    with wiring.Device.from_config(_config(bundle_dir, tmp_path, f"wav:{path}"), sinks=[sink]) as device:
        (summary,) = device.run()
    assert summary.pipeline == "audio" and summary.steps == 20 and summary.stream_s == pytest.approx(2.0)
    assert [p.name for p in device.pipelines] == ["audio"] and device.telemetry is None
    assert sink.events and all(e.pipeline == "audio" and e.head == "keywords" for e in sink.events)


def test_two_pipelines_run_side_by_side_and_each_reports(bundle_dir, tmp_path, tone, write_wav):
    # Prepare: a second builder for the same modality stands in for a camera (a second source), so the
    # device has two pipelines over two files of different length.
    long_wav = write_wav(tmp_path / "long.wav", tone(440, 3.0))
    short_wav = write_wav(tmp_path / "short.wav", tone(300, 1.0))
    sink = CollectingSink()
    device = wiring.Device.from_config(_config(bundle_dir, tmp_path, f"wav:{long_wav}"), sinks=[sink])
    second = wiring.Device.from_config(_config(bundle_dir, tmp_path, f"wav:{short_wav}"))
    extra = second._watched[0]
    extra.pipeline.name = "audio-2"
    device._watched.append(extra)
    # Execute
    summaries = device.run()
    device.close()
    second.close()
    # Assert: both ran to their own end, in their own order, and their events say which they came from.
    assert [(s.pipeline, s.steps) for s in summaries] == [("audio", 30), ("audio-2", 10)]
    assert {e.pipeline for e in sink.events} == {"audio", "audio-2"}
    assert {r.pipeline for r in sink.reports} == {"audio", "audio-2"}


def test_a_bundle_with_a_modality_the_device_cannot_run_is_refused(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(wiring, "BUILDERS", {"image": lambda ctx, stores: None})
    with pytest.raises(ContractError, match=r"this device runs \['image'\] pipelines"):
        wiring.Device.from_config(_config(bundle_dir, tmp_path, "wav:x.wav"))
