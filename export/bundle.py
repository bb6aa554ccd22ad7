"""Write an audio bundle: the ONNX graphs, the head, the replay set, parity, the manifest.

:func:`write_audio_bundle` is the one place a bundle directory is made. It writes into a fresh
sibling directory and renames it into place at the end, so a failed export never leaves a
half-written bundle at ``out_dir``. :func:`pack_bundle` makes the ``.tar`` that is shipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from edgetune.edge.contract import tensors
from edgetune.edge.contract.manifest import AudioSpec, HeadSpec, Manifest, MfccParams, write_bundle_manifest
from edgetune.errors import UsageError

from .audio.frontend import MfccFrontend
from .onnx_export import export_embedder, export_frontend, measure_parity, parity_signal

log = logging.getLogger(__name__)

#: Largest parity error (relative to the output's scale) a bundle may be written with.
PARITY_MAX_REL_ERROR = 1e-3
#: Name of the head a keyword bundle carries.
KEYWORD_HEAD = "keywords"


class ExportError(RuntimeError):
    """An exported graph does not reproduce the PyTorch model closely enough."""


def _as_float32(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    return array


def _parity_clips(pcm: np.ndarray, clip_samples: int, lookback: int) -> np.ndarray:
    """``pcm`` as clips float32 ``[B', clip_samples + lookback]`` (a long signal is cut into clips)."""
    pcm = np.asarray(pcm, dtype=np.float32)
    width = clip_samples + lookback
    if pcm.ndim == 2 and pcm.shape[1] == width:
        return pcm
    if pcm.ndim == 2 and pcm.shape[1] == clip_samples:  # clips without look-back: a zero in front
        return np.pad(pcm, ((0, 0), (lookback, 0)))
    flat = pcm.reshape(-1)
    if flat.size < width:
        flat = np.pad(flat, (0, width - flat.size))
    n_clips = flat.size // width
    return flat[: n_clips * width].reshape(n_clips, width)


def _staging_dir(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; a bundle directory is as readable as any other
    return staging


def check_bundle_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse ``out_dir`` unless it is absent, empty, or a bundle that ``overwrite`` may replace."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    is_bundle = (out_dir / tensors.MANIFEST_FILE).is_file()
    if any(out_dir.iterdir()) and not (overwrite and is_bundle):
        reason = "pass overwrite=True (--overwrite) to replace it" if is_bundle else "it is not a bundle"
        raise UsageError(f"{out_dir} is not empty; refusing to write a bundle there ({reason})")


def _replace_dir(staging: Path, out_dir: Path, overwrite: bool) -> None:
    check_bundle_target(out_dir, overwrite)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)


def write_audio_bundle(
    out_dir: Path,
    *,
    bundle_id: str,
    bundle_version: str,
    params: MfccParams,
    clip_samples: int,
    embedder: torch.nn.Module,
    head_weight: Any,
    head_bias: Any,
    labels: Sequence[str],
    replay_embeddings: Any = None,
    replay_labels: Any = None,
    metrics: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    parity_pcm: np.ndarray | None = None,
    head_name: str = KEYWORD_HEAD,
    overwrite: bool = False,
) -> Manifest:
    """Export an audio keyword model as a verified bundle in ``out_dir``; return its manifest.

    - ``params``, ``clip_samples``: the front-end and the clip length in samples (look-back not
      counted); the embedder must take ``[B, frames_per_clip, params.n_features]``.
    - ``embedder``: features to embedding ``[B, D]`` (e.g. :class:`~edgetune.export.audio.model.DsCnn`);
      it is put in eval mode.
    - ``head_weight`` float ``[C, D]``, ``head_bias`` float ``[C]``, ``labels``: ``C`` names.
      The head is written as ``head.npz``; ``_background_`` is the background label when present.
    - ``replay_embeddings`` float ``[M, D]`` and ``replay_labels`` int ``[M]`` (indices into
      ``labels``): the replay set, written as ``replay.npz`` when given.
    - ``parity_pcm``: float32 samples ``[n]`` (cut into clips) or clips ``[B, clip_samples + 1]``
      (or ``[B, clip_samples]``, then a zero look-back sample is put in front)
      for the torch-vs-ONNX-Runtime parity check; default :func:`parity_signal` (3 s).
      A graph whose error exceeds :data:`PARITY_MAX_REL_ERROR` of its output scale raises
      :class:`ExportError` and nothing is written.
    - ``overwrite``: replace an existing bundle at ``out_dir`` (a non-bundle is never replaced).
    """
    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)
    labels = tuple(labels)
    weight = _as_float32("head_weight", head_weight)
    bias = _as_float32("head_bias", head_bias)
    audio_probe = AudioSpec(frontend=params, clip_samples=int(clip_samples), embedding_size=1)
    n_frames = audio_probe.frames_per_clip
    embedder = embedder.eval()
    with torch.no_grad():
        probe = embedder(torch.zeros(2, n_frames, params.n_features))
    if probe.ndim != 2:
        raise ValueError(f"the embedder gives shape {tuple(probe.shape)} for [2, {n_frames}, {params.n_features}]; "
                         "expected [2, D]")
    dim = int(probe.shape[1])
    if weight.shape != (len(labels), dim) or bias.shape != (len(labels),):
        raise ValueError(f"head weight {weight.shape} and bias {bias.shape} do not fit {len(labels)} labels and "
                         f"embedding size {dim}; expected [{len(labels)}, {dim}] and [{len(labels)}]")
    replay = None
    if (replay_embeddings is None) != (replay_labels is None):
        raise ValueError("replay_embeddings and replay_labels go together; pass both or neither")
    if replay_embeddings is not None:
        emb = _as_float32("replay_embeddings", replay_embeddings)
        lab = np.asarray(replay_labels.detach().cpu() if isinstance(replay_labels, torch.Tensor) else replay_labels,
                         dtype=np.int64).reshape(-1)
        if emb.ndim != 2 or emb.shape[1] != dim or emb.shape[0] != lab.shape[0]:
            raise ValueError(f"replay set: embeddings {emb.shape} and labels {lab.shape}; expected [M, {dim}] and [M]")
        if lab.size and (lab.min() < 0 or lab.max() >= len(labels)):
            raise ValueError(f"replay labels must index the {len(labels)} labels; got values {lab.min()}..{lab.max()}")
        replay = (emb, lab)

    head = HeadSpec(name=head_name, labels=labels,
                    background_label=tensors.BACKGROUND_LABEL if tensors.BACKGROUND_LABEL in labels else None)
    audio = AudioSpec(frontend=params, clip_samples=int(clip_samples), embedding_size=dim)
    manifest = Manifest(  # built now so that a bad id or label fails before the export, not after
        bundle_id=bundle_id,
        bundle_version=bundle_version,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        modalities=("audio",),
        heads=(head,),
        audio=audio,
        replay_file=tensors.REPLAY_FILE if replay is not None else None,
        metrics=dict(metrics or {}),
        provenance=dict(provenance or {}),
    )
    frontend = MfccFrontend(params).eval()

    staging = _staging_dir(out_dir)
    try:
        export_frontend(frontend, staging / audio.frontend_file)
        export_embedder(embedder, staging / audio.embedder_file, n_frames=n_frames, n_features=params.n_features)
        np.savez(staging / head.file, **{tensors.HEAD_WEIGHT: weight, tensors.HEAD_BIAS: bias})
        if replay is not None:
            np.savez(staging / tensors.REPLAY_FILE,
                     **{tensors.REPLAY_EMBEDDINGS: replay[0], tensors.REPLAY_LABELS: replay[1]})

        clips = _parity_clips(parity_signal(params.sample_rate_hz) if parity_pcm is None else parity_pcm,
                              audio.clip_samples, params.lookback_samples)
        with torch.no_grad():
            features = frontend(torch.from_numpy(clips)).numpy()
        parity = {
            audio.frontend_file: measure_parity(frontend, staging / audio.frontend_file, clips),
            audio.embedder_file: measure_parity(embedder, staging / audio.embedder_file, features),
        }
        for name, report in parity.items():
            log.info("parity %s: max abs error %.3g, relative to scale %.3g", name, report["max_abs_error"],
                     report["max_rel_error"])
            if report["max_rel_error"] > PARITY_MAX_REL_ERROR:
                raise ExportError(f"{name}: ONNX Runtime differs from torch by {report['max_rel_error']:.3g} of the "
                                  f"output scale; the limit is {PARITY_MAX_REL_ERROR}")

        manifest = write_bundle_manifest(staging, dataclasses.replace(manifest, parity=parity))
        _replace_dir(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote bundle %s %s to %s", bundle_id, bundle_version, out_dir)
    return manifest


def pack_bundle(bundle_dir: Path, tar_path: Path | None = None) -> Path:
    """Write ``bundle_dir`` as an uncompressed ``.tar`` (default: beside it, ``<name>.tar``).

    Members are stored under ``<name>/`` in sorted order, with owner and mode normalised.
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / tensors.MANIFEST_FILE).is_file():
        raise UsageError(f"{bundle_dir} has no {tensors.MANIFEST_FILE}; is it a bundle directory?")
    tar_path = Path(tar_path) if tar_path is not None else bundle_dir.with_name(bundle_dir.name + ".tar")

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    tmp = tar_path.with_name(tar_path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name, recursive=False, filter=normalise)
        for path in sorted(p for p in bundle_dir.rglob("*")):
            tar.add(path, arcname=f"{bundle_dir.name}/{path.relative_to(bundle_dir).as_posix()}", recursive=False,
                    filter=normalise)
    os.replace(tmp, tar_path)
    return tar_path
