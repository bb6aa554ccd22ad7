"""The device's image modality: the embedder session, the camera pipeline's stages, the frame
detector, and enrolment / evaluation on photo folders (the mean-colour stand-in embedder of
tests/support/image_bundles.py: a real ONNX graph, not a backbone)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgetune.contract import ContractError
from edgetune.edge.bundle import load_bundle
from edgetune.edge.head_store import HeadStore
from edgetune.edge.image.detect import FrameDetector, FrameDetectorSettings
from edgetune.edge.image.models import ImageModels
from edgetune.edge.image.pipeline import image_pipeline
from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
from edgetune.edge.pipeline.loop import run_pipeline
from edgetune.errors import UsageError
from support.image_bundles import trust, colour_photo, make_image_bundle, mean_colour


@dataclass(frozen=True)
class _Frame:
    image: np.ndarray
    offset_s: float
    index: int = 0


class _Collect:
    def __init__(self) -> None:
        self.events, self.reports = [], []

    def detection(self, event) -> None:
        self.events.append(event)

    def metrics(self, report) -> None:
        self.reports.append(report)


def _write_photos(root: Path, counts: dict[str, int], seed: int) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = (40 + 8 * (i % 3), 56 + 4 * (i % 2))  # several sizes: the graph resizes, not the device
            cv2.imwrite(str(root / name / f"{name}_{i}.png"), colour_photo(name, rng, size)[:, :, ::-1])
    return root


@pytest.fixture()
def bundle(tmp_path):
    return load_bundle(make_image_bundle(tmp_path / "bundle"), **trust())


def test_the_embedder_session_computes_what_the_graph_says_for_frames_of_any_size(bundle):
    models = ImageModels(bundle)
    rng = np.random.default_rng(1)
    frames = [colour_photo("red", rng, (30, 40)), colour_photo("blue", rng, (64, 48)), colour_photo("green", rng, (30, 40))]
    out = models.embed(frames)
    assert out.shape == (3, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, mean_colour(frames), atol=1e-5)
    np.testing.assert_allclose(models.embed_one(frames[1]), out[1], atol=1e-6)
    with pytest.raises(ValueError, match=r"frame 0 is float64 \[4, 4, 3\]; expected uint8 \[H, W, 3\]"):
        models.embed([np.zeros((4, 4, 3))])


def test_an_audio_only_bundle_has_no_image_embedder(tmp_path):
    from support.bundles import make_bundle

    with pytest.raises(ContractError, match="has no image modality"):
        ImageModels(load_bundle(make_bundle(tmp_path / "audio"), **trust()))


def test_one_object_in_view_gives_one_event_and_returns_after_the_hold_time():
    det = FrameDetector(("_background_", "cup", "cat"), FrameDetectorSettings(threshold=0.6, smoothing_frames=1,
                                                                             hold_s=2.0),
                        background_label="_background_")
    cup, cat, nothing = np.array([0.1, 0.9, 0.0]), np.array([0.1, 0.0, 0.9]), np.array([0.9, 0.05, 0.05])
    fired = [(t, det.update(p, t)) for t, p in [(0.0, cup), (0.2, cup), (0.4, nothing), (1.0, cup), (1.2, cat),
                                                  (1.4, cup), (3.0, nothing), (3.6, cup), (5.5, cup)]]
    labels = [(t, d.label) for t, d in fired if d is not None]
    # The cup once; the cat once; the cup flickering back within 2 s does not fire again; after
    # 2.2 s out of view it does; a background frame never fires.
    assert labels == [(0.0, "cup"), (1.2, "cat"), (3.6, "cup")]


def test_the_frame_detector_refuses_what_it_cannot_use():
    with pytest.raises(UsageError, match="camera threshold is 0; expected a number in \\(0, 1\\]"):
        FrameDetectorSettings(threshold=0)
    with pytest.raises(ValueError, match="nothing but the background label"):
        FrameDetector(("_background_",), background_label="_background_")
    with pytest.raises(ValueError, match=r"posteriors have shape \(2,\); expected \[3\]"):
        FrameDetector(("a", "b", "c")).update(np.ones(2), 0.0)


def test_the_camera_pipeline_names_what_is_in_view_and_counts_bad_frames(bundle):
    rng = np.random.default_rng(2)
    frames = ([_Frame(colour_photo("red", rng), 0.2 * i) for i in range(10)]
              + [_Frame(np.zeros((5, 5), np.uint8), 2.0)]  # a broken frame: counted, the stream goes on
              + [_Frame(colour_photo("blue", rng), 2.2 + 0.2 * i) for i in range(10)])
    models = ImageModels(bundle)
    heads = HeadSet([ActiveHead("colours", bundle.heads["colours"].head, 0)])
    pipeline = image_pipeline(bundle, models, frames, heads,
                              detector=FrameDetectorSettings(threshold=0.6, smoothing_frames=2, hold_s=1.0))
    sink = _Collect()
    summary = run_pipeline(pipeline, sink)
    assert [(e.detection.label, e.modality, e.pipeline) for e in sink.events] == [
        ("red", "image", "camera"), ("blue", "image", "camera")]
    assert summary.steps == 21 and summary.errors.get("bad_frames") == 1
    assert pipeline.describe()["modality"] == "image"


def test_enrolment_learns_a_new_object_from_a_few_photos_and_is_promoted(bundle, tmp_path):
    from edgetune.edge.evaluate import evaluate_folder
    from edgetune.edge.image.enroll import enroll_images

    data = _write_photos(tmp_path / "photos", {"red": 6, "green": 6, "blue": 6, "yellow": 6}, seed=3)
    test = _write_photos(tmp_path / "test", {"red": 4, "green": 4, "blue": 4, "yellow": 4}, seed=4)
    store = HeadStore(bundle, tmp_path / "state", "colours")
    before = evaluate_folder(bundle, test, bundle.head.weight, bundle.head.bias, bundle.head.labels, modality="image")
    assert before.accuracy == pytest.approx(0.75)  # yellow is unknown: its four photos are always wrong

    report = enroll_images(bundle, data, store, copies=2, seed=0)
    assert report.promoted and report.new_labels == ("yellow",) and report.version == 1
    head = store.head(store.current_version)
    after = evaluate_folder(bundle, test, head.weight, head.bias, head.labels, modality="image")
    assert after.accuracy == 1.0
    store.rollback(0)
    assert store.current_version == 0


def test_a_corrupt_photo_is_skipped_and_named(bundle, tmp_path):
    from edgetune.edge.evaluate import evaluate_folder

    data = _write_photos(tmp_path / "photos", {"red": 2, "blue": 2}, seed=5)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = evaluate_folder(bundle, data, bundle.head.weight, bundle.head.bias, bundle.head.labels, modality="image")
    assert result.n == 4 and result.accuracy == 1.0
    assert [Path(s.path).name for s in result.skipped] == ["broken.jpg"]
    assert "not a photo OpenCV can decode" in result.skipped[0].reason


def test_the_cli_enrols_and_evaluates_an_image_head(bundle, tmp_path, capsys):
    import json

    from edgetune.cli import main

    data = _write_photos(tmp_path / "photos", {"red": 5, "green": 5, "blue": 5, "yellow": 5}, seed=6)
    common = ["--bundle", str(bundle.directory), "--state-dir", str(tmp_path / "state"), "--json"]
    assert main(["edge", "enroll", *common, "--data", str(data), "--copies", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["promoted"] and report["new_labels"] == ["yellow"]
    assert main(["edge", "evaluate", *common, "--data", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["head_version"] == 1 and result["accuracy"] == 1.0


def test_edge_run_watches_a_camera_and_prints_one_event_per_object(bundle, tmp_path, capsys):
    """`edge run --camera images:DIR`: the daemon's CLI path, a folder of frames as the camera."""
    import json

    import cv2

    from edgetune.cli import main

    frames = tmp_path / "camera"
    frames.mkdir()
    rng = np.random.default_rng(7)
    for i, name in enumerate(["red"] * 4 + ["green"] * 4 + ["red"] * 2):
        cv2.imwrite(str(frames / f"{i:02d}.png"), colour_photo(name, rng)[:, :, ::-1])
    code = main(["edge", "run", "--bundle", str(bundle.directory), "--state-dir", str(tmp_path / "state"),
                 "--camera", f"images:{frames}", "--camera-rate", "1", "--json"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    # One frame a second: red at 0 s, green at 4 s, red again at 8 s (out of view for 4 s > hold 2 s).
    assert [(e["label"], e["pipeline"], e["head"], e["modality"]) for e in events] == [
        ("red", "camera", "colours", "image"), ("green", "camera", "colours", "image"),
        ("red", "camera", "colours", "image")]
