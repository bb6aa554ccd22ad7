"""The speech_embedding embedder as a streaming graph (``audio_embedder_stream.onnx``), in real ONNX Runtime
sessions: contract names and shapes, the same window embeddings as the window graph on speech, the same
whatever the frames per call, the state of a history, refusal of graphs it cannot stream, and the bundle
writer's declaration, provenance and parity."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("openwakeword")

from onnx import helper  # noqa: E402

from edgetune.contract import tensors  # noqa: E402
from edgetune.errors import UsageError  # noqa: E402
from edgetune.export.audio import speech_embedding as se  # noqa: E402
from edgetune.export.audio import speech_embedding_stream as ses  # noqa: E402

STRIDE = se.EMBEDDER_STRIDE_FRAMES
WINDOW = se.EMBEDDER_WINDOW_FRAMES
#: The states the module docstring lists: [C, columns, mel] before each time convolution.
STATE_SHAPES = [(1, 2, 34), (24, 2, 32), (48, 2, 16), (48, 2, 16), (72, 2, 8), (72, 2, 8), (96, 2, 4), (96, 2, 4),
                (96, 2, 2), (96, 2, 2), (96, 2, 1)]
ALSA_DIR = Path("/usr/share/sounds/alsa")
ALSA_VOICES = ("Front_Center", "Front_Left", "Rear_Right", "Side_Left")


def _session(path: Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _window_embeddings(embedder, features: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The window graph on each 76-frame window of features [T, F] ending at frame ``ends[j]``: [J, D]."""
    windows = np.stack([features[e - WINDOW + 1:e + 1] for e in ends])
    return embedder.run(None, {tensors.AUDIO_EMBEDDER_INPUT: windows})[0]


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech_embedding_stream")
    se.write_graphs(out)
    ses.write_stream_graph(out / tensors.AUDIO_EMBEDDER_FILE, out / tensors.AUDIO_EMBEDDER_STREAM_FILE)
    return out


@pytest.fixture(scope="module")
def stream(graphs):
    return _session(graphs / tensors.AUDIO_EMBEDDER_STREAM_FILE)


@pytest.fixture(scope="module")
def embedder(graphs):
    return _session(graphs / tensors.AUDIO_EMBEDDER_FILE)


def _speech(tmp: Path) -> dict[str, np.ndarray]:
    """Speech at 16 kHz: alsa-utils' real voice where installed, espeak-ng where installed, float32 [N]."""
    from edgetune.edge.audio.io import read_audio

    clips = {name: read_audio(ALSA_DIR / f"{name}.wav", 16000) for name in ALSA_VOICES
             if (ALSA_DIR / f"{name}.wav").is_file()}
    if shutil.which("espeak-ng"):
        for k, voice in enumerate(("en-us", "en+f3")):
            wav = tmp / f"{k}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), "hey there, turn on the kitchen lights"],
                           check=True, capture_output=True, timeout=60)
            clips[f"espeak-ng {voice}"] = read_audio(wav, 16000)
    if not clips:
        pytest.skip(f"needs speech: the alsa-utils recordings in {ALSA_DIR} or espeak-ng")
    return clips


@pytest.fixture(scope="module")
def speech_features(tmp_path_factory, graphs) -> dict[str, np.ndarray]:
    """Each speech clip's features [T, 32], T a multiple of 8 (a noise floor of 3 LSB, no digital silence)."""
    frontend = _session(graphs / tensors.AUDIO_FRONTEND_FILE)
    rng = np.random.default_rng(0)
    out = {}
    for name, x in _speech(tmp_path_factory.mktemp("speech")).items():
        x = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(4000, np.float32)])
        x = (x + 1e-4 * rng.standard_normal(x.size)).astype(np.float32)
        f = frontend.run(None, {tensors.AUDIO_FRONTEND_INPUT: x[None]})[0][0]
        out[name] = f[: f.shape[0] // STRIDE * STRIDE]
    return out


# --- the graph ---------------------------------------------------------------------------------

def test_the_graph_passes_the_checker_and_keeps_the_window_graphs_opset(graphs):
    model = onnx.load(str(graphs / tensors.AUDIO_EMBEDDER_STREAM_FILE))
    onnx.checker.check_model(model, full_check=True)
    source = onnx.load(str(graphs / tensors.AUDIO_EMBEDDER_FILE))
    assert [o.version for o in model.opset_import] == [o.version for o in source.opset_import] == [13]


def test_names_and_shapes_follow_the_contract(stream):
    ins, outs = stream.get_inputs(), stream.get_outputs()
    n = len(STATE_SHAPES)
    assert [i.name for i in ins] == [tensors.AUDIO_EMBEDDER_INPUT] + [f"state_in_{i}" for i in range(n)]
    assert [o.name for o in outs] == [tensors.AUDIO_EMBEDDER_OUTPUT] + [f"state_out_{i}" for i in range(n)]
    assert ins[0].shape == ["batch", "new_frames", 32] and outs[0].shape == ["batch", "new_windows", 96]
    for i, shape in enumerate(STATE_SHAPES):
        assert ins[i + 1].shape == outs[i + 1].shape == ["batch", *shape]
    assert all(i.type == "tensor(float)" for i in ins) and all(o.type == "tensor(float)" for o in outs)


def test_the_layout_is_one_state_per_time_convolution_and_a_stride_of_8(graphs):
    states, stride = ses.stream_layout(onnx.load(str(graphs / tensors.AUDIO_EMBEDDER_FILE)))
    assert stride == STRIDE and [s.shape for s in states] == STATE_SHAPES
    assert [s.time_step_frames for s in states] == [1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 8]


def test_batch_and_windows_per_call_are_dynamic(stream):
    rng = np.random.default_rng(0)
    for b, k in ((1, 1), (3, 2), (2, 7)):
        feed = {f"state_in_{i}": rng.standard_normal((b, *s)).astype(np.float32) for i, s in enumerate(STATE_SHAPES)}
        out = stream.run(None, {tensors.AUDIO_EMBEDDER_INPUT: rng.standard_normal((b, k * STRIDE, 32),
                                                                                 dtype=np.float32), **feed})
        assert out[0].shape == (b, k, 96)
        assert [o.shape for o in out[1:]] == [(b, *s) for s in STATE_SHAPES]


# --- the numbers -------------------------------------------------------------------------------

def test_streamed_windows_equal_the_window_graph_on_speech_bit_for_bit(stream, embedder, speech_features):
    # Measured: 0.0 on every clip in a one-thread session (the device runs one thread per stream).
    for name, f in speech_features.items():
        got = ses.stream_embeddings(stream, f[None], STRIDE)[0]  # one output per 8 frames
        j = np.arange(-(-WINDOW // STRIDE) - 1, got.shape[0])  # outputs whose window lies in the clip
        want = _window_embeddings(embedder, f, (j + 1) * STRIDE - 1)
        np.testing.assert_array_equal(got[j], want, err_msg=name)
        assert np.abs(want).max() > 10  # real embeddings, not a degenerate input


def test_with_onnx_runtimes_default_threads_the_windows_agree_to_float_rounding(graphs, embedder, speech_features):
    # Measured: 0.0 on 2 cores; threads may split a Conv by the call's size, so allow 1e-5 of the scale.
    stream = _session(graphs / tensors.AUDIO_EMBEDDER_STREAM_FILE, intra_op_threads=0)
    name, f = next(iter(speech_features.items()))
    got = ses.stream_embeddings(stream, f[None], STRIDE)[0]
    j = np.arange(9, got.shape[0])
    want = _window_embeddings(embedder, f, (j + 1) * STRIDE - 1)
    np.testing.assert_allclose(got[j], want, rtol=0, atol=1e-5 * np.abs(want).max(), err_msg=name)


@pytest.mark.parametrize("frames_per_call", [16, 24, 64])
def test_any_number_of_windows_per_call_gives_the_same_embeddings(stream, speech_features, frames_per_call):
    name, f = next(iter(speech_features.items()))
    f = f[: f.shape[0] // frames_per_call * frames_per_call][None]
    one_by_one = ses.stream_embeddings(stream, f, STRIDE)
    np.testing.assert_array_equal(ses.stream_embeddings(stream, f, frames_per_call), one_by_one, err_msg=name)
    np.testing.assert_array_equal(ses.stream_embeddings(stream, f, f.shape[1]), one_by_one, err_msg="one call")


def test_a_zero_state_and_80_frames_of_history_make_the_state_of_that_history(stream, speech_features):
    # Prepare: the state after a long stretch of speech, and after a zero state + its last 80 frames.
    name, f = next(iter(speech_features.items()))
    history = f[None, : 400 if f.shape[0] >= 480 else f.shape[0] - 80]
    names = [f"state_in_{i}" for i in range(len(STATE_SHAPES))]
    zero = {n: np.zeros((1, *s), np.float32) for n, s in zip(names, STATE_SHAPES)}

    def after(frames, state):
        out = stream.run(None, {tensors.AUDIO_EMBEDDER_INPUT: frames, **state})
        return out[0], dict(zip(names, out[1:]))

    state = dict(zero)
    for start in range(0, history.shape[1], STRIDE):
        _, state = after(history[:, start:start + STRIDE], state)
    _, warmed = after(history[:, -80:], dict(zero))
    # Execute / Assert: the same state, and the same next windows from it
    for n in names:
        np.testing.assert_array_equal(warmed[n], state[n], err_msg=n)
    more = f[None, history.shape[1]:history.shape[1] + 32]
    np.testing.assert_array_equal(after(more, warmed)[0], after(more, state)[0])


# --- graphs it cannot stream -------------------------------------------------------------------

def _edited(graphs: Path, edit) -> onnx.ModelProto:
    model = onnx.load(str(graphs / tensors.AUDIO_EMBEDDER_FILE))
    edit(model)
    return model


def _node(model, op_type, k=0):
    return [n for n in model.graph.node if n.op_type == op_type][k]


def _set(node, name, value):
    for a in node.attribute:
        if a.name == name:
            node.attribute.remove(a)
            break
    node.attribute.append(helper.make_attribute(name, value))


@pytest.mark.parametrize("edit, message", [
    (lambda m: _set(_node(m, "Conv", 2), "pads", [1, 0, 1, 0]), r"Conv .* time stride, dilation or padding"),
    (lambda m: _set(_node(m, "MaxPool", 0), "kernel_shape", [3, 2]), r"MaxPool .* overlaps or pads in time"),
    (lambda m: setattr(m.graph.output[0], "name", "emb"), r"outputs \['emb'\]"),
    (lambda m: setattr(_node(m, "LeakyRelu", 3), "op_type", "Softmax"), r"is a Softmax, not a Conv"),
], ids=["time-padding", "overlapping-pool", "contract-names", "unknown-layer"])
def test_a_graph_that_is_not_a_time_convolutional_chain_is_refused(graphs, edit, message):
    with pytest.raises(UsageError, match=message):
        ses.build_stream_graph(_edited(graphs, edit))


# --- the bundle writer -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech_bundle(tmp_path_factory):
    from support.bundles import make_speech_bundle

    from edgetune.contract.manifest import verify_bundle

    path = make_speech_bundle(tmp_path_factory.mktemp("bundle") / "b")
    return path, verify_bundle(path)


def test_a_clip_of_several_windows_declares_the_stream_graph_and_one_window_does_not():
    from edgetune.export.audio.speech_embedding_export import audio_spec

    spec = audio_spec(9, "seg3")
    assert spec.embedder_stream_graph.file("fp32") == tensors.AUDIO_EMBEDDER_STREAM_FILE
    assert tensors.AUDIO_EMBEDDER_STREAM_FILE in spec.files
    assert audio_spec(1, "none").embedder_stream_graph is None


@pytest.fixture(scope="module")
def writer_output(tmp_path_factory):
    """The bundle writer (speech_embedding_graphs) run on a staging folder: (folder, parity, provenance)."""
    from edgetune.export.audio.speech_embedding_export import audio_spec, speech_embedding_graphs

    staging = tmp_path_factory.mktemp("staging")
    writer = speech_embedding_graphs(audio_spec(9, "seg3"))
    parity = writer(staging)
    return staging, parity, writer.provenance


def test_the_writer_writes_the_stream_graph_with_its_provenance(writer_output):
    staging, _, provenance = writer_output
    name = tensors.AUDIO_EMBEDDER_STREAM_FILE
    entry = provenance["files"][name]
    assert entry["sha256"] == se.sha256_file(staging / name)
    assert entry["source"] == se.EMBEDDING_FILE and entry["origin"].startswith("PyPI wheel openwakeword==0.4.0")
    assert entry["source_sha256"] == provenance["files"][tensors.AUDIO_EMBEDDER_FILE]["source_sha256"]
    assert entry["rewrite"] == ses.REWRITE and "state_in_<i>" in entry["rewrite"]


def test_the_writer_reports_the_stream_graphs_parity_against_the_window_graph(writer_output):
    _, parity, _ = writer_output
    report = parity[tensors.AUDIO_EMBEDDER_STREAM_FILE]
    assert report["max_abs_error"] == 0.0 and report["reference_max_abs"] > 10
    assert report["n_inputs"] % 9 == 0 and report["n_inputs"] >= 9 and report["input_shape"][1:] == [WINDOW, 32]
    assert tensors.AUDIO_EMBEDDER_FILE in report["reference"] and "8 frames a call" in report["reference"]


def test_a_bundle_lists_the_stream_graph_and_its_parity(speech_bundle):
    _, manifest = speech_bundle
    name = tensors.AUDIO_EMBEDDER_STREAM_FILE
    assert manifest.audio.embedder_stream_graph.file("fp32") == name and name in manifest.files
    assert manifest.parity[name]["max_abs_error"] == 0.0
