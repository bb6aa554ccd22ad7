"""Feature-based transfer: a frozen pretrained speech backbone, a linear head trained on top.

:func:`train_transfer_bundle` is the exporter's default recipe. The backbone's graphs
(Google's ``speech_embedding``, :mod:`.audio.speech_embedding`) are written first and the
training clips are embedded *with the device's own code* (:class:`~edgetune.edge.audio.models.AudioModels`
on those graphs, ONNX Runtime on the CPU), so host and device see the same embeddings. The head
is multinomial logistic regression in NumPy (:func:`~edgetune.edge.head.fit_head`, the very fit
the device refits with), its L2 strength chosen on the validation split. The report puts it
beside the seed's baselines on the same split -- MFCC + logistic regression, MFCC + decision tree,
and the DS-CNN trained from scratch -- and gives a learning curve over training clips per class.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgetune.contract.manifest import AudioSpec

from .bundle import KEYWORD_HEAD, HeadArrays, check_bundle_target, write_bundle
from .signing import sign_bundle
from .data.speech import SpeechDataConfig
from .train import TrainConfig, TrainResult, _code_version, _write_test_clips, load_splits

log = logging.getLogger(__name__)

#: L2 strengths tried on the validation split (``fit_head``'s per-sample ridge penalty).
L2_GRID = (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0)
#: Training clips per class of the learning curve (and all of them).
CURVE_PER_CLASS = (1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class TransferConfig:
    """A feature-based transfer run; saved in the bundle's provenance.

    ``n_windows`` backbone windows (76 frames, 80 ms apart) cover a clip, so a clip lasts
    ``(76 + 8 (n_windows - 1)) x 10 ms + 35 ms``; ``pooling`` turns them into the head's input
    (``contract/audio_spec.py``). ``mean`` by default: in ``benchmarks/study_enrollment.py`` it
    transferred best from synthetic to real speech (83% on the real clips, against 67% with a
    weak L2; the segment poolings and the flattened sequence did worse for few-shot enrolment),
    and it lets the device fit on single windows and score the clip's mean. ``baselines`` runs the MFCC baselines and the DS-CNN from
    scratch (``ds_cnn``: its training settings) on the same split.
    """

    data: SpeechDataConfig = SpeechDataConfig()
    backbone: str = "speech_embedding"
    n_windows: int = 9
    pooling: str = "mean"
    l2_grid: tuple[float, ...] = L2_GRID
    replay_per_class: int = 32
    baselines: bool = True
    ds_cnn: TrainConfig = field(default_factory=lambda: TrainConfig(baselines=False))
    seed: int = 0
    bundle_id: str = "edgetune-kws-speech-embedding"
    bundle_version: str = "2.0.0"

    def __post_init__(self) -> None:
        from .backbones import backbone

        if backbone(self.backbone).name != "speech_embedding":
            raise ValueError(f"TransferConfig.backbone is {self.backbone!r}; feature-based transfer offers "
                             "'speech_embedding' (the DS-CNN trains from scratch: `export train --backbone ds_cnn`)")
        if not isinstance(self.n_windows, int) or not 1 <= self.n_windows <= 64:
            raise ValueError(f"TransferConfig.n_windows is {self.n_windows!r}; expected an integer in 1..64")
        if not self.l2_grid or any(not v > 0 for v in self.l2_grid):
            raise ValueError(f"TransferConfig.l2_grid is {self.l2_grid!r}; expected positive numbers")
        spec = self.audio_spec()  # validates pooling against the window count
        if self.data.clip_samples != spec.clip_samples:
            object.__setattr__(self, "data", replace(self.data, clip_samples=spec.clip_samples))

    def audio_spec(self) -> AudioSpec:
        from .audio.speech_embedding_export import audio_spec

        return audio_spec(self.n_windows, self.pooling)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"].pop("cache_dir", None)
        out["ds_cnn"] = {k: v for k, v in out["ds_cnn"].items() if k not in ("data",)}
        return out


def _embed(models, clips: np.ndarray, what: str, progress: bool, batch: int = 64) -> np.ndarray:
    """``models.embed_clips`` in batches, with a progress bar on stderr when ``progress``."""
    starts = range(0, clips.shape[0], batch)
    if progress:
        import sys

        from tqdm import tqdm

        starts = tqdm(starts, desc=what, unit="batch", file=sys.stderr, leave=False)
    parts = [models.embed_clips(clips[i:i + batch]) for i in starts]
    return np.concatenate(parts) if parts else np.zeros((0, models.embedding_size), np.float32)


def _fit(x: np.ndarray, y: list[str], l2: float, replay=None):
    from edgetune.edge.head import fit_head

    return fit_head(x, y, l2=l2, replay=replay)


def _accuracy(weight: np.ndarray, bias: np.ndarray, labels: tuple[str, ...], x: np.ndarray, y: list[str]) -> float:
    from edgetune.edge.head import predict_proba

    pred = np.argmax(predict_proba(x, weight, bias), axis=1)
    return float(np.mean([labels[i] == t for i, t in zip(pred, y)]))


def choose_l2(train_x: np.ndarray, train_y: list[str], val_x: np.ndarray, val_y: list[str],
              grid: tuple[float, ...]) -> tuple[float, dict[str, float]]:
    """The strongest L2 of ``grid`` whose validation accuracy is within one standard error of the best.

    The one-standard-error rule: among strengths the validation split cannot tell apart, the
    simplest head. It matters when the target differs from the training data: in
    ``benchmarks/study_enrollment.py`` a head trained on synthetic phrases scored 67% on the real
    clips with the weakest L2 and 79-83% with 0.1-1, while the synthetic validation split barely
    moved.
    """
    table = {}
    for l2 in grid:
        weight, bias, labels = _fit(train_x, train_y, l2)
        table[f"{l2:g}"] = _accuracy(weight, bias, labels, val_x, val_y)
    best = max(table.values())
    se = float(np.sqrt(best * (1.0 - best) / max(1, len(val_y))))
    chosen = max(v for v in grid if table[f"{v:g}"] >= best - se)
    return chosen, table


def learning_curve(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: list[str], l2: float,
                   label_names: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    """Test accuracy of heads fitted on k training clips per class, for k in :data:`CURVE_PER_CLASS`."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(train_y == c)) for c in np.unique(train_y)}
    most = max(len(v) for v in order.values())
    out = []
    for k in [k for k in CURVE_PER_CLASS if k < most] + [most]:
        idx = np.concatenate([v[:k] for v in order.values()])
        weight, bias, labels = _fit(train_x[idx], [label_names[i] for i in train_y[idx]], l2)
        out.append({"per_class": int(k), "n_train": int(idx.size),
                    "accuracy": _accuracy(weight, bias, labels, test_x, test_y)})
    return out


def fit_transfer_head(emb: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], names: tuple[str, ...],
                      grid: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The head of a feature-based transfer run, on embeddings per split (``train``, ``val``,
    ``test``) with label indices into ``names``: L2 by :func:`choose_l2`, refitted on train + val,
    in ``names``' order; scored on test. Returns (weight, bias, metrics: test accuracy, per class,
    confusion, the validation table, split sizes, chance, the learning curve)."""
    y_names = {split: [names[i] for i in labels] for split, labels in y.items()}
    l2, l2_table = choose_l2(emb["train"], y_names["train"], emb["val"], y_names["val"], grid)
    weight, bias, head_labels = _fit(np.concatenate([emb["train"], emb["val"]]), y_names["train"] + y_names["val"], l2)
    if head_labels != names:  # fit_head orders classes by name; keep the data's order
        order = [head_labels.index(n) for n in names]
        weight, bias = weight[order], bias[order]
    from edgetune.edge.head import predict_proba

    test_y = y["test"]
    pred = np.argmax(predict_proba(emb["test"], weight, bias), axis=1)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (test_y, pred), 1)
    metrics = {
        "test": {"accuracy": float(np.mean(pred == test_y)), "n": int(test_y.size),
                 "per_class_accuracy": {n: float(np.mean(pred[test_y == i] == i)) for i, n in enumerate(names)
                                        if np.any(test_y == i)},
                 "confusion": confusion.tolist()},
        "val_accuracy_by_l2": l2_table,
        "l2": l2,
        "split_sizes": {split: int(labels.size) for split, labels in y.items()},
        "chance_accuracy": float(np.max(np.bincount(test_y)) / test_y.size),
        "learning_curve": learning_curve(emb["train"], y["train"], emb["test"], y_names["test"], l2, names, seed),
    }
    return weight, bias, metrics


def train_transfer_bundle(out_dir: Path, config: TransferConfig = TransferConfig(), progress: bool = True, *,
                          data_dir: Path | None = None, overwrite: bool = False) -> TrainResult:
    """Train a head on the frozen ``speech_embedding`` backbone and write the bundle to ``out_dir``.

    Data: synthesised speech (``config.data``) or ``data_dir``, a folder per label
    (:func:`~edgetune.export.train.load_splits`). Beside the bundle, ``<out_dir>.work/`` receives
    ``backbone/`` (the graphs the clips were embedded with) and ``test/<label>/*.wav``, the test clips.
    """
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.runtime.providers import ProviderSettings

    from .audio.speech_embedding_export import speech_embedding_graphs

    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)
    timings: dict[str, float] = {}
    splits = load_splits(config.data, None if data_dir is None else Path(data_dir), config.seed, progress)
    timings["data_s"] = splits.seconds
    names = splits.label_names
    spec = config.audio_spec()

    start = time.perf_counter()
    work_dir = out_dir.with_name(out_dir.name + ".work")
    # The graphs are built once, beside the bundle: the training clips are embedded with them, and
    # the bundle gets copies of the very same files.
    graphs = speech_embedding_graphs(spec, parity_pcm=splits.sets["test"].audio[:4])
    graphs.write(work_dir / "backbone")
    # The workstation embeds with every core (0: ONNX Runtime decides); the device uses one per stream.
    models = AudioModels.from_files(spec, work_dir / "backbone", ProviderSettings(providers=("cpu",),
                                                                                  intra_op_threads=0))
    emb = {name: _embed(models, clips.audio, f"embedding {name}", progress) for name, clips in splits.sets.items()}
    timings["embed_s"] = time.perf_counter() - start
    y = {name: clips.labels for name, clips in splits.sets.items()}

    start = time.perf_counter()
    weight, bias, fitted = fit_transfer_head(emb, y, names, config.l2_grid, config.seed)
    timings["head_s"] = time.perf_counter() - start
    l2 = fitted["l2"]
    metrics: dict[str, Any] = {
        "task": splits.task,
        "recipe": f"feature-based transfer: frozen {config.backbone}, linear head (L2 {l2:g}: the strongest "
                  "within one standard error of the best on the validation split)",
        **fitted,
    }
    metrics["test"] = {**fitted["test"], **splits.test_info}
    if config.baselines:
        start = time.perf_counter()
        metrics["baselines"] = _baselines(splits.sets, names, config, progress)
        timings["baselines_s"] = time.perf_counter() - start
    log.info("transfer head: test accuracy %.3f (n=%d)", metrics["test"]["accuracy"], metrics["test"]["n"])

    rng = np.random.default_rng(config.seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(y["train"] == c))[:config.replay_per_class]
                             for c in np.unique(y["train"])])
    start = time.perf_counter()
    test_dir = work_dir / "test"
    if test_dir.exists():
        import shutil

        shutil.rmtree(test_dir)
    _write_test_clips(splits.sets["test"], test_dir, config.data.sample_rate_hz)
    manifest = write_bundle(
        out_dir, bundle_id=config.bundle_id, bundle_version=config.bundle_version, audio=spec, write_graphs=graphs,
        heads=[HeadArrays(KEYWORD_HEAD, names, weight, bias, replay_embeddings=emb["train"][chosen],
                          replay_labels=y["train"][chosen])],
        metrics=metrics,
        provenance={"code": _code_version(), "data": dict(splits.description), "config": config.to_json(),
                    "backbones": [graphs.provenance], "recipe": metrics["recipe"]},
        overwrite=overwrite)
    sign_bundle(out_dir)  # the exporter's key (export/signing.py), created on first use
    timings["export_s"] = time.perf_counter() - start
    return TrainResult(manifest=manifest, bundle_dir=out_dir, metrics=metrics, checkpoint=None,
                       test_data_dir=test_dir, timings_s={k: round(v, 2) for k, v in timings.items()})


def _baselines(sets: Mapping[str, Any], names: tuple[str, ...], config: TransferConfig,
               progress: bool) -> dict[str, Any]:
    """The seed's baselines on the same split: MFCC + LR, MFCC + tree, DS-CNN from scratch."""
    import torch

    from .baselines import run_baselines
    from .train import _predict, default_threads, fit_ds_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(config.ds_cnn.threads or default_threads())
    torch.manual_seed(config.seed)
    try:
        start = time.perf_counter()
        model, _, feats, labels, _, _ = fit_ds_cnn(sets, len(names), config.ds_cnn, progress)
        pred = _predict(model, feats["test"]).numpy()
        out = run_baselines(feats["train"].numpy(), sets["train"].labels, feats["test"].numpy(), sets["test"].labels,
                            seed=config.seed)
        out["ds_cnn_from_scratch"] = {"accuracy": float(np.mean(pred == sets["test"].labels)),
                                      "n": int(pred.size), "fit_seconds": round(time.perf_counter() - start, 3),
                                      "features": "edgetune's MFCC; DS-CNN trained from scratch, best epoch on val"}
    finally:
        torch.set_num_threads(threads)
    return out
