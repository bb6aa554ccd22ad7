"""File names inside a bundle and the tensor names of each ONNX graph.

Export writes graphs with exactly these input and output names; the device looks them up by
these names. Shapes use ``B`` for batch, ``N`` for samples, ``T`` for feature frames.
"""

MANIFEST_FILE = "manifest.json"

# audio_frontend.onnx: raw PCM to features, frame-local (contract/audio_spec.py).
#   pcm      float32 [B, N]   mono samples in [-1, 1] at the manifest's sample rate. The first
#                             lookback_samples are context only (MFCC: the one sample pre-emphasis
#                             needs; speech_embedding_mel: none).
#   features float32 [B, T, F]   T = 1 + (N - lookback - frame_length) // frame_hop_samples
AUDIO_FRONTEND_FILE = "audio_frontend.onnx"
AUDIO_FRONTEND_INPUT = "pcm"
AUDIO_FRONTEND_OUTPUT = "features"

# audio_embedder.onnx: one window of features to one embedding.
#   features  float32 [B, W, F]   W = audio.embedder.window_frames
#   embedding float32 [B, D]      D = audio.embedder.window_embedding_size (before pooling)
AUDIO_EMBEDDER_FILE = "audio_embedder.onnx"
AUDIO_EMBEDDER_INPUT = "features"
AUDIO_EMBEDDER_OUTPUT = "embedding"

# audio_embedder_stream.onnx (optional; windowed embedders whose network is convolutional in
# time, e.g. speech_embedding): the same embeddings, computed incrementally from new frames.
#   features      float32 [B, k * stride_frames, F]   the frames that arrived since the last call
#   state_in_<i>  float32, one per stage of the network: the context it keeps (shapes: the graph's)
#   embedding     float32 [B, k, D]   output j: the window of window_frames frames that ends with
#                                     new frame (j + 1) * stride_frames - 1
#   state_out_<i> float32   the state to pass as state_in_<i> next call
# A zero state followed by window_frames (rounded up to stride_frames) frames of history makes the
# state of that history; outputs whose window reaches into the zero state are not used.
AUDIO_EMBEDDER_STREAM_FILE = "audio_embedder_stream.onnx"
AUDIO_EMBEDDER_STATE_IN = "state_in_"
AUDIO_EMBEDDER_STATE_OUT = "state_out_"

# image_embedder.onnx: uint8 frames [B, H, W, 3] to one embedding [B, D] (contract/image_spec.py).
IMAGE_EMBEDDER_FILE = "image_embedder.onnx"
IMAGE_EMBEDDER_INPUT = "image"
IMAGE_EMBEDDER_OUTPUT = "embedding"

# A head is plain arrays in an .npz file: logits = embedding @ weight.T + bias.
#   weight float32 [C, D], bias float32 [C]; labels live in the manifest (or head metadata).
HEAD_FILE = "head.npz"


def head_file(name: str) -> str:
    """The file of head ``name`` in a bundle (``head_<name>.npz``)."""
    return f"head_{name}.npz"


def replay_file(name: str) -> str:
    """The replay set of head ``name`` (``replay_<name>.npz``)."""
    return f"replay_{name}.npz"


HEAD_WEIGHT = "weight"
HEAD_BIAS = "bias"

# A fused head (contract/manifest.py HeadSpec.fusion) reads x = the fusion's inputs' embeddings
# side by side (audio [Da] then image [Di], in fusion.inputs order; D = Da + Di).
#   concat: weight [C, D], bias [C], like any head.
#   gated:  weight [C, D], bias [C] and
#     input_mean  float32 [D], input_scale float32 [D]   z = (x - input_mean) / input_scale
#     gate_weight float32 [M, D], gate_bias float32 [M]  g = softmax(z @ gate_weight.T + gate_bias),
#                                                          M = number of inputs
#     logits = concat_m(M * g_m * z_m) @ weight.T + bias  (equal gates leave z as it is)
GATE_WEIGHT = "gate_weight"
GATE_BIAS = "gate_bias"
INPUT_MEAN = "input_mean"
INPUT_SCALE = "input_scale"
GATED_HEAD_ARRAYS = (HEAD_WEIGHT, HEAD_BIAS, GATE_WEIGHT, GATE_BIAS, INPUT_MEAN, INPUT_SCALE)

# Replay set of a head against forgetting during on-device fine-tuning (one file per head).
#   embeddings float32 [M, D], labels int64 [M] (indices into that head's labels)
REPLAY_FILE = "replay.npz"
REPLAY_EMBEDDINGS = "embeddings"
REPLAY_LABELS = "labels"

# The label a keyword head uses for "no keyword": silence, noise, other speech.
BACKGROUND_LABEL = "_background_"
