"""Feature-based transfer on the pretrained speech_embedding backbone: the exporter's default recipe."""

import shutil

import numpy as np
import pytest

from edgetune.contract.manifest import verify_bundle
from edgetune.export.train import TrainConfig
from edgetune.export.transfer import TransferConfig, train_transfer_bundle

pytestmark = [pytest.mark.slow, pytest.mark.espeak,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")]
pytest.importorskip("openwakeword", reason="the backbone's graphs come from the openwakeword==0.4.0 wheel")

WORDS = ("yes", "no", "seven", "off")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run (4 words, 8 training voices, 3 held-out test voices), baselines included."""
    out = tmp_path_factory.mktemp("transfer")
    small = TrainConfig.small(words=WORDS, seed=0)
    config = TransferConfig(data=small.data, n_windows=9, pooling="mean",
                            ds_cnn=TrainConfig(channels=32, n_blocks=3, epochs=6, batch_size=32, baselines=False))
    return config, train_transfer_bundle(out / "bundle", config, progress=False)


def test_the_bundle_records_the_backbone_its_license_and_the_wheel_files(run):
    _, result = run
    manifest = verify_bundle(result.bundle_dir)
    (backbone,) = manifest.provenance["backbones"]
    assert backbone["name"] == "speech_embedding" and backbone["license"].startswith("Apache-2.0")
    for name in ("audio_frontend.onnx", "audio_embedder.onnx"):
        entry = backbone["files"][name]
        assert entry["origin"].startswith("PyPI wheel openwakeword==0.4.0")
        assert entry["sha256"] == manifest.files[name]["sha256"] and len(entry["source_sha256"]) == 64
    assert manifest.audio.embedder.backbone == "speech_embedding" and manifest.audio.frontend.kind == \
        "speech_embedding_mel"
    assert manifest.parity["audio_embedder.onnx"]["max_abs_error"] == 0.0


def test_the_report_puts_the_seeds_baselines_beside_it_on_the_same_split(run):
    _, result = run
    m = result.metrics
    assert set(m["baselines"]) == {"mfcc_logistic_regression", "mfcc_decision_tree", "ds_cnn_from_scratch"}
    assert all(b["n"] == m["test"]["n"] for b in m["baselines"].values())
    # Synthetic voices the head never heard (chance 0.28); measured 0.93 for the transfer head
    # and 0.56 / 0.30 / 0.33 for the baselines on this split.
    assert m["test"]["accuracy"] > max(b["accuracy"] for b in m["baselines"].values())
    curve = m["learning_curve"]
    assert [p["per_class"] for p in curve][:3] == [1, 2, 5] and curve[-1]["n_train"] == m["split_sizes"]["train"]


def test_the_device_measures_exactly_what_the_exporter_reported(run):
    # The host embeds with the device's own code on the same graphs: edge evaluate on the
    # written test clips must reproduce the exporter's test accuracy to the clip.
    from edgetune.edge.bundle import load_bundle
    from support.bundles import device_trust
    from edgetune.edge.evaluate import evaluate_folder
    from edgetune.edge.runtime.providers import ProviderSettings

    _, result = run
    bundle = load_bundle(result.bundle_dir, trust=device_trust())  # the exporter's key is the test key
    head = bundle.head
    got = evaluate_folder(bundle, result.test_data_dir, head.weight, head.bias, head.labels,
                          providers=ProviderSettings(providers=("cpu",)))
    assert got.n == result.metrics["test"]["n"]
    assert got.accuracy == pytest.approx(result.metrics["test"]["accuracy"], abs=1.0 / got.n)
    np.testing.assert_array_equal(got.confusion.sum(), got.n)
