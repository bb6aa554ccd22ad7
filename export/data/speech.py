"""Keyword clips synthesised with espeak-ng: the source task's data, made offline.

espeak-ng speaks each word with many voices (accents and voice variants), speeds and pitches;
each rendering is placed in a one-second clip at a random offset, with random gain and additive
noise at a random SNR. A ``_background_`` class holds noise of several colours, silence, mains
hum, non-vocabulary words and babble. Voices are split into disjoint train / val / test sets, so
test accuracy is measured on voices the model never heard.

espeak-ng is robotic and deterministic per setting: this data shows that the pipeline works and
lets accuracy be compared between models on one split. It says nothing about accuracy on real
speech.

Raw renderings are cached on disk (:func:`synthesize`), keyed by a hash of word, voice, speed,
pitch and espeak-ng version, so a second run does not call espeak-ng at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgetune.contract import tensors
from edgetune.errors import UsageError

from . import augment

log = logging.getLogger(__name__)

ESPEAK_RATE_HZ = 22050
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "start", "play")
#: Default source vocabulary: ten digits and twelve short commands.
DEFAULT_WORDS = DIGITS + COMMANDS
#: Words that are never keywords: spoken into the background class (whole, in fragments, as babble).
OTHER_WORDS = ("apple", "house", "water", "table", "green", "music", "window", "paper", "coffee", "little",
               "garden", "morning", "bird", "happy", "tree", "follow", "dog", "cat", "bed", "marvin", "sheila",
               "visual", "learn", "wow", "number", "station")

# Voices checked to give distinct output with espeak-ng 1.51 (MBROLA voices fail; "en-gb+fN"
# silently gives plain en-gb, so variants hang off "en", "en-us" and the other accents).
TRAIN_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en+f2", "en+f3", "en+m1",
                "en+m2", "en+m3", "en+m4", "en+m7", "en+klatt", "en+whisper", "en+croak", "en+steph", "en+max",
                "en+edward", "en+Andy", "en+aunty", "en+robosoft", "en-us+f2", "en-us+m3", "en-gb-scotland+f3",
                "en-gb-x-rp+m3")
VAL_VOICES = ("en-gb-x-gbclan", "en+m6", "en+f5", "en-029+f3", "en+john")
TEST_VOICES = ("en-gb-x-gbcwmd", "en-us-nyc+f3", "en+m5", "en+f4", "en+klatt2", "en+linda", "en-us+f3", "en+grandpa")
SPEEDS_WPM = (130, 150, 175, 200, 230)
PITCHES = (20, 35, 50, 65, 80)
SPLITS = ("train", "val", "test")
_SYNTH_FORMAT = "espeak-raw-int16-v1"
_WORD_RE = re.compile(r"^[a-z][a-z' ]*$")


class SynthesisError(RuntimeError):
    """espeak-ng could not speak a word with a voice (e.g. an MBROLA voice that is not installed)."""


def default_cache_dir() -> Path:
    """``$EDGETUNE_CACHE/espeak`` or ``~/.cache/edgetune/espeak``."""
    root = os.environ.get("EDGETUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgetune")
    return Path(root) / "espeak"


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """espeak-ng's version line, e.g. ``eSpeak NG text-to-speech: 1.51 ...``; part of the cache key."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise UsageError("espeak-ng is not installed; it synthesises the keyword data. Install it with: "
                         "sudo apt-get install espeak-ng")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return out.stdout.strip().split("  Data at:")[0] or "unknown"


def parse_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A PCM16 mono WAV's bytes -> (float32 samples in [-1, 1], sample rate in Hz).

    espeak-ng writes to a pipe, so its header's data length is a placeholder; the data chunk is
    read to the end of the bytes.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthesisError(f"espeak-ng output is not a WAV file ({len(data)} bytes)")
    pos, rate, fmt = 12, None, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
            rate = fmt[2]
        elif chunk_id == b"data":
            if fmt is None or fmt[0] != 1 or fmt[1] != 1 or fmt[5] != 16:
                raise SynthesisError(f"espeak-ng WAV is not 16-bit mono PCM (fmt {fmt})")
            end = min(body + size, len(data))
            end -= (end - body) % 2
            samples = np.frombuffer(data[body:end], dtype="<i2").astype(np.float32) / 32768.0
            return samples, int(rate)
        pos = body + size + (size & 1)
    raise SynthesisError("espeak-ng WAV has no data chunk")


def _cache_key(word: str, voice: str, speed_wpm: int, pitch: int) -> str:
    key = json.dumps([_SYNTH_FORMAT, espeak_version(), word, voice, int(speed_wpm), int(pitch)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def synthesize(word: str, voice: str, speed_wpm: int, pitch: int, *, cache_dir: Path | None = None,
               sample_rate_hz: int = 16000) -> np.ndarray:
    """``word`` spoken by espeak-ng: float32 ``[n]`` at ``sample_rate_hz``, silence trimmed.

    ``voice`` is an espeak-ng voice (``en-us``, ``en+f3``, ...), ``speed_wpm`` words per minute,
    ``pitch`` 0..99. The raw 22.05 kHz rendering is cached under ``cache_dir`` (default
    :func:`default_cache_dir`).
    Raises :class:`SynthesisError` when espeak-ng fails or gives no sound.
    """
    if not _WORD_RE.match(word):
        raise ValueError(f"word is {word!r}; expected lower-case letters, spaces and apostrophes")
    if not 80 <= speed_wpm <= 450 or not 0 <= pitch <= 99:
        raise ValueError(f"speed_wpm {speed_wpm!r} / pitch {pitch!r}; expected 80..450 and 0..99")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{_cache_key(word, voice, speed_wpm, pitch)}.npy"
    if path.is_file():
        raw = np.load(path).astype(np.float32) / 32768.0
    else:
        raw = _run_espeak(word, voice, speed_wpm, pitch)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{id(raw)}.tmp.npy")
        np.save(tmp, np.round(raw * 32768.0).clip(-32768, 32767).astype(np.int16))
        os.replace(tmp, path)
    from edgetune.edge.audio.io import resample

    out = augment.trim_silence(resample(raw, ESPEAK_RATE_HZ, sample_rate_hz))
    if out.size == 0:
        raise SynthesisError(f"espeak-ng gave silence for {word!r} with voice {voice!r}")
    return out


def _run_espeak(word: str, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    espeak_version()  # a clear error when espeak-ng is missing
    cmd = ["espeak-ng", "-v", voice, "-s", str(int(speed_wpm)), "-p", str(int(pitch)), "--stdout", word]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SynthesisError(f"espeak-ng failed for {word!r} with voice {voice!r} (exit {proc.returncode}): "
                             f"{msg[0] if msg else 'no output'}")
    samples, rate = parse_wav(proc.stdout)
    if rate != ESPEAK_RATE_HZ:
        raise SynthesisError(f"espeak-ng wrote {rate} Hz; expected {ESPEAK_RATE_HZ}")
    return samples


@dataclass(frozen=True)
class SpeechDataConfig:
    """How the synthetic keyword dataset is made. Every field is part of the data's description.

    - ``words``: the keywords (labels are ``_background_`` then these, in this order).
    - ``train_voices`` / ``val_voices`` / ``test_voices``: disjoint espeak-ng voices per split.
    - ``renderings_per_voice``: (speed, pitch) settings drawn per word and voice.
    - ``train_copies``: augmented clips made from each training rendering (val/test: one).
    - ``background_ratio``: background clips per split, relative to one keyword's clip count.
    - ``snr_db``: range of the additive noise's SNR against the word; ``peak_dbfs``: word peak range.
    """

    words: tuple[str, ...] = DEFAULT_WORDS
    train_voices: tuple[str, ...] = TRAIN_VOICES
    val_voices: tuple[str, ...] = VAL_VOICES
    test_voices: tuple[str, ...] = TEST_VOICES
    speeds_wpm: tuple[int, ...] = SPEEDS_WPM
    pitches: tuple[int, ...] = PITCHES
    renderings_per_voice: int = 2
    train_copies: int = 2
    background_ratio: float = 2.0
    other_words: tuple[str, ...] = OTHER_WORDS
    snr_db: tuple[float, float] = (5.0, 40.0)
    peak_dbfs: tuple[float, float] = (-30.0, -1.0)
    sample_rate_hz: int = 16000
    clip_samples: int = 16000
    seed: int = 0
    cache_dir: str | None = None
    max_workers: int = 4

    def __post_init__(self) -> None:
        for name in ("words", "train_voices", "val_voices", "test_voices", "speeds_wpm", "pitches", "other_words",
                     "snr_db", "peak_dbfs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.words:
            raise ValueError("SpeechDataConfig.words is empty; expected at least one keyword")
        bad = [w for w in self.words if not _WORD_RE.match(w) or w == tensors.BACKGROUND_LABEL]
        if bad or len(set(self.words)) != len(self.words):
            raise ValueError(f"SpeechDataConfig.words has {bad or 'repeats'}; expected distinct lower-case words")
        splits = [set(self.train_voices), set(self.val_voices), set(self.test_voices)]
        if not all(splits):
            raise ValueError("SpeechDataConfig: every split needs at least one voice")
        shared = (splits[0] & splits[1]) | (splits[0] & splits[2]) | (splits[1] & splits[2])
        if shared:
            raise ValueError(f"SpeechDataConfig: voices {sorted(shared)} are in more than one split; "
                             "train, val and test voices must be disjoint")
        for name in ("renderings_per_voice", "train_copies", "max_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpeechDataConfig.{name} is {getattr(self, name)!r}; expected >= 1")
        if self.renderings_per_voice > len(self.speeds_wpm) * len(self.pitches):
            raise ValueError("SpeechDataConfig.renderings_per_voice exceeds the speed x pitch settings available")
        if self.background_ratio < 0:
            raise ValueError(f"SpeechDataConfig.background_ratio is {self.background_ratio!r}; expected >= 0")
        if self.clip_samples < self.sample_rate_hz // 4:
            raise ValueError(f"SpeechDataConfig.clip_samples is {self.clip_samples!r}; expected >= 0.25 s of samples")

    @property
    def labels(self) -> tuple[str, ...]:
        return (tensors.BACKGROUND_LABEL, *self.words)

    def voices(self, split: str) -> tuple[str, ...]:
        return {"train": self.train_voices, "val": self.val_voices, "test": self.test_voices}[split]

    def describe(self) -> dict:
        """A JSON-ready description for a bundle's provenance."""
        return {"source": f"espeak-ng synthesis ({espeak_version()})", "words": list(self.words),
                "voices": {s: list(self.voices(s)) for s in SPLITS}, "speeds_wpm": list(self.speeds_wpm),
                "pitches": list(self.pitches), "renderings_per_voice": self.renderings_per_voice,
                "train_copies": self.train_copies, "background_ratio": self.background_ratio,
                "snr_db": list(self.snr_db), "peak_dbfs": list(self.peak_dbfs), "seed": self.seed,
                "sample_rate_hz": self.sample_rate_hz, "clip_samples": self.clip_samples}


@dataclass
class ClipSet:
    """Clips of one split: ``audio`` float32 ``[n, clip_samples]``, ``labels`` int64 ``[n]``.

    ``labels`` index ``label_names``; ``voices[i]`` is the voice of clip ``i`` (``""`` for a
    background clip without speech).
    """

    audio: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    voices: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == i)) for i, name in enumerate(self.label_names)}


def _renderings(config: SpeechDataConfig, words: Sequence[str], voices: Iterable[str], per_voice: int,
                rng: np.random.Generator) -> list[tuple[str, str, int, int]]:
    settings = [(s, p) for s in config.speeds_wpm for p in config.pitches]
    out = []
    for voice in voices:
        for word in words:
            for i in rng.choice(len(settings), size=per_voice, replace=False):
                out.append((word, voice, *settings[int(i)]))
    return out


def _synthesize_all(jobs: list[tuple[str, str, int, int]], config: SpeechDataConfig,
                    progress: bool) -> dict[tuple, np.ndarray]:
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    unique = list(dict.fromkeys(jobs))

    def one(job):
        return job, synthesize(*job, cache_dir=cache_dir, sample_rate_hz=config.sample_rate_hz)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(unique), desc="espeak-ng", unit="clip", leave=False)
    done: dict[tuple, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=config.max_workers) as pool:
        for job, audio in pool.map(one, unique):
            done[job] = audio
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return done


def _keyword_clip(word_audio: np.ndarray, config: SpeechDataConfig, rng: np.random.Generator) -> np.ndarray:
    word = augment.with_peak_db(word_audio, rng.uniform(*config.peak_dbfs))
    clip = augment.place(word, config.clip_samples, rng)
    noise = augment.coloured_noise(config.clip_samples, rng.choice(list(augment.NOISE_COLOURS)), rng)
    clip = augment.mix_at_snr(clip, noise, rng.uniform(*config.snr_db), signal_rms=augment.rms(word))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def _background_clip(others: list[np.ndarray], config: SpeechDataConfig, rng: np.random.Generator) -> np.ndarray:
    """One background clip: noise, silence, hum, a non-keyword word or fragment, or babble."""
    n = config.clip_samples
    kind = rng.choice(["noise", "silence", "hum", "word", "babble"], p=[0.3, 0.1, 0.15, 0.25, 0.2])
    noise = augment.coloured_noise(n, rng.choice(list(augment.NOISE_COLOURS)), rng)
    if kind == "noise" or not others and kind in ("word", "babble"):
        return (noise * 10.0 ** (rng.uniform(-60.0, -15.0) / 20.0)).astype(np.float32)
    if kind == "silence":
        return (noise * (0.0 if rng.random() < 0.3 else 10.0 ** (rng.uniform(-90.0, -65.0) / 20.0))).astype(np.float32)
    if kind == "hum":
        clip = augment.hum(n, config.sample_rate_hz, rng) * 10.0 ** (rng.uniform(-50.0, -20.0) / 20.0)
        return (clip + noise * 10.0 ** (rng.uniform(-80.0, -50.0) / 20.0)).astype(np.float32)
    if kind == "word":
        sound = others[int(rng.integers(len(others)))]
        if rng.random() < 0.5:  # a fragment: 20-60 % of the word
            length = max(int(sound.size * rng.uniform(0.2, 0.6)), 1)
            start = int(rng.integers(0, sound.size - length + 1))
            sound = sound[start:start + length]
        clip = augment.place(augment.with_peak_db(sound, rng.uniform(*config.peak_dbfs)), n, rng)
        ref = augment.rms(sound) * 10.0 ** (rng.uniform(*config.peak_dbfs) / 20.0) / max(np.abs(sound).max(), 1e-9)
    else:  # babble: several other words on top of each other
        clip = np.zeros(n, dtype=np.float32)
        for _ in range(int(rng.integers(3, 7))):
            sound = others[int(rng.integers(len(others)))]
            clip += augment.place(augment.with_peak_db(sound, rng.uniform(-30.0, -10.0)), n, rng)
        ref = augment.rms(clip)
    clip = augment.mix_at_snr(clip, noise, rng.uniform(*config.snr_db), signal_rms=max(ref, 1e-6))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def synthesize_splits(config: SpeechDataConfig = SpeechDataConfig(), *, progress: bool = False,
                      splits: Sequence[str] = SPLITS) -> dict[str, ClipSet]:
    """Make the train / val / test clip sets of ``config`` (reproducible from ``config.seed``).

    Calls espeak-ng only for renderings not in the cache, in ``config.max_workers`` threads.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"splits {unknown} unknown; expected some of {list(SPLITS)}")
    others = [w for w in config.other_words if w not in config.words]
    plan: dict[str, tuple[list, list]] = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([config.seed, index, 0])
        words = _renderings(config, config.words, config.voices(split), config.renderings_per_voice, rng)
        other = []
        for voice in config.voices(split):  # each voice speaks a few non-keywords for the background
            chosen = rng.choice(len(others), size=min(6, len(others)), replace=False) if others else []
            other += _renderings(config, [others[int(i)] for i in chosen], [voice], 1, rng)
        plan[split] = (words, other)
    jobs = [job for split in splits for part in plan[split] for job in part]
    audio = _synthesize_all(jobs, config, progress)

    labels = config.labels
    result = {}
    for index, split in enumerate(SPLITS):
        if split not in splits:
            continue
        rng = np.random.default_rng([config.seed, index, 1])
        copies = config.train_copies if split == "train" else 1
        clips, ys, voices = [], [], []
        word_jobs, other_jobs = plan[split]
        for job in word_jobs:
            for _ in range(copies):
                clips.append(_keyword_clip(audio[job], config, rng))
                ys.append(labels.index(job[0]))
                voices.append(job[1])
        per_word = len(word_jobs) * copies // len(config.words)
        other_audio = [audio[job] for job in other_jobs]
        for _ in range(int(round(config.background_ratio * per_word))):
            clips.append(_background_clip(other_audio, config, rng))
            ys.append(0)
            voices.append("")
        result[split] = ClipSet(audio=np.stack(clips), labels=np.asarray(ys, dtype=np.int64), label_names=labels,
                                voices=tuple(voices))
        log.info("%s: %d clips, %d voices", split, len(result[split]), len(config.voices(split)))
    return result


def write_dataset_folder(out_dir: Path, config: SpeechDataConfig = SpeechDataConfig(), *,
                         progress: bool = False) -> dict[str, dict[str, int]]:
    """Write the dataset as ``out_dir/<split>/<label>/<n>_<voice>.wav`` (16-bit PCM, mono).

    The same layout a user's own data has (a folder per label), so ``evaluate`` and training
    from folders read it the same way. Returns the clip count per split and label.
    """
    from edgetune.edge.audio.io import import_soundfile

    sf = import_soundfile()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir} is not empty; choose a new folder for the dataset")
    counts: dict[str, dict[str, int]] = {}
    for split, clips in synthesize_splits(config, progress=progress).items():
        for name in clips.label_names:
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
        for i, (clip, label, voice) in enumerate(zip(clips.audio, clips.labels, clips.voices)):
            tag = re.sub(r"[^A-Za-z0-9-]+", "_", voice) or "none"
            sf.write(str(out_dir / split / clips.label_names[label] / f"{i:05d}_{tag}.wav"), clip,
                     config.sample_rate_hz, subtype="PCM_16")
        counts[split] = clips.counts()
    (out_dir / "dataset.json").write_text(json.dumps(config.describe(), indent=2) + "\n")
    return counts
