"""`export train --modality image` and `export evaluate` on real photos, as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image's lfw_subset (real photos): 25 faces and 25 other scenes, DIR/<label>/*.png."""
    import cv2
    from skimage.data import lfw_subset

    root = tmp_path_factory.mktemp("lfw")
    data = lfw_subset()
    for label, rows in (("face", range(0, 25)), ("not_face", range(100, 125))):
        (root / label).mkdir()
        for i in rows:
            cv2.imwrite(str(root / label / f"{i:03d}.png"), np.round(data[i] * 255).astype(np.uint8))
    return root


def test_train_writes_a_signed_image_bundle_and_evaluate_scores_it(photos, tmp_path, capsys):
    from edgetune.cli import main
    from edgetune.contract.manifest import verify_bundle

    out = tmp_path / "bundle"
    assert main(["export", "train", "--modality", "image", "--data", str(photos), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = report["metrics"]
    assert metrics["test"]["accuracy"] >= 0.8 and metrics["test"]["n"] >= 6
    assert "pixels_logistic_regression" in metrics["baselines"]
    assert [p["per_class"] for p in metrics["learning_curve"]][:3] == [1, 2, 5]
    manifest = verify_bundle(out)
    assert manifest.modalities == ("image",) and manifest.heads[0].input == "image"
    parity = manifest.parity["image_embedder.onnx"]
    assert parity["max_rel_error"] < 1e-3 and parity["top1_agreement"] == 1.0
    assert (out / "manifest.sig").is_file()

    assert main(["export", "evaluate", "--bundle", str(out), "--data", report["test_data"], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == metrics["test"]["n"] and result["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_a_bundle_for_tensorrt_has_a_plain_bilinear_resize(photos, tmp_path, capsys):
    import onnx

    from edgetune.cli import main

    out = tmp_path / "trt"
    assert main(["export", "train", "--modality", "image", "--data", str(photos), "--out", str(out),
                 "--no-antialias", "--no-baselines", "--json"]) == 0
    capsys.readouterr()
    graph = onnx.load(str(out / "image_embedder.onnx")).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes and all(a.i == 0 for n in resizes for a in n.attribute if a.name == "antialias")


def test_words_or_weights_in_the_wrong_modality_are_refused(photos, tmp_path, capsys):
    from edgetune.cli import main

    assert main(["export", "train", "--modality", "image", "--out", str(tmp_path / "x")]) == 2
    assert "--modality image needs --data DIR" in capsys.readouterr().err
    assert main(["export", "train", "--weights", "w.pth", "--out", str(tmp_path / "y")]) == 2
    assert "--weights, --allow-download and --no-antialias are for --modality image" in capsys.readouterr().err
