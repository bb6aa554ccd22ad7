"""Train the keyword model on synthesised speech or a labelled folder, test it on held-out data, bundle it.

:func:`train_keyword_bundle` synthesises the splits (cached); :func:`train_folder_bundle` reads
them from a user's folder per label. Both then share one path: compute front-end features once,
train a DS-CNN with Adam keeping the best epoch on the validation split, evaluate on the test
split (held-out voices for synthetic speech), build the replay set, and write the bundle with
metrics (the model's accuracy next to the MFCC baselines on the same split) and provenance (code
version, data, config). The run's checkpoint and the test clips are written beside the bundle.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from edgetune import __version__
from edgetune.contract.manifest import AudioSpec, Manifest, MfccParams

from .backbones import ds_cnn_provenance

from .audio.frontend import MfccFrontend
from .audio.model import DsCnn, DsCnnConfig, KeywordModel, save_checkpoint
from .bundle import KEYWORD_HEAD, HeadArrays, check_bundle_target, write_bundle
from .signing import sign_bundle
from .onnx_export import torch_audio_graphs
from .data.speech import ClipSet, SpeechDataConfig, synthesize_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in the bundle's provenance and the checkpoint."""

    data: SpeechDataConfig = SpeechDataConfig()
    frontend: MfccParams = MfccParams()
    channels: int = 64
    n_blocks: int = 4
    dropout: float = 0.2
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    replay_per_class: int = 32
    baselines: bool = True
    threads: int | None = None
    bundle_id: str = "edgetune-kws-espeak"
    bundle_version: str = "1.0.0"

    def __post_init__(self) -> None:
        for name in ("channels", "n_blocks", "epochs", "batch_size", "replay_per_class"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} is {getattr(self, name)!r}; expected a positive integer")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.learning_rate {self.learning_rate!r} / weight_decay {self.weight_decay!r}; "
                             "expected > 0 and >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"TrainConfig.threads is {self.threads!r}; expected None or >= 1")
        if self.frontend.sample_rate_hz != self.data.sample_rate_hz:
            raise ValueError(f"TrainConfig: front-end rate {self.frontend.sample_rate_hz} Hz differs from the "
                             f"data's {self.data.sample_rate_hz} Hz")

    @classmethod
    def small(cls, words: tuple[str, ...] = ("yes", "no", "zero", "one"), seed: int = 0,
              **changes: Any) -> "TrainConfig":
        """A run of a few seconds for tests: few voices, a narrow model, few epochs."""
        data = SpeechDataConfig(words=tuple(words),
                                train_voices=("en-us", "en-gb", "en+f3", "en+m3", "en-029", "en+m1", "en+f2", "en+m7"),
                                val_voices=("en+m6", "en-gb-scotland"), test_voices=("en-us+f3", "en+m5", "en+klatt2"),
                                renderings_per_voice=3, train_copies=2, seed=seed,
                                cache_dir=changes.pop("cache_dir", None))
        return cls(data=data, channels=32, n_blocks=3, epochs=20, batch_size=32, seed=seed, baselines=False,
                   replay_per_class=4, bundle_id="edgetune-kws-small", **changes)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, without machine-local settings (the cache folder)."""
        out = asdict(self)
        out["data"].pop("cache_dir", None)
        return out


@dataclass
class TrainResult:
    """What a run produced: the bundle's manifest and directory, the metrics, and where things are."""

    manifest: Manifest
    bundle_dir: Path
    metrics: Mapping[str, Any]
    checkpoint: Path | None  # None: nothing trained but the head (feature-based transfer)
    test_data_dir: Path
    timings_s: dict[str, float] = field(default_factory=dict)


def default_threads() -> int:
    """Torch threads for training: all cores but one (at least 1, at most 8).

    Small convolutions gain little from more threads, and an oversubscribed core stalls every
    OpenMP barrier: on a 2-core machine with one other busy process, 2 threads measured 10-30x
    slower per step than 1.
    """
    return max(1, min((os.cpu_count() or 1) - 1, 8))


def compute_features(frontend: MfccFrontend, audio: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Clips float32 ``[n, clip_samples]`` to features ``[n, T, F]`` (a zero look-back sample in front)."""
    out = []
    with torch.no_grad():
        for start in range(0, audio.shape[0], batch_size):
            chunk = torch.from_numpy(audio[start:start + batch_size])  # [b, N]
            chunk = nn.functional.pad(chunk, (frontend.params.lookback_samples, 0))  # [b, 1 + N]
            out.append(frontend(chunk))
    return torch.cat(out)


def _accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    return float((_predict(model, features, batch_size) == labels).float().mean())


def _predict(model: nn.Module, features: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(features[i:i + batch_size]).argmax(dim=1) for i in range(0, len(features), batch_size)])


def _embed(embedder: nn.Module, features: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    embedder.eval()
    with torch.no_grad():
        return torch.cat([embedder(features[i:i + batch_size]) for i in range(0, len(features), batch_size)])


def _code_version() -> dict[str, Any]:
    out: dict[str, Any] = {"edgetune": __version__, "torch": torch.__version__}
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _write_test_clips(clips: ClipSet, out_dir: Path, sample_rate_hz: int) -> None:
    from edgetune.edge.audio.io import import_soundfile

    sf = import_soundfile()
    for i, (clip, label, voice) in enumerate(zip(clips.audio, clips.labels, clips.voices)):
        folder = out_dir / clips.label_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        tag = "".join(c if c.isalnum() or c == "-" else "_" for c in voice) or "none"
        sf.write(str(folder / f"{i:05d}_{tag}.wav"), clip, sample_rate_hz, subtype="PCM_16")


def _train(model: KeywordModel, x: torch.Tensor, y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
           config: TrainConfig, progress: bool) -> tuple[dict[str, Any], list[dict[str, float]]]:
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate,
                                                   total_steps=config.epochs * steps_per_epoch, pct_start=0.2)
    best_state, best_acc, history = copy.deepcopy(model.state_dict()), -1.0, []
    epochs = range(config.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="training", unit="epoch", file=sys.stderr, leave=False)
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        val_acc = _accuracy(model, val_x, val_y)
        history.append({"epoch": epoch + 1, "train_loss": total / len(x), "val_accuracy": val_acc})
        if progress:
            epochs.set_postfix(loss=f"{total / len(x):.3f}", val=f"{val_acc:.3f}")
        if val_acc > best_acc:
            best_acc, best_state = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_state, history


@dataclass(frozen=True)
class Splits:
    """A run's data: train/val/test clip sets, their labels, how they were made, and what the test means."""

    sets: Mapping[str, ClipSet]
    label_names: tuple[str, ...]
    description: Mapping[str, Any]
    task: str
    test_info: Mapping[str, Any]
    seconds: float


def load_splits(data: SpeechDataConfig, data_dir: Path | None, seed: int, progress: bool) -> Splits:
    """Synthesise the splits of ``data`` (``data_dir`` None) or read them from a folder per label.

    ``data_dir`` is ``DIR/<label>/<file>`` (split here, stratified per label, seeded by ``seed``)
    or ``DIR/{train,val,test}/<label>/<file>`` (see
    :func:`~edgetune.export.data.folder.load_folder_splits`); clip length and rate are ``data``'s.
    Labels of a folder are its label folders, sorted, ``_background_`` first when present.
    """
    start = time.perf_counter()
    if data_dir is None:
        sets = synthesize_splits(data, progress=progress)
        return Splits(sets, data.labels, data.describe(),
                      "keyword spotting, espeak-ng speech, accuracy on held-out voices",
                      {"voices": list(data.test_voices)}, time.perf_counter() - start)
    from .data.folder import load_folder_splits

    folder = load_folder_splits(data_dir, sample_rate_hz=data.sample_rate_hz, clip_samples=data.clip_samples,
                                seed=seed)
    sets = {name: ClipSet(audio=ds.audio, labels=ds.labels, label_names=ds.label_names,
                          voices=tuple(Path(p).stem for p in ds.paths))
            for name, ds in folder.splits.items()}
    return Splits(sets, folder.label_names, folder.description,
                  f"keyword spotting, labelled folder {folder.description['path']}, accuracy on its test split",
                  {}, time.perf_counter() - start)


def train_keyword_bundle(out_dir: Path, config: TrainConfig = TrainConfig(), progress: bool = True, *,
                         overwrite: bool = False) -> TrainResult:
    """Train the source keyword model (DS-CNN from scratch) on synthesised speech; write its bundle.

    Beside the bundle, ``<out_dir>.work/`` receives ``checkpoint.pt`` (the model with its own
    config) and ``test/<label>/*.wav``, the held-out-voice test clips. Accuracy in the metrics is
    measured on those test voices only.
    """
    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)  # before minutes of work, not after
    splits = load_splits(config.data, None, config.seed, progress)
    return _train_and_export(out_dir, splits.sets, splits.label_names, config, splits.description, progress,
                             overwrite, task=splits.task, test_info=splits.test_info, config_json=config.to_json(),
                             timings={"data_s": splits.seconds})


def train_folder_bundle(data_dir: Path, out_dir: Path, config: TrainConfig = TrainConfig(), progress: bool = True, *,
                        overwrite: bool = False) -> TrainResult:
    """Train the DS-CNN keyword model on a labelled folder of audio files (:func:`load_splits`) and
    write its bundle to ``out_dir``. Unusable files are skipped and listed in the provenance.
    Writes ``<out_dir>.work/`` as :func:`train_keyword_bundle` does.
    """
    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)
    splits = load_splits(config.data, Path(data_dir), config.seed, progress)
    config_json = config.to_json()
    config_json["data"] = {k: config_json["data"][k] for k in ("sample_rate_hz", "clip_samples")}
    return _train_and_export(out_dir, splits.sets, splits.label_names, config, splits.description, progress,
                             overwrite, task=splits.task, test_info=splits.test_info, config_json=config_json,
                             timings={"data_s": splits.seconds})


def fit_ds_cnn(splits: Mapping[str, ClipSet], n_labels: int, config: TrainConfig, progress: bool):
    """Train the DS-CNN from scratch on ``splits`` (best epoch on val).

    Returns (model, frontend, features per split, labels per split, history, audio spec).
    """
    params = config.frontend
    frontend = MfccFrontend(params).eval()
    feats = {name: compute_features(frontend, clips.audio) for name, clips in splits.items()}
    labels = {name: torch.from_numpy(clips.labels) for name, clips in splits.items()}
    clip_samples = splits["train"].audio.shape[1]
    audio_spec = AudioSpec.whole_clip(params, clip_samples, config.channels, backbone="ds_cnn")
    arch = DsCnnConfig(n_frames=audio_spec.frames_per_clip, n_features=params.n_features,
                       channels=config.channels, n_blocks=config.n_blocks, dropout=config.dropout)
    embedder = DsCnn(arch)
    train_x = feats["train"]
    embedder.set_normalization(train_x.mean(dim=(0, 1)), train_x.std(dim=(0, 1)))
    model = KeywordModel(embedder, nn.Linear(arch.embedding_size, n_labels))
    model = model.to(memory_format=torch.channels_last)  # about 1.5x faster on CPU for these convolutions
    _, history = _train(model, train_x, labels["train"], feats["val"], labels["val"], config, progress)
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, frontend, feats, labels, history, audio_spec


def _train_and_export(out_dir: Path, splits: Mapping[str, ClipSet], label_names: tuple[str, ...],
                      config: TrainConfig, data_description: Mapping[str, Any], progress: bool, overwrite: bool, *,
                      task: str, test_info: Mapping[str, Any], config_json: Mapping[str, Any],
                      timings: dict[str, float]) -> TrainResult:
    """Train on ``splits`` (``train``, ``val``, ``test`` clip sets labelled by ``label_names``), test, bundle.

    ``data_description`` goes into the provenance as ``data``, ``config_json`` as ``config``;
    ``task`` and ``test_info`` into the metrics; ``timings`` receives the stages' seconds.
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    torch.manual_seed(config.seed)
    try:
        start = time.perf_counter()
        params = config.frontend
        model, frontend, feats, labels, history, audio_spec = fit_ds_cnn(splits, len(label_names), config, progress)
        train_x = feats["train"]
        timings["train_s"] = time.perf_counter() - start

        test_pred = _predict(model, feats["test"]).numpy()
        test_y = splits["test"].labels
        per_class = {name: float(np.mean(test_pred[test_y == i] == i)) for i, name in enumerate(label_names)
                     if np.any(test_y == i)}
        confusion = np.zeros((len(label_names), len(label_names)), dtype=np.int64)
        np.add.at(confusion, (test_y, test_pred), 1)
        metrics: dict[str, Any] = {
            "task": task,
            "test": {"accuracy": float(np.mean(test_pred == test_y)), "n": int(test_y.size), **test_info,
                     "per_class_accuracy": per_class, "confusion": confusion.tolist()},
            "val_accuracy_best": max(h["val_accuracy"] for h in history),
            "train_accuracy": _accuracy(model, train_x, labels["train"]),
            "split_sizes": {name: len(clips) for name, clips in splits.items()},
            "history": history,
            "chance_accuracy": float(np.max(np.bincount(test_y)) / test_y.size),
        }
        if config.baselines:
            from .baselines import run_baselines

            start = time.perf_counter()
            metrics["baselines"] = run_baselines(train_x.numpy(), splits["train"].labels, feats["test"].numpy(), test_y,
                                                 seed=config.seed)
            timings["baselines_s"] = time.perf_counter() - start
        log.info("test accuracy on the test split: %.3f (n=%d)", metrics["test"]["accuracy"], test_y.size)

        replay_x, replay_y = _replay_set(model.embedder, train_x, splits["train"].labels, config)
        start = time.perf_counter()
        work_dir = out_dir.with_name(out_dir.name + ".work")
        work_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = work_dir / "checkpoint.pt"
        save_checkpoint(checkpoint, model, labels=label_names, params=params, clip_samples=config.data.clip_samples,
                        extra={"train_config": dict(config_json)})
        test_dir = work_dir / "test"
        if test_dir.exists():
            shutil.rmtree(test_dir)
        _write_test_clips(splits["test"], test_dir, config.data.sample_rate_hz)
        manifest = write_bundle(
            out_dir, bundle_id=config.bundle_id, bundle_version=config.bundle_version, audio=audio_spec,
            write_graphs=torch_audio_graphs(frontend, model.embedder, audio_spec, splits["test"].audio[:4]),
            heads=[HeadArrays(KEYWORD_HEAD, tuple(label_names), model.head.weight, model.head.bias,
                              replay_embeddings=replay_x, replay_labels=replay_y)],
            metrics=metrics,
            provenance={"code": _code_version(), "data": dict(data_description), "config": dict(config_json),
                        "backbones": [ds_cnn_provenance()],
                        "recipe": "source model trained from scratch (DS-CNN, AdamW, best epoch on val split)"},
            overwrite=overwrite)
        sign_bundle(out_dir)  # the exporter's key (export/signing.py), created on first use
        timings["export_s"] = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads_before)
    return TrainResult(manifest=manifest, bundle_dir=out_dir, metrics=metrics, checkpoint=checkpoint,
                       test_data_dir=test_dir, timings_s={k: round(v, 2) for k, v in timings.items()})


def _replay_set(embedder: nn.Module, features: torch.Tensor, labels: np.ndarray,
                config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """``replay_per_class`` training embeddings per class (seeded choice): ``[M, D]``, ``[M]``."""
    rng = np.random.default_rng(config.seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:config.replay_per_class]
                             for c in np.unique(labels)])
    return _embed(embedder, features[torch.from_numpy(chosen)]).numpy(), labels[chosen].astype(np.int64)
