"""Audio files to float32 mono samples in [-1, 1] at the bundle's sample rate.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG, MP3, AIFF, ...), several channels
are averaged to mono, and another sample rate is converted with soxr. Every failure raises
:class:`AudioFileError` with the file's name: unreadable, truncated, empty, or holding NaN/Inf.

A clip is exactly ``clip_samples`` long (:func:`fit_clip`): a shorter recording is centred in
zeros; a longer one gives the ``clip_samples`` window with the most energy, so the word in a
long recording is kept and the silence around it dropped. Training and evaluation should use
the same rule (:func:`load_clip`) so the device sees clips the way the head was fitted on them.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)

#: File name suffixes treated as audio in a labelled folder (lower case).
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".w64", ".rf64",
                            ".caf", ".opus"})

# A WAV header's data length that streaming writers leave as a placeholder (not truncation).
_PLACEHOLDER_LENGTHS = {0, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FFFF000}
_WAV_DATA_MISMATCH = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioFileError(UsageError):
    """An audio file cannot be used. The message names the file and the reason."""


def import_soundfile():
    """The soundfile module, or :class:`UsageError` naming the extra to install."""
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is in the [edge] extra
        raise missing_extra("soundfile", "edge") from None
    return soundfile


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """float32 [N] at ``from_hz`` -> float32 [M] at ``to_hz`` (soxr, high quality)."""
    if from_hz == to_hz:
        return np.asarray(samples, dtype=np.float32)
    try:
        import soxr
    except ImportError:  # pragma: no cover - soxr is in the [edge] extra
        raise missing_extra("soxr", "edge") from None
    return soxr.resample(np.asarray(samples, dtype=np.float32), from_hz, to_hz).astype(np.float32, copy=False)


def to_mono(frames: np.ndarray) -> np.ndarray:
    """float [N, channels] -> float32 [N], the mean of the channels."""
    frames = np.asarray(frames, dtype=np.float32)
    return frames[:, 0].copy() if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)


def read_audio(path: str | os.PathLike[str], rate_hz: int) -> np.ndarray:
    """The whole file as float32 [N] mono samples in [-1, 1] at ``rate_hz``.

    Raises :class:`AudioFileError` naming the file when it is missing, unreadable, truncated,
    empty or holds NaN/Inf samples.
    """
    sf = import_soundfile()
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    try:
        with sf.SoundFile(str(path)) as fh:
            declared = fh.frames
            file_rate = int(fh.samplerate)
            _check_wav_length(path, fh)
            frames = fh.read(dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "") or "libsndfile could not decode it"
        raise AudioFileError(f"{path}: unreadable or truncated audio ({reason})") from None
    if frames.shape[0] < declared:
        raise AudioFileError(f"{path}: truncated: header declares {declared} frames, only {frames.shape[0]} read")
    if frames.shape[0] == 0:
        raise AudioFileError(f"{path}: empty (no samples)")
    if not np.isfinite(frames).all():
        bad = int((~np.isfinite(frames)).sum())
        raise AudioFileError(f"{path}: {bad} samples are NaN or Inf")
    mono = resample(to_mono(frames), file_rate, rate_hz)
    return np.clip(mono, -1.0, 1.0, out=mono)


def _check_wav_length(path: Path, fh) -> None:
    """libsndfile reads a truncated WAV without complaint; its header log says so."""
    if fh.format not in ("WAV", "WAVEX", "RF64", "W64"):
        return
    match = _WAV_DATA_MISMATCH.search(fh.extra_info or "")
    if match and int(match.group(1)) not in _PLACEHOLDER_LENGTHS and int(match.group(2)) < int(match.group(1)):
        raise AudioFileError(f"{path}: truncated: the header declares {match.group(1)} data bytes, "
                             f"the file holds {match.group(2)}")


def fit_clip(samples: np.ndarray, clip_samples: int) -> np.ndarray:
    """float32 [N] -> float32 [clip_samples]: centre a short recording in zeros; from a long one
    take the window of ``clip_samples`` with the most energy (the earliest if several tie)."""
    x = np.asarray(samples, dtype=np.float32)
    n = x.shape[0]
    if n == clip_samples:
        return x.copy()
    if n < clip_samples:
        out = np.zeros(clip_samples, dtype=np.float32)
        start = (clip_samples - n) // 2
        out[start:start + n] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    window = energy[clip_samples:] - energy[:-clip_samples]  # energy of x[i:i+clip] for each start i
    start = int(np.argmax(window))
    return x[start:start + clip_samples].copy()


def load_clip(path: str | os.PathLike[str], rate_hz: int, clip_samples: int) -> np.ndarray:
    """One clip float32 [clip_samples] from an audio file, at ``rate_hz`` (see :func:`fit_clip`)."""
    return fit_clip(read_audio(path, rate_hz), clip_samples)


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a labelled folder, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class LabelledFiles:
    """Audio files of a folder-per-label tree: ``items`` (label, path) pairs, ``skipped`` files."""

    root: Path
    items: tuple[tuple[str, Path], ...]
    skipped: tuple[SkippedFile, ...]

    def __iter__(self) -> Iterator[tuple[str, Path]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels present, sorted."""
        return tuple(sorted({label for label, _ in self.items}))


def iter_labelled_folder(data_dir: str | os.PathLike[str]) -> LabelledFiles:
    """Audio files under ``data_dir/<label>/`` (searched recursively), in sorted order.

    Hidden files and folders are ignored; files that are not audio (by suffix, see
    :data:`AUDIO_SUFFIXES`) or that lie directly in ``data_dir`` are listed in ``skipped``. Whether
    an audio file can be decoded is found out when it is read, not here.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist or is not a folder; "
                         "expected DIR/<label>/<file>.wav, one subfolder per label")
    items: list[tuple[str, Path]] = []
    skipped: list[SkippedFile] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            skipped.append(SkippedFile(str(entry), "not inside a label folder"))
            continue
        if not entry.is_dir():
            continue
        for path in sorted(entry.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(entry).parts) or not path.is_file():
                continue
            if path.suffix.lower() in AUDIO_SUFFIXES:
                items.append((entry.name, path))
            else:
                skipped.append(SkippedFile(str(path), f"not an audio file (suffix {path.suffix or 'none'!r})"))
    if not items:
        raise UsageError(f"data folder {root} holds no audio files in label folders; "
                         "expected DIR/<label>/<file>.wav, one subfolder per label")
    for s in skipped:
        log.warning("skipping %s: %s", s.path, s.reason)
    return LabelledFiles(root=root, items=tuple(items), skipped=tuple(skipped))
