"""``audio_embedder_stream.onnx``: the ``speech_embedding`` embedder as a streaming graph with state.

Why it can stream. The embedder (``audio_embedder.onnx``, 76 frames -> one 96-d embedding) is a
chain of 2-D convolutions over ``[B, C, time, mel]`` whose time kernels are 1 or 3 with no time
padding and stride 1, point-wise layers (ReLU, batch norm, leaky ReLU, a clamp), and max-pools
whose time kernel equals their time stride (2, 1, 2, 1, 2: 8 in all, the window stride). A clip's
windows 8 frames apart are then one fully convolutional pass, and a stream needs each layer only
on its *new* time columns, given the ``kernel - 1`` columns of that layer's input before them.

How the state is derived. One state per time convolution (kernel 3 in time), in network order:
``state_in_<i>`` holds the last 2 time columns of that convolution's input. The stream graph
concatenates ``[state_in_i ; new columns]`` along time, runs the convolution on it (which gives
exactly one output column per new column: nothing is recomputed), and returns the concatenation's
last 2 columns as ``state_out_<i>``. The pools see whole pairs because every call brings a
multiple of 8 frames, so pooled columns keep their phase across calls. States (``B`` batch; time
step: frames between the columns it holds)::

    state  layer (source)       shape             time step  new columns per call (k windows)
    0      conv2d    (3x3)      [B,  1, 2, 34]    1          8 k   (the mel bands padded by 1 each side)
    1      conv2d_2  (3x1)      [B, 24, 2, 32]    1          8 k
    2, 3   conv2d_4, _6         [B, 48, 2, 16]    2          4 k
    4, 5   conv2d_8, _10        [B, 72, 2,  8]    2          4 k
    6, 7   conv2d_12, _14       [B, 96, 2,  4]    4          2 k
    8, 9   conv2d_16, _18       [B, 96, 2,  2]    4          2 k
    10     conv2d_19 (3x1)      [B, 96, 2,  1]    8          k

(the ``1x3`` convolutions in between are frequency-only and need no state). The receptive field
of output ``j`` is the 76 frames that end with new frame ``8 (j + 1) - 1``, and every state column
lies inside the receptive field of the next call's first output, i.e. within the last 68 frames.
So a zero state followed by any 72 or more frames (the contract says 76 rounded up to 80) of
history is the state of that history, and a clip's ``n`` windows are the last ``n`` outputs of one
call from a zero state on its frames, padded at the front to a multiple of 8.

Contract (``contract/tensors.py``): ``features`` float32 ``[B, 8 k, 32]``; ``state_in_<i>`` as
above; ``embedding`` float32 ``[B, k, 96]``; ``state_out_<i>`` the same shapes as ``state_in_<i>``.
Batch and ``k`` are dynamic. A call whose frames are not a multiple of 8 breaks the pools' phase:
the caller (``edge/audio/models.py``) refuses one.

In ONNX Runtime (CPU, one thread) the streamed embeddings equal the window graph's bit for bit
(``tests/export/test_speech_embedding_stream.py``; the writer records the parity in the bundle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edgetune.contract import tensors
from edgetune.errors import UsageError

#: The time axis of the body's NCHW tensors [B, C, time, mel].
TIME_AXIS = 2
#: Layers that act on each time column alone (their other inputs are per-channel constants).
POINTWISE_OPS = frozenset({"Relu", "LeakyRelu", "BatchNormalization", "Max", "Min", "Add", "Sub", "Mul", "Clip",
                           "Sigmoid", "Tanh"})
_INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class StateSpec:
    """One state of the stream graph: the last ``columns`` time columns of the input of ``layer``
    (the source's node name; ``node`` its index in the source graph), whose columns are
    ``time_step_frames`` frames apart."""

    index: int
    layer: str
    node: int
    shape: tuple[int, ...]  # without the batch: [C, columns, mel]
    time_step_frames: int

    @property
    def columns(self) -> int:
        return self.shape[1]


def _wrong(what: str) -> UsageError:
    return UsageError(f"audio_embedder.onnx: {what}; expected the rewritten speech_embedding embedder "
                      f"(export/audio/speech_embedding.py), a time-convolutional chain")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


class _Source:
    """The window graph, split into its front (features -> NCHW), body (the chain) and tail (flatten)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.init_protos = {i.name: i for i in g.initializer}
        ins = [i for i in g.input if i.name not in self.inits]
        if [i.name for i in ins] != [tensors.AUDIO_EMBEDDER_INPUT] or [o.name for o in g.output] != \
                [tensors.AUDIO_EMBEDDER_OUTPUT]:
            raise _wrong(f"inputs {[i.name for i in ins]}, outputs {[o.name for o in g.output]}, not "
                         f"[{tensors.AUDIO_EMBEDDER_INPUT!r}] -> [{tensors.AUDIO_EMBEDDER_OUTPUT!r}]")
        in_dims = _dims(ins[0])
        if len(in_dims) != 3 or not all(isinstance(d, int) and d > 0 for d in in_dims[1:]):
            raise _wrong(f"input shape {in_dims}, expected [B, window_frames, n_mels] with fixed frames and mels")
        self.window_frames, self.n_mels = in_dims[1], in_dims[2]
        inferred = shape_inference.infer_shapes(model)
        self.shapes = {v.name: _dims(v) for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        nodes = list(g.node)
        convs = [k for k, n in enumerate(nodes) if n.op_type == "Conv"]
        if not convs or nodes[-1].op_type != "Reshape":
            raise _wrong("no Conv, or the output is not a Reshape")
        self.front, self.body, self.tail = nodes[:convs[0]], nodes[convs[0]:-1], nodes[-1]
        self.pads = self._front_pads()
        self.body_out = self.tail.input[0]

    def _front_pads(self) -> tuple[int, int]:
        """Checks the front is Unsqueeze (a channel last) -> Pad (mel only) -> Reshape to NCHW; the mel pads."""
        ops = [n.op_type for n in self.front]
        if ops != ["Unsqueeze", "Pad", "Reshape"]:
            raise _wrong(f"the layers before the first Conv are {ops}, expected Unsqueeze, Pad, Reshape")
        unsq, pad, reshape = self.front
        if unsq.input[0] != tensors.AUDIO_EMBEDDER_INPUT or self.inits.get(unsq.input[1], np.array([])).tolist() != [3]:
            raise _wrong("the first layer does not add a channel axis last to the features")
        pads = self.inits.get(pad.input[1], np.zeros(0)).tolist() if len(pad.input) > 1 else []
        value = self.inits.get(pad.input[2], np.zeros(1)) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        # [B, T, mel, C] pads: begins then ends; only the mel axis (2) may be padded, with zeros
        if (len(pads) != 8 or _attrs(pad).get("mode", b"constant") not in (b"constant", "constant")
                or any(pads[k] for k in (0, 1, 3, 4, 5, 7)) or np.any(value != 0)):
            raise _wrong(f"its Pad has pads {pads}, expected zero padding of the mel axis only")
        width = self.n_mels + pads[2] + pads[6]
        if self.inits.get(reshape.input[1], np.zeros(0)).tolist() != [-1, 1, self.window_frames, width]:
            raise _wrong("the Reshape after the Pad is not NHWC -> NCHW of one channel")
        if reshape.output[0] != self.body[0].input[0]:
            raise _wrong("the first Conv does not read the padded features")
        return int(pads[2]), int(pads[6])


def _check_chain(src: _Source) -> tuple[list[StateSpec], int]:
    """Walks the body: a chain, time-local except for its Convs and MaxPools; returns the states
    and the stride (frames between windows: the product of the pools' time strides).

    Checks, on the window's own (inferred) shapes, that no pool drops a time column, so that the
    window's output ends with its last frame, and that a window gives exactly one column.
    """
    states: list[StateSpec] = []
    current = src.body[0].input[0]
    time_step = 1
    for k, node in enumerate(src.body):
        if node.input[0] != current:
            raise _wrong(f"layer {node.name!r} ({node.op_type}) does not read the previous layer's output")
        extra = [x for x in node.input[1:] if x]
        if any(x not in src.inits for x in extra):
            raise _wrong(f"layer {node.name!r} ({node.op_type}) has a second tensor input that is not a constant")
        a = _attrs(node)
        shape_in = src.shapes.get(current, [])
        if len(shape_in) != 4 or not all(isinstance(d, int) for d in shape_in[1:]):
            raise _wrong(f"layer {node.name!r} ({node.op_type}) reads {current!r} of shape {shape_in}, not "
                         f"[B, C, time, mel] with fixed C, time and mel")
        if node.op_type == "Conv":
            kt = src.inits[node.input[1]].shape[2]  # weight [C_out, C_in, time, mel]
            pads = a.get("pads", [0, 0, 0, 0])
            if (a.get("strides", [1, 1])[0] != 1 or a.get("dilations", [1, 1])[0] != 1 or pads[0] or pads[2]
                    or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
                raise _wrong(f"Conv {node.name!r} has time stride, dilation or padding ({a})")
            if kt > 1:
                shape = (int(shape_in[1]), kt - 1, int(shape_in[3]))
                states.append(StateSpec(len(states), node.name, len(src.front) + k, shape, time_step))
        elif node.op_type == "MaxPool":
            kt, st = a["kernel_shape"][0], a.get("strides", [1, 1])[0]
            pads = a.get("pads", [0, 0, 0, 0])
            if kt != st or pads[0] or pads[2] or a.get("ceil_mode", 0) or a.get("dilations", [1, 1])[0] != 1:
                raise _wrong(f"MaxPool {node.name!r} overlaps or pads in time ({a})")
            if shape_in[TIME_AXIS] % st:
                raise _wrong(f"MaxPool {node.name!r} drops a time column of the window ({shape_in})")
            time_step *= st
        elif node.op_type in POINTWISE_OPS:
            for x in extra:
                dims = src.inits[x].shape
                if len(dims) >= 2 and dims[-2] != 1:  # broadcast against [B, C, time, mel]
                    raise _wrong(f"layer {node.name!r} ({node.op_type}) has a constant that varies in time {dims}")
        else:
            raise _wrong(f"layer {node.name!r} is a {node.op_type}, not a Conv, MaxPool or point-wise layer")
        current = node.output[0]
    if current != src.body_out:
        raise _wrong("the chain does not end in the Reshape's input")
    out_dims = src.shapes.get(src.body_out, [])
    if len(out_dims) != 4 or out_dims[2:] != [1, 1] or not isinstance(out_dims[1], int):
        raise _wrong(f"a window gives {src.body_out!r} of shape {out_dims}, expected [B, D, 1, 1]: one time column")
    return states, time_step


def stream_layout(embedder: onnx.ModelProto) -> tuple[list[StateSpec], int]:
    """The states :func:`build_stream_graph` gives ``embedder``'s stream graph, in order, and its
    stride in frames (the new frames per output window)."""
    return _check_chain(_Source(embedder))


def _ints(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def build_stream_graph(embedder: onnx.ModelProto) -> onnx.ModelProto:
    """The streaming graph of the rewritten embedder (``audio_embedder.onnx``, contract names).

    In: ``features`` float32 ``[B, k * stride, n_mels]`` (the new frames) and ``state_in_<i>``
    float32 ``[B] + states[i].shape``. Out: ``embedding`` float32 ``[B, k, D]`` (output ``j``: the
    window ending with new frame ``(j + 1) * stride - 1``) and ``state_out_<i>`` (same shapes).
    Batch and ``k`` dynamic; checked with ``onnx.checker`` (full check). Raises UsageError when
    ``embedder`` is not a time-convolutional chain of the kind the module docstring describes.
    """
    src = _Source(embedder)
    states, stride = _check_chain(src)
    embedding_size = src.shapes[src.body_out][1]
    lo, hi = src.pads
    first_in = src.body[0].input[0]
    nodes = [helper.make_node("Unsqueeze", [tensors.AUDIO_EMBEDDER_INPUT, "stream/axis_1"], ["stream/features_nchw"],
                              name="stream/add_channel"),                                   # [B, 1, T, mel]
             helper.make_node("Pad", ["stream/features_nchw", "stream/mel_pads"], [first_in],
                              name="stream/pad_mel")]                                       # [B, 1, T, mel']
    inits = [_ints("stream/axis_1", [1]), _ints("stream/mel_pads", [0, 0, 0, lo, 0, 0, 0, hi]),
             _ints("stream/time_axis", [TIME_AXIS]), _ints("stream/to_end", [_INT64_MAX]), _ints("stream/axis_3", [3])]
    state_inputs, state_outputs = [], []
    pending = iter(states)
    state = next(pending, None)
    for k, node in enumerate(src.body, start=len(src.front)):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if state is not None and k == state.node:  # [state_in_i ; new columns] -> the Conv; its tail -> state_out_i
            i = state.index
            s_in, s_out = f"{tensors.AUDIO_EMBEDDER_STATE_IN}{i}", f"{tensors.AUDIO_EMBEDDER_STATE_OUT}{i}"
            joined, keep = f"stream/state_{i}_and_new", f"stream/keep_{i}"  # [B, C, columns + new, mel]
            nodes += [helper.make_node("Concat", [s_in, node.input[0]], [joined], axis=TIME_AXIS,
                                       name=f"stream/join_{i}"),
                      helper.make_node("Slice", [joined, keep, "stream/to_end", "stream/time_axis"], [s_out],
                                       name=keep)]
            inits.append(_ints(keep, [-state.columns]))
            copy.input[0] = joined
            dims = ["batch", *state.shape]
            state_inputs.append(helper.make_tensor_value_info(s_in, TensorProto.FLOAT, dims))
            state_outputs.append(helper.make_tensor_value_info(s_out, TensorProto.FLOAT, dims))
            state = next(pending, None)
        nodes.append(copy)
    nodes += [helper.make_node("Squeeze", [src.body_out, "stream/axis_3"], ["stream/embedding_bdk"],
                               name="stream/drop_mel"),                                     # [B, D, k, 1] -> [B, D, k]
              helper.make_node("Transpose", ["stream/embedding_bdk"], [tensors.AUDIO_EMBEDDER_OUTPUT], perm=[0, 2, 1],
                               name="stream/windows_first")]                                # [B, k, D]
    used = {x for n in src.body for x in n.input}
    inits += [src.init_protos[name] for name in src.init_protos if name in used]
    graph = helper.make_graph(
        nodes, "speech_embedding_embedder_stream",
        [helper.make_tensor_value_info(tensors.AUDIO_EMBEDDER_INPUT, TensorProto.FLOAT,
                                       ["batch", "new_frames", src.n_mels])] + state_inputs,
        [helper.make_tensor_value_info(tensors.AUDIO_EMBEDDER_OUTPUT, TensorProto.FLOAT,
                                       ["batch", "new_windows", embedding_size])] + state_outputs,
        inits)
    model = helper.make_model(graph, opset_imports=list(embedder.opset_import), producer_name="edgetune",
                              doc_string=f"speech_embedding embedder, streaming: features [B, {stride}k, "
                                         f"{src.n_mels}] + {len(states)} states -> embedding [B, k, "
                                         f"{embedding_size}] + states")
    model.ir_version = embedder.ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


#: The provenance ``rewrite`` line of the stream graph.
REWRITE = ("audio_embedder.onnx (its rewrite above) as a streaming graph: features [B, 8k, 32] new frames; before "
           "each of the 11 time convolutions (kernel 3) a state_in_<i> of its input's last 2 time columns is "
           "concatenated in front and the concatenation's last 2 columns leave as state_out_<i>; the Reshape to "
           "NCHW becomes Unsqueeze + Pad of the mel axis, the output [B, 96, k, 1] becomes embedding [B, k, 96]; "
           "weights and layers unchanged")


def write_stream_graph(embedder_path: Path, out_path: Path) -> None:
    """Build the stream graph of the window graph at ``embedder_path`` and save it to ``out_path``."""
    onnx.save(build_stream_graph(onnx.load(str(embedder_path))), str(out_path))


def stream_embeddings(session, features: np.ndarray, frames_per_call: int) -> np.ndarray:
    """Run a stream graph's ONNX Runtime ``session`` from a zero state over ``features``.

    ``features`` float32 [B, T, F], T a multiple of ``frames_per_call`` (itself a multiple of the
    stride), fed ``frames_per_call`` frames a call; returns every call's embeddings in order,
    float32 [B, T / stride, D] (the first ones read the zero state; see the module docstring).
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    b, t = features.shape[:2]
    if t % frames_per_call:
        raise ValueError(f"{t} frames are not a whole number of calls of {frames_per_call}")
    inputs = {i.name: i for i in session.get_inputs()}
    n_states = sum(name.startswith(tensors.AUDIO_EMBEDDER_STATE_IN) for name in inputs)
    names = [f"{tensors.AUDIO_EMBEDDER_STATE_IN}{i}" for i in range(n_states)]
    state = {name: np.zeros((b, *inputs[name].shape[1:]), np.float32) for name in names}
    outputs = [tensors.AUDIO_EMBEDDER_OUTPUT] + [f"{tensors.AUDIO_EMBEDDER_STATE_OUT}{i}" for i in range(n_states)]
    parts = []
    for start in range(0, t, frames_per_call):
        out = session.run(outputs, {tensors.AUDIO_EMBEDDER_INPUT: features[:, start:start + frames_per_call], **state})
        parts.append(out[0])
        state = dict(zip(names, out[1:]))
    return np.concatenate(parts, axis=1)
