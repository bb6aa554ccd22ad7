"""Audio files to float32 mono samples in [-1, 1] at the bundle's sample rate.

Reading goes through soundfile (libsndfile: WAV, FLAC, OGG, MP3, AIFF, ...), several channels
are averaged to mono, and another sample rate is converted with soxr. Every failure raises
:class:`AudioFileError` with the file's name: unreadable, truncated, empty, or holding NaN/Inf.

A clip is exactly ``clip_samples`` long (:func:`fit_clip`): a shorter recording is centred in
zeros; a longer one gives the ``clip_samples`` window with the most energy, so the word in a
long recording is kept and the silence around it dropped. Training and evaluation should use
the same rule (:func:`load_clip`) so the device sees clips the way the head was fitted on them.

Memory stays bounded whatever the file: samples are read :data:`READ_BLOCK_FRAMES` frames at a
time and mixed to mono as they come, and a clip file (enrolment, evaluation, training from a
folder) may be at most :data:`MAX_CLIP_FILE_S` seconds long. A longer file is refused from its
header alone, before any sample is decoded (:class:`AudioTooLongError`, naming the limit); the
folder readers skip it and list it with that reason. A two-hour recording is not one example of
a label: cut it into clips of a few seconds (``sox long.wav clip.wav trim 0 2 : newfile :
restart``). ``edge run`` streams files of any length (:mod:`.sources`).
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


#: The longest file read as one clip, in seconds (enrolment, evaluation, training from a folder).
MAX_CLIP_FILE_S = 60.0
#: Frames decoded at a time: while reading, memory holds this many frames of every channel.
READ_BLOCK_FRAMES = 1 << 16


class AudioFileError(UsageError):
    """An audio file cannot be used. The message names the file and the reason."""


class AudioTooLongError(AudioFileError):
    """A file is longer than the limit its reader takes (:data:`MAX_CLIP_FILE_S` for a clip)."""


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


def _too_long(path: Path, seconds: float, limit_s: float) -> AudioTooLongError:
    return AudioTooLongError(f"{path}: {seconds:.1f} s long; a clip file may be at most {limit_s:g} s (one clip is "
                             "taken from each file): cut it into clips of a few seconds")


def read_audio(path: str | os.PathLike[str], rate_hz: int, *, max_duration_s: float | None = None) -> np.ndarray:
    """The whole file as float32 [N] mono samples in [-1, 1] at ``rate_hz``.

    Decoded :data:`READ_BLOCK_FRAMES` frames at a time, each block mixed to mono at once, so
    memory holds the mono samples and one block, never the file's channels. ``max_duration_s``:
    refuse a longer file (:class:`AudioTooLongError`) from its header, before decoding anything
    (and stop, should the header understate the length).

    Raises :class:`AudioFileError` naming the file when it is missing, unreadable, truncated,
    empty or holds NaN/Inf samples.
    """
    sf = import_soundfile()
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    blocks: list[np.ndarray] = []
    n_read = bad = 0
    try:
        with sf.SoundFile(str(path)) as fh:
            declared = fh.frames
            file_rate = int(fh.samplerate)
            _check_wav_length(path, fh)
            limit_frames = None if max_duration_s is None else int(max_duration_s * file_rate)
            if limit_frames is not None and declared > limit_frames:
                raise _too_long(path, declared / file_rate, max_duration_s)
            while True:
                frames = fh.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if frames.shape[0] == 0:
                    break
                n_read += frames.shape[0]
                if limit_frames is not None and n_read > limit_frames:
                    raise _too_long(path, n_read / file_rate, max_duration_s)
                finite = np.isfinite(frames)
                if not finite.all():
                    bad += int((~finite).sum())
                    continue
                blocks.append(to_mono(frames))
    except sf.SoundFileError as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "") or "libsndfile could not decode it"
        raise AudioFileError(f"{path}: unreadable or truncated audio ({reason})") from None
    if n_read < declared:
        raise AudioFileError(f"{path}: truncated: header declares {declared} frames, only {n_read} read")
    if n_read == 0:
        raise AudioFileError(f"{path}: empty (no samples)")
    if bad:
        raise AudioFileError(f"{path}: {bad} samples are NaN or Inf")
    mono = resample(blocks[0] if len(blocks) == 1 else np.concatenate(blocks), file_rate, rate_hz)
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


def load_clip(path: str | os.PathLike[str], rate_hz: int, clip_samples: int, *,
              max_duration_s: float = MAX_CLIP_FILE_S) -> np.ndarray:
    """One clip float32 [clip_samples] from an audio file, at ``rate_hz`` (see :func:`fit_clip`).

    A file longer than ``max_duration_s`` seconds is refused with :class:`AudioTooLongError`
    before it is decoded, so memory is bounded by the limit, not by the file.
    """
    return fit_clip(read_audio(path, rate_hz, max_duration_s=max_duration_s), clip_samples)


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
