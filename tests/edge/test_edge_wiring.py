"""The daemon wired from its config: one pipeline per modality, several run side by side."""

import pytest

from edgetune.contract import ContractError
from edgetune.edge import wiring
from edgetune.edge.config import DaemonConfig
from edgetune.edge.sinks import CollectingSink
from support.bundles import public_key_text


def _config(bundle_dir, tmp_path, source):
    return DaemonConfig(device_id="jetson-wiring-01", bundle=bundle_dir, state_dir=tmp_path / "state",
                        audio={"source": source, "hop_ms": 100.0, "threshold": 0.05},
                        runtime={"providers": "cpu"}, trusted_keys=[public_key_text()])


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


def _av_setup(tmp_path, tone, write_wav, window_s: float = 1.0):
    import cv2
    import numpy as np

    from support.image_bundles import colour_photo, make_av_bundle

    bundle = make_av_bundle(tmp_path / "av", window_s=window_s)
    wav = write_wav(tmp_path / "mic.wav", tone(440, 4.0))
    frames = tmp_path / "camera"
    frames.mkdir()
    rng = np.random.default_rng(0)
    # 4 s of camera at 2 images/s: red for 2 s, then blue.
    for i in range(8):
        cv2.imwrite(str(frames / f"{i:02d}.png"), colour_photo("red" if i < 4 else "blue", rng)[:, :, ::-1])
    config = DaemonConfig(device_id="jetson-av-01", bundle=bundle, state_dir=tmp_path / "state",
                          audio={"source": f"wav:{wav}", "threshold": 0.99},
                          camera={"source": f"images:{frames}", "folder_fps": 2.0, "rate_hz": 2.0, "hold_s": 10.0,
                                  "smoothing_frames": 1},
                          runtime={"providers": "cpu"}, trusted_keys=[public_key_text()])
    return config


def test_a_microphone_a_camera_and_their_fusion_run_from_one_bundle(tmp_path, tone, write_wav):
    sink = CollectingSink()
    with wiring.Device.from_config(_av_setup(tmp_path, tone, write_wav), sinks=[sink]) as device:
        summaries = {s.pipeline: s for s in device.run()}
        status = device._status()
    assert [p.name for p in device.pipelines] == ["audio", "camera", "fused"]
    assert summaries["camera"].steps == 8 and summaries["fused"].steps == 8
    # The first frame (0.0 s) comes before the first audio hop: counted, not fused; then audio is fresh.
    assert summaries["fused"].errors.get("fusion_missing_audio") == 1
    camera = [(e.head, e.detection.label) for e in sink.events if e.pipeline == "camera"]
    fused = [(e.head, e.detection.label) for e in sink.events if e.pipeline == "fused"]
    assert camera == [("colours", "red"), ("colours", "blue")]
    # Both fused heads name the colour in view: their audio weights are zero.
    assert sorted(fused) == sorted([("both_concat", "red"), ("both_concat", "blue"), ("both_gated", "red"),
                                    ("both_gated", "blue")])
    assert {e.modality for e in sink.events} <= {"audio", "image", "fused"}
    assert [p["name"] for p in status["pipelines"]] == ["audio", "camera", "fused"]


def test_frames_without_fresh_audio_are_counted_not_fused(tmp_path, tone, write_wav):
    """The camera outlives the microphone: frames after the audio ended have no audio within the
    window, so the fused heads do not run on them (counted under fusion_missing_audio)."""
    config = _av_setup(tmp_path, tone, write_wav, window_s=0.3)
    short = write_wav(tmp_path / "short.wav", tone(440, 1.6))
    import dataclasses

    config = dataclasses.replace(config, audio=dataclasses.replace(config.audio, source=f"wav:{short}"))
    with wiring.Device.from_config(config) as device:
        summaries = {s.pipeline: s for s in device.run()}
    # Frames at 0.0, 0.5 ... 3.5 s; audio from its first hop to 1.6 s: frames at 0.5, 1.0, 1.5 pair;
    # the one before the first hop and the four after the end (2.0 ... 3.5 s) do not.
    assert summaries["fused"].steps == 8
    assert summaries["fused"].errors.get("fusion_missing_audio") == 5
