"""The image embedder graph of a bundle: export to ONNX, parity on real photos, host-side embedding.

:class:`ImageGraphs` is the image modality's graph writer (``export/bundle.py``): it loads a
backbone (:mod:`.backbones`), wraps it in :class:`~.embedder.ImageEmbedder` (uint8 frames in,
resize and normalisation inside), writes ``image_embedder.onnx`` and measures its parity with the
torch module under ONNX Runtime on scikit-image's bundled colour photos, at their own sizes (none
square but one) plus a portrait, a tiny frame that the graph enlarges and a batch of two.
:meth:`ImageGraphs.embed` computes embeddings through the *written* graph, so that a head is
trained on exactly the numbers the device will compute.

The graph: input ``image`` uint8 ``[B, H, W, 3]`` with B, H and W dynamic, output ``embedding``
float32 ``[B, D]`` (contract/tensors.py), opset :data:`~edgetune.export.onnx_export.OPSET`, the
torch.export-based exporter, weights inside the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from edgetune.contract import tensors
from edgetune.contract.image_spec import ImageSpec
from edgetune.errors import UsageError

from .backbones import LoadedBackbone, load_backbone
from .embedder import FRAME_COLOUR_ORDER, ImageEmbedder
from .weights import sha256_file

#: Frames of the example batch the graph is traced with (not 1: that would fix the batch).
_EXAMPLE_SHAPE = (2, 240, 320, 3)
#: scikit-image's bundled colour photos used for parity (and for the ImageNet sanity checks).
PARITY_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
#: Frames per ONNX Runtime call in :meth:`ImageGraphs.embed`.
EMBED_BATCH = 16


def graph_metadata(embedder: ImageEmbedder) -> dict[str, str]:
    """The ONNX metadata of ``embedder``'s graph: which backbone, input size, antialiasing."""
    row = embedder.backbone
    return {"edgetune.graph": "image_embedder", "edgetune.image.backbone": row.name,
            "edgetune.image.input_px": str(row.input_px), "edgetune.image.antialias": str(embedder.antialias)}


def export_image_embedder(module: torch.nn.Module, path: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``module`` (an :class:`ImageEmbedder`, or any module of uint8 frames) to ``path`` as
    ONNX: ``image`` uint8 [B, H, W, 3] -> ``embedding``; B, H and W dynamic. (Traced for H, W >= 2,
    since torch.export fixes a dimension of 1; the graph runs on a 1 x 1 frame too.)"""
    from ..onnx_export import _export

    if metadata is None:
        metadata = graph_metadata(module) if isinstance(module, ImageEmbedder) else {"edgetune.graph": "image_embedder"}
    example = torch.randint(0, 256, _EXAMPLE_SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("height", min=2),
            2: torch.export.Dim("width", min=2)}
    return _export(module.eval(), example, path, tensors.IMAGE_EMBEDDER_INPUT, tensors.IMAGE_EMBEDDER_OUTPUT, dims,
                   metadata)


def photo(name: str) -> np.ndarray:
    """scikit-image's bundled photo ``name`` as a writable uint8 RGB array [H, W, 3]."""
    import skimage.data

    image = np.array(getattr(skimage.data, name)(), dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"skimage.data.{name} is {list(image.shape)}; expected a colour photo [H, W, 3]")
    return image


def parity_frames() -> list[tuple[str, np.ndarray]]:
    """Batches of real frames [B, H, W, 3] for parity: each photo at its own size, chelsea as a
    portrait (transposed), coffee shrunk to 25 x 38 (the graph enlarges it), and a batch of two."""
    photos = {name: photo(name) for name in PARITY_PHOTOS}
    batches = [(name, image[None]) for name, image in photos.items()]
    batches.append(("chelsea, transposed (portrait)", np.ascontiguousarray(photos["chelsea"].transpose(1, 0, 2))[None]))
    batches.append(("coffee, every 16th pixel (25 x 38)", np.ascontiguousarray(photos["coffee"][::16, ::16])[None]))
    batches.append(("chelsea and its mirror image, one batch",
                    np.stack([photos["chelsea"], np.ascontiguousarray(photos["chelsea"][:, ::-1])])))
    return batches


def _session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_frames(frames: Sequence[Any]) -> list[np.ndarray]:
    """``frames`` as contiguous uint8 [H, W, 3] arrays; a :class:`UsageError` names the first that is not."""
    checked = []
    for i, frame in enumerate(frames):
        array = np.asarray(frame)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
            raise UsageError(f"frame {i} is {array.dtype} {list(array.shape)}; expected uint8 [H, W, 3] "
                             f"({FRAME_COLOUR_ORDER} order)")
        checked.append(np.ascontiguousarray(array))
    return checked


def embed_with_session(session: Any, frames: Sequence[Any], embedding_size: int,
                       batch: int = EMBED_BATCH) -> np.ndarray:
    """Embeddings [N, D] of ``frames`` (uint8 [H, W, 3], any sizes) through ``session``; frames of
    one size go together, ``batch`` a call, and come back in the order given."""
    checked = check_frames(frames)
    out = np.zeros((len(checked), embedding_size), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(checked):
        groups.setdefault(frame.shape, []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch):
            part = indices[start:start + batch]
            out[part] = session.run([tensors.IMAGE_EMBEDDER_OUTPUT],
                                    {tensors.IMAGE_EMBEDDER_INPUT: np.stack([checked[i] for i in part])})[0]
    return out


def measure_parity(embedder: ImageEmbedder, classifier: torch.nn.Module, path: Path,
                   batches: Sequence[tuple[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """The graph at ``path`` under ONNX Runtime (CPU) against ``embedder`` in torch on ``batches``
    (default :func:`parity_frames`): max abs error, the same relative to the torch output's max
    abs, and how often ``classifier``'s ImageNet top-1 on the two embeddings agrees."""
    import onnxruntime as ort

    batches = parity_frames() if batches is None else batches
    session = _session(path, threads=1)
    want, got = [], []
    with torch.inference_mode():
        for _, frames in batches:
            want.append(embedder(torch.from_numpy(frames)).numpy())
            got.append(session.run([tensors.IMAGE_EMBEDDER_OUTPUT], {tensors.IMAGE_EMBEDDER_INPUT: frames})[0])
        want_a, got_a = np.concatenate(want).astype(np.float64), np.concatenate(got).astype(np.float64)
        top_want = classifier(torch.from_numpy(want_a).float()).argmax(1).numpy()
        top_got = classifier(torch.from_numpy(got_a).float()).argmax(1).numpy()
    err = float(np.max(np.abs(got_a - want_a)))
    scale = float(np.max(np.abs(want_a)))
    return {"max_abs_error": err, "max_rel_error": err / scale if scale > 0 else err, "reference_max_abs": scale,
            "top1_agreement": float(np.mean(top_want == top_got)), "images": int(want_a.shape[0]),
            "frame_sizes": sorted({f"{f.shape[1]}x{f.shape[2]}" for _, f in batches}),
            "frames": [name for name, _ in batches],
            "reference": "the torch ImageEmbedder (eager) on the same uint8 frames; top-1: the backbone's ImageNet "
                         "classifier on either embedding",
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider"}


class ImageGraphs:
    """The image modality's graph writer: ``image_embedder.onnx`` for the backbone
    ``backbone_name`` (weights: see :func:`~.backbones.load_backbone`), its parity and provenance.

    - :attr:`spec`: the manifest's image section (:class:`ImageSpec`);
    - :meth:`write` exports the graph into a folder and returns its parity report;
    - :meth:`embed`: embeddings through the written graph (ONNX Runtime), as the device computes them;
    - called as a :data:`~edgetune.export.bundle.GraphWriter`, it copies the written graph into the
      bundle's staging folder (writing it first if :meth:`write` was not called).
    """

    def __init__(self, backbone_name: str, weights: Path | None = None, allow_download: bool = False, *,
                 antialias: bool = True) -> None:
        self.loaded: LoadedBackbone = load_backbone(backbone_name, weights, allow_download)
        row = self.loaded.backbone
        self.embedder = ImageEmbedder(row, self.loaded.features, antialias=antialias).eval()
        self.spec = ImageSpec(backbone=row.name, height_px=row.input_px, width_px=row.input_px,
                              embedding_size=row.embedding_size, mean=row.mean, std=row.std,
                              colour_order=FRAME_COLOUR_ORDER, layout="HWC", dtype="uint8")
        self.provenance: dict[str, Any] = dict(self.loaded.provenance)
        self.path: Path | None = None
        self.parity: dict[str, dict[str, Any]] = {}
        self._session: Any = None

    @property
    def file(self) -> str:
        return self.spec.embedder_graph.file("fp32")

    def write(self, directory: Path) -> dict[str, dict[str, Any]]:
        """Export the graph into ``directory`` and measure its parity; returns ``{file: report}``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = export_image_embedder(self.embedder, directory / self.file)
        report = measure_parity(self.embedder, self.loaded.classifier, path)
        self.path, self._session = path, None
        self.parity = {self.file: report}
        aa = self.embedder.antialias
        preprocessing = (f"centre square crop, bilinear resize{' (antialiased)' if aa else ''} to "
                         f"{self.spec.height_px} px, (x / 255 - mean) / std, in the graph")
        self.provenance = {**self.loaded.provenance,
                           "graph": {"file": self.file, "sha256": sha256_file(path), "antialias": aa,
                                     "preprocessing": preprocessing}}
        return self.parity

    def __call__(self, staging: Path) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return self.write(staging)
        target = Path(staging) / self.file
        if target.resolve() != self.path.resolve():
            shutil.copyfile(self.path, target)
            if sha256_file(target) != self.provenance["graph"]["sha256"]:
                raise RuntimeError(f"{self.path} changed since it was written and measured; write it again")
        return self.parity

    def embed(self, frames: Sequence[Any], batch: int = EMBED_BATCH) -> np.ndarray:
        """Embeddings float32 [N, D] of uint8 RGB frames [H, W, 3] (any sizes) through the written
        graph under ONNX Runtime (CPU); call :meth:`write` first."""
        if self.path is None:
            raise RuntimeError("ImageGraphs.embed runs the written graph; call write(directory) first")
        if self._session is None:
            self._session = _session(self.path)
        return embed_with_session(self._session, frames, self.spec.embedding_size, batch)
