"""Feature-based transfer for photos: a frozen ImageNet backbone, a linear head trained on top.

:func:`train_image_bundle` is what ``edgetune export train --modality image --data DIR`` runs.
The backbone's ``image_embedder.onnx`` (:mod:`.image`) is written first, beside the bundle, and
the photos are embedded *with the device's own code* (:class:`~edgetune.edge.image.models.ImageModels`
over that graph, the photos as the device decodes them), so host and device see the same
embeddings. The head is the device's own NumPy logistic regression
(:func:`~edgetune.edge.head.fit_head`), its L2 strength chosen on the validation split by the
one-standard-error rule (:func:`.transfer.choose_l2`). The report gives test accuracy, a
learning curve over training photos per class (1, 2, 5, 10, ... all), and a baseline on the same
split: logistic regression on the raw pixels (32 x 32 grey thumbnails).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import HeadArrays, check_bundle_target, write_bundle
from .data.images import ImageSet, load_image_splits
from .signing import sign_bundle
from .train import TrainResult, _code_version
from .transfer import L2_GRID, fit_transfer_head

log = logging.getLogger(__name__)

#: Name of the head an image bundle carries.
IMAGE_HEAD = "objects"


@dataclass(frozen=True)
class ImageTransferConfig:
    """An image transfer run; saved in the bundle's provenance.

    backbone: a name of :data:`edgetune.export.image.backbones.IMAGE_BACKBONES`
    (``efficientnet_lite2`` transferred best to small real-photo tasks, FINDINGS.md; Lite0 is
    faster). weights: a torchvision-format weights file for the torchvision backbones.
    antialias: see the field.
    """

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    allow_download: bool = False
    #: Antialiased resize inside the graph (closer to how photos are usually shrunk). TensorRT 10's
    #: ONNX parser refuses it, so ONNX Runtime would run that one node outside the engine; False
    #: writes a plain bilinear resize that TensorRT takes whole.
    antialias: bool = True
    l2_grid: tuple[float, ...] = L2_GRID
    replay_per_class: int = 32
    baselines: bool = True
    seed: int = 0
    bundle_id: str = "edgetune-images"
    bundle_version: str = "1.0.0"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pixel_baseline(sets: dict[str, ImageSet], seed: int) -> dict[str, Any]:
    """Logistic regression on 32 x 32 grey thumbnails (standardised), trained on train + val."""
    import cv2
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def thumbs(s: ImageSet) -> np.ndarray:
        grey = [cv2.cvtColor(cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for f in s.frames]
        return np.stack(grey).reshape(len(grey), -1).astype(np.float32) / 255.0

    start = time.perf_counter()
    x = np.concatenate([thumbs(sets["train"]), thumbs(sets["val"])])
    y = np.concatenate([sets["train"].labels, sets["val"].labels])
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=2000, C=0.1, random_state=seed).fit(scaler.transform(x), y)
    pred = model.predict(scaler.transform(thumbs(sets["test"])))
    return {"pixels_logistic_regression": {"accuracy": float(np.mean(pred == sets["test"].labels)),
                                           "n": int(pred.size), "fit_seconds": round(time.perf_counter() - start, 3),
                                           "features": "32x32 grey thumbnails, standardised; C=0.1"}}


def _write_test_photos(test: ImageSet, names: tuple[str, ...], test_dir: Path) -> None:
    """The test photos, copied as ``test_dir/<label>/<file>`` (for ``edge evaluate`` on the device)."""
    if test_dir.exists():
        shutil.rmtree(test_dir)
    for path, label in zip(test.paths, test.labels):
        dest = test_dir / names[label]
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(path).name
        n = 1
        while target.exists():
            target = dest / f"{Path(path).stem}-{n}{Path(path).suffix}"
            n += 1
        shutil.copyfile(path, target)


def train_image_bundle(out_dir: Path, data_dir: Path, config: ImageTransferConfig = ImageTransferConfig(), *,
                       overwrite: bool = False) -> TrainResult:
    """Train a head on the frozen ``config.backbone`` over the photos of ``data_dir`` and write
    the bundle to ``out_dir``. Beside it, ``<out_dir>.work/`` receives ``backbone/`` (the graph
    the photos were embedded with) and ``test/<label>/``, the test photos."""
    from edgetune.edge.image.models import ImageModels
    from edgetune.edge.runtime.providers import ProviderSettings

    from .image.graph import ImageGraphs

    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    splits = load_image_splits(Path(data_dir), seed=config.seed)
    names = splits.label_names
    timings["data_s"] = time.perf_counter() - start

    start = time.perf_counter()
    work_dir = out_dir.with_name(out_dir.name + ".work")
    graphs = ImageGraphs(config.backbone, weights=None if config.weights is None else Path(config.weights),
                         allow_download=config.allow_download, antialias=config.antialias)
    backbone_dir = work_dir / "backbone"
    if backbone_dir.exists():
        shutil.rmtree(backbone_dir)
    backbone_dir.mkdir(parents=True)
    parity = graphs.write(backbone_dir)
    models = ImageModels.from_files(graphs.spec, backbone_dir, ProviderSettings(providers=("cpu",),
                                                                              intra_op_threads=0))
    emb = {name: models.embed(s.frames) for name, s in splits.sets.items()}
    timings["embed_s"] = time.perf_counter() - start
    y = {name: s.labels for name, s in splits.sets.items()}

    start = time.perf_counter()
    weight, bias, fitted = fit_transfer_head(emb, y, names, config.l2_grid, config.seed)
    timings["head_s"] = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "task": f"photos of {data_dir}",
        "recipe": f"feature-based transfer: frozen {config.backbone}, linear head (L2 {fitted['l2']:g}: the strongest "
                  "within one standard error of the best on the validation split)",
        **fitted,
    }
    if config.baselines:
        metrics["baselines"] = pixel_baseline(splits.sets, config.seed)
    log.info("image head: test accuracy %.3f (n=%d)", metrics["test"]["accuracy"], metrics["test"]["n"])

    rng = np.random.default_rng(config.seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y["train"] == c))[:config.replay_per_class]
                             for c in np.unique(y["train"])])
    start = time.perf_counter()
    _write_test_photos(splits.sets["test"], names, work_dir / "test")

    def copy_graphs(staging: Path) -> dict[str, Any]:
        for file in graphs.spec.files:
            shutil.copyfile(backbone_dir / file, staging / file)
        return parity

    manifest = write_bundle(
        out_dir, bundle_id=config.bundle_id, bundle_version=config.bundle_version, image=graphs.spec,
        write_graphs=copy_graphs,
        heads=[HeadArrays(IMAGE_HEAD, names, weight, bias, replay_embeddings=emb["train"][chosen],
                          replay_labels=y["train"][chosen], input="image")],
        metrics=metrics,
        provenance={"code": _code_version(), "data": splits.description, "config": config.to_json(),
                    "backbones": [graphs.provenance], "recipe": metrics["recipe"]},
        overwrite=overwrite)
    sign_bundle(out_dir)  # the exporter's key (export/signing.py), created on first use
    timings["export_s"] = time.perf_counter() - start
    return TrainResult(manifest=manifest, bundle_dir=out_dir, metrics=metrics, checkpoint=None,
                       test_data_dir=work_dir / "test", timings_s={k: round(v, 2) for k, v in timings.items()})
