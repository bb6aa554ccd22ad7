"""Image and audio-visual bundles for device tests, made in a second, without torch.

The image embedder here is a real ONNX graph run by ONNX Runtime, but not a backbone: it is
the *mean-colour embedder*, a stand-in that maps uint8 frames [B, H, W, 3] (any size) to the
mean and the mean square of each channel (6 numbers, scaled to 0..1). Photos of solid colours
are then separable by a linear head, which is what device tests need (enrolment, evaluation,
the camera pipeline, fusion); real backbones are tested in tests/export.

Bundles go through the exporter's own :func:`write_bundle`, are signed with the test key like
those of ``support/bundles.py``, and pass the device's verification.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
EMBEDDING = 6
_CACHE: dict[tuple, Path] = {}


def trust() -> dict:
    """``load_bundle`` keyword arguments for these bundles: signed with the test key (support/bundles.py)."""
    from .bundles import device_trust

    return {"trust": device_trust()}


def write_mean_colour_graph(path: Path) -> None:
    """``image`` uint8 [B, H, W, 3] -> ``embedding`` float32 [B, 6]: per-channel mean and mean square, / 255."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["f", "c255"], ["x"]),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["meansq"], keepdims=0),
        helper.make_node("Concat", ["mean", "meansq"], ["embedding"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mean_colour",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["B", "H", "W", 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", EMBEDDING])],
        initializer=[helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
                     helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def colour_photo(name: str, rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A uint8 RGB photo of a solid colour with noise."""
    base = np.array(COLOURS[name], dtype=np.float32)
    noise = rng.normal(0, 18, size=(*size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def mean_colour(frames: list[np.ndarray]) -> np.ndarray:
    """What the graph computes, in NumPy (for fitting heads here)."""
    x = [f.astype(np.float32) / 255.0 for f in frames]
    return np.stack([np.concatenate([v.mean(axis=(0, 1)), (v * v).mean(axis=(0, 1))]) for v in x]).astype(np.float32)


def image_spec():
    from edgetune.contract.image_spec import ImageSpec

    return ImageSpec(backbone="mean_colour", height_px=64, width_px=64, embedding_size=EMBEDDING,
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _fit(labels: tuple[str, ...], seed: int):
    from edgetune.edge.head import fit_head

    rng = np.random.default_rng(seed)
    frames, names = [], []
    for name in labels:
        for _ in range(12):
            frames.append(colour_photo(name, rng))
            names.append(name)
    x = mean_colour(frames)
    weight, bias, fitted = fit_head(x, names, l2=1e-3)
    order = [fitted.index(n) for n in labels]
    return weight[order], bias[order], x, np.asarray([labels.index(n) for n in names])


def _graph_writer(spec):
    def write(staging: Path) -> dict:
        write_mean_colour_graph(staging / spec.embedder_graph.file("fp32"))
        return {spec.embedder_graph.file("fp32"): {"max_abs_error": 0.0, "max_rel_error": 0.0,
                                                    "note": "mean-colour stand-in, no reference to compare"}}

    return write


def _cached(key: tuple, out_dir: Path, make) -> Path:
    out_dir = Path(out_dir)
    cached = _CACHE.get(key)
    if cached is None or not cached.is_dir():
        root = Path(tempfile.mkdtemp(prefix="edgetune-test-image-bundle-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        cached = root / "bundle"
        make(cached)
        from .bundles import _sign

        _sign(cached)
        _CACHE[key] = cached
    shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    return out_dir


def make_image_bundle(out_dir: Path, *, labels: tuple[str, ...] = ("red", "green", "blue"), seed: int = 0) -> Path:
    """An image bundle (the mean-colour embedder) whose head ``colours`` knows ``labels``, with a replay set."""

    def make(path: Path) -> None:
        from edgetune.export.bundle import HeadArrays, write_bundle

        spec = image_spec()
        weight, bias, x, y = _fit(tuple(labels), seed)
        write_bundle(path, bundle_id="test-images", bundle_version=f"0.0.{seed}", image=spec,
                     write_graphs=_graph_writer(spec),
                     heads=[HeadArrays("colours", tuple(labels), weight, bias, replay_embeddings=x,
                                       replay_labels=y, input="image")],
                     metrics={"l2": 1e-3}, provenance={"made_by": "tests.support.image_bundles.make_image_bundle"})

    return _cached(("image", tuple(labels), seed), out_dir, make)


def make_av_bundle(out_dir: Path, *, labels: tuple[str, ...] = ("red", "green", "blue"), window_s: float = 1.0,
                   seed: int = 0) -> Path:
    """Audio (the real speech_embedding graphs, a random head) + image (mean colour, a fitted head)
    + two fused heads on [audio; image]: ``both_concat`` and ``both_gated``, whose audio weights
    are zero, so they name the colour in view (the gate's weights are zero too: equal gates, which
    leave the inputs as they are)."""

    def make(path: Path) -> None:
        from edgetune.contract import tensors
        from edgetune.contract.manifest import FusionSpec
        from edgetune.export.audio.speech_embedding_export import audio_spec, speech_embedding_graphs
        from edgetune.export.bundle import HeadArrays, all_graphs, write_bundle

        audio = audio_spec(3, "mean")
        image = image_spec()
        rng = np.random.default_rng(seed)
        da = audio.embedding_size
        words = ("_background_", "yes", "no")
        a_weight = (rng.standard_normal((len(words), da)) / np.sqrt(da)).astype(np.float32)
        weight, bias, _, _ = _fit(tuple(labels), seed)
        fused_w = np.concatenate([np.zeros((len(labels), da), np.float32), weight], axis=1)
        d = da + EMBEDDING
        gate = {tensors.GATE_WEIGHT: np.zeros((2, d), np.float32),
                tensors.GATE_BIAS: np.zeros(2, np.float32),
                tensors.INPUT_MEAN: np.zeros(d, np.float32), tensors.INPUT_SCALE: np.ones(d, np.float32)}
        write_bundle(path, bundle_id="test-av", bundle_version=f"0.0.{seed}", audio=audio, image=image,
                     fusion=FusionSpec(("audio", "image"), window_s),
                     write_graphs=all_graphs(speech_embedding_graphs(audio), _graph_writer(image)),
                     heads=[HeadArrays("keywords", words, a_weight, np.zeros(len(words), np.float32)),
                            HeadArrays("colours", tuple(labels), weight, bias, input="image"),
                            HeadArrays("both_concat", tuple(labels), fused_w, bias, input="fused", fusion="concat"),
                            HeadArrays("both_gated", tuple(labels), fused_w, bias, input="fused", fusion="gated",
                                       extra=gate)],
                     metrics={"l2": 1e-3}, provenance={"made_by": "tests.support.image_bundles.make_av_bundle"})

    return _cached(("av", tuple(labels), window_s, seed), out_dir, make)
