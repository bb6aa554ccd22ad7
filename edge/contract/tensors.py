"""File names inside a bundle and the tensor names of each ONNX graph.

Export writes graphs with exactly these input and output names; the device looks them up by
these names. Shapes use ``B`` for batch, ``N`` for samples, ``T`` for feature frames.
"""

MANIFEST_FILE = "manifest.json"

# audio_frontend.onnx: raw PCM to features.
#   pcm      float32 [B, N]   mono samples in [-1, 1] at the manifest's sample rate. pcm[:, 0] is
#                             look-back context only (the sample before the first frame, used by
#                             pre-emphasis); frames start at pcm[:, 1].
#   features float32 [B, T, n_mfcc]   T = 1 + (N - 1 - n_fft) // frame_hop_samples
AUDIO_FRONTEND_FILE = "audio_frontend.onnx"
AUDIO_FRONTEND_INPUT = "pcm"
AUDIO_FRONTEND_OUTPUT = "features"

# audio_embedder.onnx: a clip's features to one embedding.
#   features  float32 [B, T_clip, n_mfcc]   exactly frames_per_clip frames
#   embedding float32 [B, D]                D = manifest audio.embedding_size
AUDIO_EMBEDDER_FILE = "audio_embedder.onnx"
AUDIO_EMBEDDER_INPUT = "features"
AUDIO_EMBEDDER_OUTPUT = "embedding"

# image_embedder.onnx (image path, later): uint8 frames to one embedding.
IMAGE_EMBEDDER_FILE = "image_embedder.onnx"
IMAGE_EMBEDDER_INPUT = "image"
IMAGE_EMBEDDER_OUTPUT = "embedding"

# A head is plain arrays in an .npz file: logits = embedding @ weight.T + bias.
#   weight float32 [C, D], bias float32 [C]; labels live in the manifest (or head metadata).
HEAD_FILE = "head.npz"
HEAD_WEIGHT = "weight"
HEAD_BIAS = "bias"

# Replay set against forgetting during on-device fine-tuning.
#   embeddings float32 [M, D], labels int64 [M] (indices into the bundle head's labels)
REPLAY_FILE = "replay.npz"
REPLAY_EMBEDDINGS = "embeddings"
REPLAY_LABELS = "labels"

# The label a keyword head uses for "no keyword": silence, noise, other speech.
BACKGROUND_LABEL = "_background_"
