"""Write a bundle: the modality's graphs, the named heads and their replay sets, parity, the manifest.

:func:`write_bundle` is the one place a bundle directory is made. It writes into a fresh sibling
directory and renames it into place at the end, so a failed export never leaves a half-written
bundle at ``out_dir``. The graphs come from a *graph writer* (:data:`GraphWriter`): a torch model
exported to ONNX (:func:`~edgetune.export.onnx_export.torch_audio_graphs`) or a pretrained graph
rewritten to the contract (:func:`~edgetune.export.audio.speech_embedding.speech_embedding_graphs`);
it writes its files and reports their parity, and a graph whose error exceeds
:data:`PARITY_MAX_REL_ERROR` of its output scale fails the export. :func:`pack_bundle` makes the
``.tar`` that is shipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgetune.contract import tensors
from edgetune.contract.image_spec import ImageSpec
from edgetune.contract.manifest import AudioSpec, FusionSpec, HeadSpec, Manifest, write_bundle_manifest
from edgetune.errors import UsageError

log = logging.getLogger(__name__)

#: Largest parity error (relative to the output's scale) a bundle may be written with.
PARITY_MAX_REL_ERROR = 1e-3
#: Name of the head a keyword bundle carries.
KEYWORD_HEAD = "keywords"

#: Writes a modality's graphs into the staging folder; returns the parity report per file.
GraphWriter = Callable[[Path], Mapping[str, Mapping[str, Any]]]


class ExportError(RuntimeError):
    """An exported graph does not reproduce its reference closely enough."""


def as_float32(name: str, value: Any) -> np.ndarray:
    """``value`` (a numpy array or a torch tensor) as a finite float32 array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity")
    return array


@dataclass(frozen=True, eq=False)
class HeadArrays:
    """A head to ship: ``weight`` float [C, D], ``bias`` float [C] for ``labels`` (C names) over
    ``input``'s embedding (a modality, or ``fused`` with ``fusion`` ``concat``/``gated``; a gated
    head's other arrays in ``extra``, contract/tensors.py); optionally a replay set:
    ``replay_embeddings`` float [M, D] and ``replay_labels`` int [M] (indices into ``labels``)."""

    name: str
    labels: tuple[str, ...]
    weight: Any
    bias: Any
    replay_embeddings: Any = None
    replay_labels: Any = None
    input: str = "audio"
    fusion: str | None = None
    extra: Mapping[str, Any] | None = None

    def arrays(self, weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
        """Every array of the head's file, by the contract's names."""
        out = {tensors.HEAD_WEIGHT: weight, tensors.HEAD_BIAS: bias}
        expected = set(tensors.GATED_HEAD_ARRAYS) - set(out) if self.fusion == "gated" else set()
        given = set(self.extra or {})
        if given != expected:
            raise ValueError(f"head {self.name} ({self.fusion or self.input}): extra arrays {sorted(given)}; "
                             f"expected {sorted(expected)}")
        for key, value in (self.extra or {}).items():
            out[key] = as_float32(f"head {self.name} {key}", value)
        return out

    def checked(self, width: int) -> tuple[HeadSpec, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        labels = tuple(self.labels)
        weight, bias = as_float32(f"head {self.name} weight", self.weight), as_float32(f"head {self.name} bias",
                                                                                        self.bias)
        if weight.shape != (len(labels), width) or bias.shape != (len(labels),):
            raise ValueError(f"head {self.name}: weight {weight.shape} and bias {bias.shape} do not fit "
                             f"{len(labels)} labels and embedding size {width}; expected [{len(labels)}, {width}] "
                             f"and [{len(labels)}]")
        if (self.replay_embeddings is None) != (self.replay_labels is None):
            raise ValueError(f"head {self.name}: replay_embeddings and replay_labels go together; pass both or neither")
        replay = None
        if self.replay_embeddings is not None:
            emb = as_float32(f"head {self.name} replay_embeddings", self.replay_embeddings)
            raw = self.replay_labels
            lab = np.asarray(raw.detach().cpu() if hasattr(raw, "detach") else raw, dtype=np.int64).reshape(-1)
            if emb.ndim != 2 or emb.shape[1] != width or emb.shape[0] != lab.shape[0]:
                raise ValueError(f"head {self.name} replay set: embeddings {emb.shape} and labels {lab.shape}; "
                                 f"expected [M, {width}] and [M]")
            if lab.size and (lab.min() < 0 or lab.max() >= len(labels)):
                raise ValueError(f"head {self.name} replay labels must index its {len(labels)} labels; got "
                                 f"{lab.min()}..{lab.max()}")
            replay = (emb, lab)
        spec = HeadSpec(name=self.name, labels=labels, input=self.input, file=tensors.head_file(self.name),
                        replay_file=tensors.replay_file(self.name) if replay is not None else None,
                        background_label=tensors.BACKGROUND_LABEL if tensors.BACKGROUND_LABEL in labels else None,
                        fusion=self.fusion)
        return spec, weight, bias, replay


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


def check_parity(parity: Mapping[str, Mapping[str, Any]]) -> None:
    """Log each graph's parity; raise :class:`ExportError` when one exceeds the limit."""
    for name, report in parity.items():
        log.info("parity %s: max abs error %.3g, relative to scale %.3g", name, report["max_abs_error"],
                 report["max_rel_error"])
        if report["max_rel_error"] > PARITY_MAX_REL_ERROR:
            raise ExportError(f"{name}: ONNX Runtime differs from its reference by {report['max_rel_error']:.3g} of "
                              f"the output scale; the limit is {PARITY_MAX_REL_ERROR}")


def input_widths(audio: AudioSpec | None, image: ImageSpec | None, fusion: FusionSpec) -> dict[str, int]:
    """The embedding width each head input reads: per modality, and ``fused`` (the fusion's
    inputs side by side)."""
    widths = {name: spec.embedding_size for name, spec in (("audio", audio), ("image", image)) if spec is not None}
    if fusion.enabled:
        widths["fused"] = sum(widths[m] for m in fusion.inputs if m in widths)
    return widths


def write_bundle(
    out_dir: Path,
    *,
    bundle_id: str,
    bundle_version: str,
    audio: AudioSpec | None = None,
    write_graphs: GraphWriter,
    heads: Sequence[HeadArrays],
    image: ImageSpec | None = None,
    fusion: FusionSpec = FusionSpec(),
    metrics: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Write a bundle in ``out_dir`` and return its manifest.

    - ``audio``, ``image``: each modality's spec (audio: front-end, embedder windows and
      pooling, clip length; image: input size and normalisation); at least one.
    - ``fusion``: which modalities ``fused`` heads read (and the pairing window on the device).
    - ``write_graphs``: writes every graph the specs name into the staging folder and returns
      their parity reports (see :data:`GraphWriter`; :func:`all_graphs` joins several writers).
    - ``heads``: the named heads (the first of each input is the default one on the device).
    - ``overwrite``: replace an existing bundle at ``out_dir`` (a non-bundle is never replaced).
    """
    out_dir = Path(out_dir)
    check_bundle_target(out_dir, overwrite)
    widths = input_widths(audio, image, fusion)
    for h in heads:
        if h.input not in widths:
            raise ValueError(f"head {h.name} reads {h.input!r}; this bundle has {sorted(widths)}")
    checked = [(h, *h.checked(widths[h.input])) for h in heads]
    manifest = Manifest(  # built now so that a bad id or label fails before the export, not after
        bundle_id=bundle_id,
        bundle_version=bundle_version,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        heads=tuple(spec for _, spec, *_ in checked),
        audio=audio,
        image=image,
        fusion=fusion,
        metrics=dict(metrics or {}),
        provenance=dict(provenance or {}),
    )
    files = [h.arrays(weight, bias) for h, _, weight, bias, _ in checked]  # a wrong gate fails here, early
    staging = _staging_dir(out_dir)
    try:
        parity = dict(write_graphs(staging))
        check_parity(parity)
        for (_, spec, _, _, replay), arrays in zip(checked, files):
            np.savez(staging / spec.file, **arrays)
            if replay is not None:
                np.savez(staging / spec.replay_file,
                         **{tensors.REPLAY_EMBEDDINGS: replay[0], tensors.REPLAY_LABELS: replay[1]})
        manifest = write_bundle_manifest(staging, dataclasses.replace(manifest, parity=parity))
        _replace_dir(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote bundle %s %s to %s", bundle_id, bundle_version, out_dir)
    return manifest


def all_graphs(*writers: GraphWriter) -> GraphWriter:
    """One writer that runs ``writers`` in turn (each modality's graphs) and joins their parity."""

    def write(staging: Path) -> dict[str, Mapping[str, Any]]:
        parity: dict[str, Mapping[str, Any]] = {}
        for writer in writers:
            report = dict(writer(staging))
            clash = set(parity) & set(report)
            if clash:
                raise ValueError(f"two graph writers both wrote {sorted(clash)}")
            parity.update(report)
        return parity

    return write


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
