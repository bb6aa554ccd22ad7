"""Audio-visual digit pairs (in the spirit of AV-MNIST): a spoken digit with a handwritten one.

Audio: the words ``zero`` .. ``nine`` synthesised by espeak-ng (:mod:`..data.speech`), whose
voices are split into disjoint train / val / test sets, so test pairs are spoken by voices no
head was trained on.

Images: scikit-learn's ``load_digits``, real handwritten digits (8x8, values 0..16) shipped with
the package, so nothing is downloaded. It carries no writer ids. Its 1,797 digits are the test
part of UCI's optdigits, written by 13 people, and are *believed* to be stored in writer order;
we therefore cut the index range into :data:`N_WRITER_BLOCKS` contiguous blocks of (nearly)
equal size and give whole blocks to each split (by default blocks 0-8 train, 9-10 val, 11-12
test). This is a stand-in for held-out writers, not a guarantee: if the order is not by writer,
a block mixes writers and "held-out writer" accuracy is only held-out-image accuracy.

Frames: each 8x8 digit becomes a uint8 RGB frame ``[frame_size, frame_size, 3]`` (default 64x64)
in one documented place, :func:`digit_frame`: values scaled from 0..16 to 0..255, inverted so that
the ink is dark on white like a digit written on paper, upscaled bilinearly (pixel centres
aligned), the same value in R, G and B. The image embedder graph resizes and normalises it
further itself.

Pairs: within a split, each class's clips and images are shuffled and paired in turn until the
larger of the two is used up (the smaller one cycles), so every clip and every image of the
split appears in at least one pair; pairs never cross splits. Everything is seeded.

Nothing here knows a backbone: :func:`embed_pairs` takes ``audio_embed(clips float32 [N,
samples]) -> [N, Da]`` and ``image_embed(frames: list of uint8 [H, W, 3]) -> [N, Di]`` and embeds
each source clip and image once, optionally corrupted first (:mod:`.corrupt`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from ..data.speech import DIGITS, SPLITS, SpeechDataConfig, synthesize_splits
from .corrupt import corrupt_audio, corrupt_frames

log = logging.getLogger(__name__)

#: Writers of scikit-learn's digits (UCI optdigits' test part); the index range is cut into this many blocks.
N_WRITER_BLOCKS = 13
#: Blocks per split: a stand-in for disjoint writers (module docstring).
DEFAULT_WRITER_BLOCKS = {"train": tuple(range(9)), "val": (9, 10), "test": (11, 12)}
#: Side of the square frame an 8x8 digit becomes.
DEFAULT_FRAME_SIZE = 64
_DIGIT_MAX = 16.0  # load_digits' pixel values run 0..16

AudioEmbed = Callable[[np.ndarray], np.ndarray]
ImageEmbed = Callable[[list], np.ndarray]


def digit_frame(image: np.ndarray, size: int = DEFAULT_FRAME_SIZE) -> np.ndarray:
    """One 8x8 digit (values 0..16) -> a uint8 RGB frame [size, size, 3]: dark ink on white,
    bilinearly upscaled (module docstring)."""
    x = np.asarray(image, dtype=np.float64)
    if x.shape != (8, 8):
        raise ValueError(f"digit image has shape {list(x.shape)}; expected [8, 8] as load_digits gives")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"frame size is {size!r}; expected an integer >= 8")
    grey = 255.0 * (1.0 - np.clip(x, 0.0, _DIGIT_MAX) / _DIGIT_MAX)  # ink dark, paper white
    # Bilinear with pixel centres aligned: output pixel i samples input coordinate (i + 0.5) * 8 / size - 0.5.
    pos = np.clip((np.arange(size) + 0.5) * (8.0 / size) - 0.5, 0.0, 7.0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, 7)
    frac = pos - lo
    rows = grey[lo] * (1.0 - frac)[:, None] + grey[hi] * frac[:, None]  # (size, 8)
    out = rows[:, lo] * (1.0 - frac)[None, :] + rows[:, hi] * frac[None, :]  # (size, size)
    out = np.round(out).clip(0, 255).astype(np.uint8)
    return np.repeat(out[:, :, None], 3, axis=2)


def writer_blocks(n_images: int, n_blocks: int = N_WRITER_BLOCKS) -> np.ndarray:
    """The block (stand-in writer) of each index 0..n_images-1: contiguous, nearly equal blocks, int64 [n]."""
    if n_blocks < 1 or n_images < n_blocks:
        raise ValueError(f"{n_images} images in {n_blocks} blocks; expected 1 <= blocks <= images")
    return (np.arange(n_images) * n_blocks // n_images).astype(np.int64)


@dataclass(frozen=True)
class PairConfig:
    """How the audio-visual pairs are made; every field is part of the data's description.

    ``speech``: the spoken digits (its ``words`` must be :data:`~..data.speech.DIGITS`; no
    background class); set its ``clip_samples`` to what the audio backbone takes.
    ``writer_blocks``: split -> blocks of :func:`writer_blocks`, disjoint across splits.
    """

    speech: SpeechDataConfig = field(default_factory=lambda: SpeechDataConfig(
        words=DIGITS, background_ratio=0.0, renderings_per_voice=4, train_copies=1))
    writer_blocks: dict = field(default_factory=lambda: dict(DEFAULT_WRITER_BLOCKS))
    frame_size: int = DEFAULT_FRAME_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if tuple(self.speech.words) != DIGITS:
            raise ValueError(f"PairConfig.speech.words is {self.speech.words!r}; expected the digits {DIGITS}")
        if self.speech.background_ratio != 0:
            raise ValueError(f"PairConfig.speech.background_ratio is {self.speech.background_ratio!r}; expected 0 "
                             "(a handwritten digit has no background class to pair with)")
        blocks = {k: tuple(int(b) for b in v) for k, v in dict(self.writer_blocks).items()}
        if set(blocks) != set(SPLITS) or not all(blocks.values()):
            raise ValueError(f"PairConfig.writer_blocks has splits {sorted(blocks)}; expected blocks for each of "
                             f"{list(SPLITS)}")
        flat = [b for v in blocks.values() for b in v]
        if len(set(flat)) != len(flat) or not all(0 <= b < N_WRITER_BLOCKS for b in flat):
            raise ValueError(f"PairConfig.writer_blocks {blocks}; expected disjoint blocks in 0..{N_WRITER_BLOCKS - 1}")
        object.__setattr__(self, "writer_blocks", blocks)
        if not isinstance(self.frame_size, int) or self.frame_size < 8:
            raise ValueError(f"PairConfig.frame_size is {self.frame_size!r}; expected an integer >= 8")

    def with_clip_samples(self, clip_samples: int) -> "PairConfig":
        """This config with clips of ``clip_samples`` samples (the audio backbone's clip length)."""
        return replace(self, speech=replace(self.speech, clip_samples=int(clip_samples)))

    def describe(self) -> dict:
        """A JSON-ready description (provenance, the study's report)."""
        return {"audio": self.speech.describe(),
                "images": {"source": "scikit-learn load_digits (UCI optdigits test part, 13 writers)",
                           "writer_blocks": {k: list(v) for k, v in self.writer_blocks.items()},
                           "n_writer_blocks": N_WRITER_BLOCKS,
                           "note": "no writer ids: contiguous index blocks stand in for held-out writers",
                           "frame": f"{self.frame_size}x{self.frame_size} RGB uint8, dark ink on white, bilinear"},
                "pairing": "same class, random, seeded; every clip and image of a split used at least once",
                "seed": self.seed}


@dataclass
class PairSet:
    """The pairs of one split.

    Sources: ``source_clips`` float32 [Na, samples] (``source_voices``: their voices),
    ``source_frames`` uint8 [Ni, H, W, 3] (``source_blocks``: their writer blocks). Pair ``k`` is
    clip ``audio_index[k]`` with frame ``image_index[k]``, class ``labels[k]`` (int64, into
    ``label_names``).
    """

    source_clips: np.ndarray
    source_voices: tuple[str, ...]
    source_frames: np.ndarray
    source_blocks: np.ndarray
    audio_index: np.ndarray
    image_index: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...] = DIGITS

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def voices(self) -> tuple[str, ...]:
        """The voice of each pair's clip."""
        return tuple(self.source_voices[i] for i in self.audio_index)

    @property
    def blocks(self) -> np.ndarray:
        """The writer block of each pair's image, int64 [N]."""
        return self.source_blocks[self.image_index]

    @property
    def clips(self) -> np.ndarray:
        """Each pair's clip, float32 [N, samples]."""
        return self.source_clips[self.audio_index]

    @property
    def frames(self) -> list[np.ndarray]:
        """Each pair's frame, uint8 [H, W, 3]."""
        return [self.source_frames[i] for i in self.image_index]


def pair_indices(audio_labels: np.ndarray, image_labels: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same-class random pairs: (audio index, image index, label), int64 [N] each.

    Per class, both sides are shuffled and paired in turn until the larger side is used up, the
    smaller side cycling; then the pairs are shuffled. Raises ValueError when a class is on one
    side only.
    """
    a_lab, i_lab = np.asarray(audio_labels), np.asarray(image_labels)
    classes = sorted(set(a_lab.tolist()) | set(i_lab.tolist()))
    ai, ii, yy = [], [], []
    for c in classes:
        a, i = rng.permutation(np.flatnonzero(a_lab == c)), rng.permutation(np.flatnonzero(i_lab == c))
        if a.size == 0 or i.size == 0:
            raise ValueError(f"class {c} has {a.size} clips and {i.size} images; a pair needs both")
        n = max(a.size, i.size)
        ai.append(a[np.arange(n) % a.size])
        ii.append(i[np.arange(n) % i.size])
        yy.append(np.full(n, c))
    order = rng.permutation(sum(x.size for x in yy))
    return (np.concatenate(ai)[order].astype(np.int64), np.concatenate(ii)[order].astype(np.int64),
            np.concatenate(yy)[order].astype(np.int64))


def load_digit_frames(config: PairConfig) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """scikit-learn's digits per split: (frames uint8 [n, S, S, 3], labels int64 [n], blocks int64 [n])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    block = writer_blocks(len(digits.target))
    out = {}
    for split in SPLITS:
        idx = np.flatnonzero(np.isin(block, config.writer_blocks[split]))
        frames = np.stack([digit_frame(digits.images[i], config.frame_size) for i in idx])
        out[split] = (frames, digits.target[idx].astype(np.int64), block[idx])
    return out


def make_pairs(config: PairConfig = PairConfig(), *, progress: bool = False,
               splits: Sequence[str] = SPLITS) -> dict[str, PairSet]:
    """The train / val / test pairs of ``config`` (espeak-ng must be installed; renderings cached)."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits {unknown} unknown; expected some of {list(SPLITS)}")
    speech = synthesize_splits(config.speech, progress=progress, splits=splits)
    images = load_digit_frames(config)
    out = {}
    for index, split in enumerate(SPLITS):
        if split not in splits:
            continue
        clips = speech[split]
        # ClipSet labels are "_background_" then the words; the digits' own order is the pairs' labels.
        words = [clips.label_names[i] for i in clips.labels]
        a_lab = np.array([DIGITS.index(w) for w in words], dtype=np.int64)
        frames, i_lab, blocks = images[split]
        ai, ii, y = pair_indices(a_lab, i_lab, np.random.default_rng([config.seed, index, 7]))
        out[split] = PairSet(source_clips=clips.audio, source_voices=tuple(clips.voices), source_frames=frames,
                             source_blocks=blocks, audio_index=ai, image_index=ii, labels=y)
        log.info("%s: %d pairs from %d clips (%d voices) and %d images (blocks %s)", split, len(y), len(a_lab),
                 len(set(clips.voices)), len(i_lab), list(config.writer_blocks[split]))
    return out


def embed_audio(pairs: PairSet, audio_embed: AudioEmbed, corruption: str | None = None, *,
                seed: int = 0) -> np.ndarray:
    """Each pair's audio embedding, float32 [N, Da]: every source clip embedded once, after
    ``corruption`` of the raw clip (:data:`~.corrupt.AUDIO_CORRUPTIONS`; None: clean)."""
    clips = pairs.source_clips
    if corruption is not None:
        clips = corrupt_audio(clips, corruption, np.random.default_rng([seed, 11]))
    out = np.asarray(audio_embed(clips), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != clips.shape[0]:
        raise ValueError(f"audio_embed returned {list(out.shape)} for {clips.shape[0]} clips; expected [N, Da]")
    return out[pairs.audio_index]


def embed_images(pairs: PairSet, image_embed: ImageEmbed, corruption: str | None = None, *,
                 seed: int = 0) -> np.ndarray:
    """Each pair's image embedding, float32 [N, Di]: every source frame embedded once, after
    ``corruption`` of the raw frame (:data:`~.corrupt.IMAGE_CORRUPTIONS`; None: clean)."""
    frames = list(pairs.source_frames)
    if corruption is not None:
        frames = corrupt_frames(frames, corruption, np.random.default_rng([seed, 13]))
    out = np.asarray(image_embed(frames), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(frames):
        raise ValueError(f"image_embed returned {list(out.shape)} for {len(frames)} frames; expected [N, Di]")
    return out[pairs.image_index]


def embed_pairs(pairs: PairSet, audio_embed: AudioEmbed, image_embed: ImageEmbed, *,
                audio_corruption: str | None = None, image_corruption: str | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's (audio embedding float32 [N, Da], image embedding float32 [N, Di]), after the
    given corruptions of the raw inputs (:func:`embed_audio`, :func:`embed_images`)."""
    return (embed_audio(pairs, audio_embed, audio_corruption, seed=seed),
            embed_images(pairs, image_embed, image_corruption, seed=seed))
