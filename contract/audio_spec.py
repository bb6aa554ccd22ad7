"""The audio modality of a bundle: the front-end (a tagged choice), the embedder, the clip.

PCM float32 in [-1, 1] at ``sample_rate_hz`` -> ``audio_frontend.onnx`` -> feature frames ->
``audio_embedder.onnx`` on windows of ``window_frames`` frames -> one embedding per window ->
pooling over the clip's ``n_windows`` windows -> the clip's embedding, the heads' input.

Every front-end is frame-local: feature frame ``g`` depends only on the ``frame_length_samples``
samples that start at ``lookback_samples + g * frame_hop_samples`` (plus the ``lookback_samples``
before them). That is what lets the device compute only the frames each hop completes and get,
to the bit, what the whole clip would give.

Front-end kinds (``frontend.kind``):

- ``mfcc`` / ``logmel``: edgetune's own front-end (:class:`MfccParams`; pre-emphasis, Hann
  window, power spectrum as a fixed-kernel convolution, Slaney mel, absolute dB, DCT-II).
- ``speech_embedding_mel``: the mel front-end shipped with Google's ``speech_embedding``
  (:class:`SpeechMelParams`), rewritten by the exporter to be frame-local.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping, Union

from .checks import is_int, is_number, one_of, require
from .graphs import Graph
from . import tensors


@dataclass(frozen=True)
class MfccParams:
    """edgetune's own front-end; the exporter builds the graph from exactly these."""

    sample_rate_hz: int = 16000
    n_fft: int = 512
    window_samples: int = 400
    frame_hop_samples: int = 160
    n_mels: int = 40
    n_mfcc: int = 13
    fmin_hz: float = 20.0
    fmax_hz: float = 7600.0
    preemphasis: float = 0.97
    log_floor: float = 1e-10
    window: str = "hann"
    kind: str = "mfcc"  # "mfcc" or "logmel" (then n_mfcc is ignored and features are n_mels wide)

    #: Samples before the first frame that the graph reads (pre-emphasis needs one).
    lookback_samples: int = 1

    def __post_init__(self) -> None:
        require(self.kind in ("mfcc", "logmel"), "audio.frontend.kind", self.kind, "'mfcc' or 'logmel'")
        require(self.window == "hann", "audio.frontend.window", self.window, "'hann'")
        require(is_int(self.sample_rate_hz) and self.sample_rate_hz >= 4000, "audio.frontend.sample_rate_hz",
                self.sample_rate_hz, "an integer >= 4000")
        require(is_int(self.window_samples) and 0 < self.window_samples <= self.n_fft,
                "audio.frontend.window_samples", self.window_samples, f"1..n_fft ({self.n_fft})")
        require(is_int(self.frame_hop_samples) and 0 < self.frame_hop_samples <= self.window_samples,
                "audio.frontend.frame_hop_samples", self.frame_hop_samples, f"1..window_samples ({self.window_samples})")
        require(is_int(self.n_mels) and 0 < self.n_mels <= self.n_fft // 2 + 1, "audio.frontend.n_mels", self.n_mels,
                f"1..{self.n_fft // 2 + 1}")
        require(is_int(self.n_mfcc) and 0 < self.n_mfcc <= self.n_mels, "audio.frontend.n_mfcc", self.n_mfcc,
                f"1..n_mels ({self.n_mels})")
        require(0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2, "audio.frontend.fmin_hz/fmax_hz",
                (self.fmin_hz, self.fmax_hz), f"0 <= fmin < fmax <= {self.sample_rate_hz / 2}")
        require(0.0 <= self.preemphasis < 1.0, "audio.frontend.preemphasis", self.preemphasis, "0 <= value < 1")
        require(self.log_floor > 0, "audio.frontend.log_floor", self.log_floor, "a positive number")
        require(self.lookback_samples == 1, "audio.frontend.lookback_samples", self.lookback_samples, "1")

    @property
    def frame_length_samples(self) -> int:
        """Samples one frame reads (after the look-back)."""
        return self.n_fft

    @property
    def n_features(self) -> int:
        """Width of one feature frame."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def n_frames(self, n_samples: int) -> int:
        """Frames the front-end makes from ``n_samples`` samples (look-back included)."""
        return _n_frames(self, n_samples)


@dataclass(frozen=True)
class SpeechMelParams:
    """The mel front-end of Google's ``speech_embedding``, as the exporter rewrites it.

    Fixed by the pretrained graph: 16 kHz, frames of 512 samples every 160 (10 ms), 32 mel
    bands, no look-back. The wheel's graph floors the log-mel at the *call's* maximum minus
    80 dB, which makes a frame depend on other audio in the same call; the bundle's graph floors
    it at ``floor_db`` instead (the wheel's dB units, int16-scaled PCM), a rule local to the frame.
    ``export/audio/speech_embedding.py`` measured the choice against openWakeWord's streaming.
    """

    floor_db: float
    kind: str = "speech_embedding_mel"
    sample_rate_hz: int = 16000
    frame_length_samples: int = 512
    frame_hop_samples: int = 160
    n_mels: int = 32
    lookback_samples: int = 0

    def __post_init__(self) -> None:
        fixed = {"kind": "speech_embedding_mel", "sample_rate_hz": 16000, "frame_length_samples": 512,
                 "frame_hop_samples": 160, "n_mels": 32, "lookback_samples": 0}
        for name, value in fixed.items():
            require(getattr(self, name) == value and type(getattr(self, name)) is type(value),
                    f"audio.frontend.{name}", getattr(self, name), f"{value!r} (fixed by the pretrained graph)")
        require(is_number(self.floor_db) and -100.0 <= self.floor_db <= 100.0, "audio.frontend.floor_db",
                self.floor_db, "a number of dB in [-100, 100]")
        object.__setattr__(self, "floor_db", float(self.floor_db))

    @property
    def n_features(self) -> int:
        return self.n_mels

    def n_frames(self, n_samples: int) -> int:
        return _n_frames(self, n_samples)


FrontendParams = Union[MfccParams, SpeechMelParams]
_FRONTENDS = {"mfcc": MfccParams, "logmel": MfccParams, "speech_embedding_mel": SpeechMelParams}


def _n_frames(p: FrontendParams, n_samples: int) -> int:
    usable = n_samples - p.lookback_samples - p.frame_length_samples
    return 0 if usable < 0 else 1 + usable // p.frame_hop_samples


def frontend_from_dict(data: Any) -> FrontendParams:
    """The front-end a manifest's ``audio.frontend`` object describes, chosen by its ``kind``."""
    require(isinstance(data, Mapping), "audio.frontend", data, "an object with a 'kind'")
    cls = one_of(_FRONTENDS, data.get("kind"), "audio.frontend.kind")
    known = {f.name for f in fields(cls)}
    require(set(data) <= known, "audio.frontend keys", sorted(set(data) - known), f"only {sorted(known)}")
    missing = sorted({f.name for f in fields(cls) if f.default is MISSING} - set(data))
    require(not missing, f"audio.frontend ({data['kind']}) keys", sorted(data), f"also {missing}")
    return cls(**data)


#: Pooling of a clip's window embeddings [n_windows, D] into the heads' input, and its width
#: (the device's ``edge/audio/pooling.py`` computes them).
POOLINGS = {
    "none": lambda n, d: d,  # n_windows == 1: the window's embedding itself
    "mean": lambda n, d: d,
    "max": lambda n, d: d,
    "mean_max": lambda n, d: 2 * d,
    "mean_std": lambda n, d: 2 * d,
    "seg2": lambda n, d: 2 * d,  # two consecutive parts, each averaged: coarse time order
    "seg3": lambda n, d: 3 * d,
    "flat": lambda n, d: n * d,  # the windows in time order, concatenated
}


@dataclass(frozen=True)
class AudioEmbedderSpec:
    """How the embedder graph covers a clip.

    The graph maps ``window_frames`` feature frames to one embedding of ``window_embedding_size``;
    a clip is ``n_windows`` windows ``stride_frames`` apart (``frames_per_clip`` frames in all),
    and ``pooling`` (one of :data:`POOLINGS`) makes the clip's embedding of ``embedding_size``.
    ``backbone`` names the backbone in the exporter's registry (provenance has its origin).
    """

    backbone: str
    window_frames: int
    window_embedding_size: int
    n_windows: int = 1
    stride_frames: int = 1
    pooling: str = "none"

    def __post_init__(self) -> None:
        require(isinstance(self.backbone, str) and 0 < len(self.backbone) <= 64, "audio.embedder.backbone",
                self.backbone, "a backbone name")
        for name in ("window_frames", "window_embedding_size", "n_windows", "stride_frames"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, f"audio.embedder.{name}", value, "an integer >= 1")
        one_of(POOLINGS, self.pooling, "audio.embedder.pooling")
        require((self.pooling == "none") == (self.n_windows == 1), "audio.embedder.pooling", self.pooling,
                "'none' exactly when n_windows is 1")

    @property
    def frames_per_clip(self) -> int:
        return self.window_frames + (self.n_windows - 1) * self.stride_frames

    @property
    def embedding_size(self) -> int:
        """Width of a clip's pooled embedding (the heads' input)."""
        return POOLINGS[self.pooling](self.n_windows, self.window_embedding_size)


@dataclass(frozen=True)
class AudioSpec:
    """The audio modality: front-end, embedder, clip length, and the two graphs."""

    frontend: FrontendParams
    embedder: AudioEmbedderSpec
    clip_samples: int
    frontend_graph: Graph = Graph.fp32(tensors.AUDIO_FRONTEND_FILE)
    embedder_graph: Graph = Graph.fp32(tensors.AUDIO_EMBEDDER_FILE)
    #: optional: the embedder as a streaming graph with state (``contract/tensors.py``), giving the
    #: same window embeddings from only the new frames; needs ``n_windows > 1``.
    embedder_stream_graph: Graph | None = None

    def __post_init__(self) -> None:
        require(self.embedder_stream_graph is None or self.embedder.n_windows > 1, "audio.embedder_stream_graph",
                self.embedder_stream_graph, "null for an embedder that reads the whole clip in one window")
        require(is_int(self.clip_samples) and self.clip_samples >= self.frontend.frame_length_samples,
                "audio.clip_samples", self.clip_samples,
                f"an integer >= the frame length ({self.frontend.frame_length_samples})")
        frames = self.frontend.n_frames(self.clip_samples + self.frontend.lookback_samples)
        require(frames == self.embedder.frames_per_clip, "audio.clip_samples", self.clip_samples,
                f"a clip whose {frames} frames are the embedder's {self.embedder.frames_per_clip} "
                f"(window {self.embedder.window_frames} + {self.embedder.n_windows - 1} x stride "
                f"{self.embedder.stride_frames})")

    @classmethod
    def whole_clip(cls, frontend: FrontendParams, clip_samples: int, embedding_size: int,
                   backbone: str = "ds_cnn") -> "AudioSpec":
        """An embedder that reads the clip's frames in one window (e.g. the DS-CNN)."""
        frames = frontend.n_frames(clip_samples + frontend.lookback_samples)
        require(frames >= 1, "audio.clip_samples", clip_samples, "at least one frame of samples")
        return cls(frontend=frontend, clip_samples=clip_samples,
                   embedder=AudioEmbedderSpec(backbone=backbone, window_frames=frames,
                                              window_embedding_size=embedding_size))

    @property
    def sample_rate_hz(self) -> int:
        return self.frontend.sample_rate_hz

    @property
    def frames_per_clip(self) -> int:
        return self.embedder.frames_per_clip

    @property
    def embedding_size(self) -> int:
        return self.embedder.embedding_size

    @property
    def frontend_file(self) -> str:
        return self.frontend_graph.file("fp32")

    @property
    def embedder_file(self) -> str:
        return self.embedder_graph.file("fp32")

    @property
    def files(self) -> tuple[str, ...]:
        stream = self.embedder_stream_graph.files if self.embedder_stream_graph is not None else ()
        return self.frontend_graph.files + self.embedder_graph.files + stream

    def to_dict(self) -> dict[str, Any]:
        return {"frontend": asdict(self.frontend), "embedder": asdict(self.embedder),
                "clip_samples": self.clip_samples, "frontend_graph": self.frontend_graph.to_dict(),
                "embedder_graph": self.embedder_graph.to_dict(),
                "embedder_stream_graph": None if self.embedder_stream_graph is None
                else self.embedder_stream_graph.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> "AudioSpec":
        keys = {"frontend", "embedder", "clip_samples", "frontend_graph", "embedder_graph", "embedder_stream_graph"}
        require(isinstance(data, Mapping) and set(data) == keys, "audio keys",
                sorted(data) if isinstance(data, Mapping) else data, f"exactly {sorted(keys)}")
        emb = data["embedder"]
        known = {f.name for f in fields(AudioEmbedderSpec)}
        require(isinstance(emb, Mapping) and set(emb) <= known and {"backbone", "window_frames",
                "window_embedding_size"} <= set(emb), "audio.embedder", emb, f"an object with keys from {sorted(known)}")
        return cls(frontend=frontend_from_dict(data["frontend"]), embedder=AudioEmbedderSpec(**emb),
                   clip_samples=data["clip_samples"],
                   frontend_graph=Graph.from_dict(data["frontend_graph"], "audio.frontend_graph"),
                   embedder_graph=Graph.from_dict(data["embedder_graph"], "audio.embedder_graph"),
                   embedder_stream_graph=None if data["embedder_stream_graph"] is None
                   else Graph.from_dict(data["embedder_stream_graph"], "audio.embedder_stream_graph"))
