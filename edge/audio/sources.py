"""Audio sources as URIs: the same code reads a file and a live sensor.

==================  ==========================================================================
URI                 source
==================  ==========================================================================
``wav:PATH``        an audio file (any format soundfile reads; ``file:PATH`` or a plain path too)
``-``               raw signed 16-bit little-endian mono PCM on stdin
                    (``arecord -f S16_LE -r 16000 -c 1 | edgetune edge run --audio -``)
``mic:[DEVICE]``    a microphone through sounddevice (PortAudio); DEVICE is an index or a name;
                    a bare ``mic`` or ``alsa`` is the default capture device
``alsa:[DEVICE]``   the same, spelt the ALSA way (``alsa:hw:1,0``, ``alsa:default``)
==================  ==========================================================================

Each source yields float32 [n] chunks of any size ``n`` at the bundle's rate ``rate_hz``,
resampling with soxr when a file or device runs at another rate. Raw PCM has no header: its rate
is what the caller declares (``raw_rate_hz``, default the bundle's rate), never guessed. Chunks
with NaN or Inf samples are counted in :class:`SourceStats` and those samples replaced by
zeros, so the stream keeps its timing and nothing downstream crashes.
"""

from __future__ import annotations

import difflib
import logging
import os
import queue
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from edgetune.errors import UsageError, missing_extra

from .io import AudioFileError, import_soundfile, to_mono

log = logging.getLogger(__name__)

#: Samples per chunk a file or stdin source reads at a time, at the source's own rate.
DEFAULT_CHUNK_SAMPLES = 1600
SCHEMES = {
    "wav": "wav:PATH (an audio file)",
    "file": "file:PATH (an audio file)",
    "mic": "mic:[DEVICE] (a microphone via sounddevice)",
    "alsa": "alsa:[DEVICE] (an ALSA capture device via sounddevice)",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
_PCM16_SCALE = 1.0 / 32768.0


@dataclass
class SourceStats:
    """Counters a source keeps while it is read."""

    chunks: int = 0
    samples: int = 0  # at the bundle's rate
    nonfinite_chunks: int = 0
    nonfinite_samples: int = 0
    dropped_chunks: int = 0  # a live source whose consumer fell behind
    read_errors: int = 0

    def errors(self) -> dict[str, int]:
        """The non-zero error counters, for the metrics message."""
        out = {"nonfinite_chunks": self.nonfinite_chunks, "dropped_chunks": self.dropped_chunks,
               "read_errors": self.read_errors}
        return {k: v for k, v in out.items() if v}


class AudioSource:
    """Base class: iterate for float32 [n] chunks at ``rate_hz``; ``close()`` ends a live source."""

    live = False

    def __init__(self, uri: str, rate_hz: int) -> None:
        self.uri = uri
        self.rate_hz = int(rate_hz)
        self.stats = SourceStats()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self._chunks():
            if chunk.size == 0:
                continue
            yield self._sanitise(chunk)
            if self._closed.is_set():
                break

    def _chunks(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sanitise(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if not chunk.flags.writeable:
            chunk = chunk.copy()
        finite = np.isfinite(chunk)
        if not finite.all():
            bad = int((~finite).sum())
            self.stats.nonfinite_chunks += 1
            self.stats.nonfinite_samples += bad
            if self.stats.nonfinite_chunks <= 5 or self.stats.nonfinite_chunks % 100 == 0:  # no log flood
                log.warning("%s: %d NaN/Inf samples in a chunk at %.2f s replaced by zeros (%d such chunks so far)",
                            self.uri, bad, self.stats.samples / self.rate_hz, self.stats.nonfinite_chunks)
            chunk = np.where(finite, chunk, np.float32(0.0))
        np.clip(chunk, -1.0, 1.0, out=chunk)
        self.stats.chunks += 1
        self.stats.samples += chunk.size
        return chunk

    def close(self) -> None:
        """Stop reading; a loop over the source ends after the current chunk."""
        self._closed.set()

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Resampler:
    """Streaming soxr resampler (identical output however the input is chunked), or a no-op."""

    def __init__(self, from_hz: int, to_hz: int) -> None:
        self._stream = None
        if from_hz != to_hz:
            try:
                import soxr
            except ImportError:  # pragma: no cover - soxr is in the [edge] extra
                raise missing_extra("soxr", "edge") from None
            self._stream = soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return x
        return self._stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)


class FileSource(AudioSource):
    """An audio file read in chunks of ``chunk_samples`` (at the file's own rate)."""

    def __init__(self, uri: str, path: str | os.PathLike[str], rate_hz: int,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> None:
        super().__init__(uri, rate_hz)
        sf = import_soundfile()
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioFileError(f"{self.path}: no such file (audio source {uri!r})")
        try:
            self._fh = sf.SoundFile(str(self.path))
        except sf.SoundFileError as exc:
            raise AudioFileError(f"{self.path}: unreadable audio ({exc})") from None
        self.file_rate_hz = int(self._fh.samplerate)
        self._chunk = int(chunk_samples)
        self._reading = False
        self._resample = _Resampler(self.file_rate_hz, self.rate_hz)
        if self.file_rate_hz != self.rate_hz:
            log.info("%s: resampling %d Hz -> %d Hz", self.path, self.file_rate_hz, self.rate_hz)

    def _chunks(self) -> Iterator[np.ndarray]:
        sf = import_soundfile()
        self._reading = True
        try:
            while not self._closed.is_set():
                try:
                    frames = self._fh.read(self._chunk, dtype="float32", always_2d=True)
                except (sf.SoundFileError, RuntimeError) as exc:
                    self.stats.read_errors += 1
                    log.error("%s: read error at %.2f s, ending the stream: %s", self.path,
                              self.stats.samples / self.rate_hz, exc)
                    break
                if frames.shape[0] == 0:
                    break
                yield self._resample(to_mono(frames))
            yield self._resample(np.zeros(0, dtype=np.float32), last=True)
        finally:
            self._fh.close()

    def close(self) -> None:
        super().close()
        if not self._reading:  # never iterated: nothing else will close the file
            self._fh.close()


class RawPcmSource(AudioSource):
    """Raw s16le mono PCM from a binary stream (stdin by default) at a declared rate."""

    live = True

    def __init__(self, uri: str, rate_hz: int, *, raw_rate_hz: int | None = None, stream: BinaryIO | None = None,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES) -> None:
        super().__init__(uri, rate_hz)
        self.raw_rate_hz = int(raw_rate_hz or rate_hz)
        if self.raw_rate_hz < 1000:
            raise UsageError(f"raw PCM rate is {self.raw_rate_hz} Hz; expected the stream's sample rate in Hz, "
                             "for example 16000")
        self._stream = stream if stream is not None else sys.stdin.buffer
        self._chunk_bytes = 2 * int(chunk_samples)
        self._resample = _Resampler(self.raw_rate_hz, self.rate_hz)

    def _chunks(self) -> Iterator[np.ndarray]:
        read = getattr(self._stream, "read1", self._stream.read)
        pending = b""
        while not self._closed.is_set():
            try:
                data = read(self._chunk_bytes)
            except OSError as exc:
                self.stats.read_errors += 1
                log.error("%s: read error, ending the stream: %s", self.uri, exc)
                break
            if not data:
                break
            data = pending + data
            usable = len(data) - len(data) % 2
            pending = data[usable:]
            if usable:
                yield self._resample(np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) * _PCM16_SCALE)
        if pending:
            log.warning("%s: stream ended in the middle of a sample; 1 byte dropped", self.uri)
        yield self._resample(np.zeros(0, dtype=np.float32), last=True)


class MicSource(AudioSource):
    """A capture device through sounddevice, opened at the bundle's rate (or the device's own
    default rate, resampled, when it refuses that). Keeps at most ``queue_chunks`` chunks
    waiting; when the consumer falls further behind the newest chunk is dropped and counted."""

    live = True

    def __init__(self, uri: str, device: str | int | None, rate_hz: int,
                 chunk_samples: int = DEFAULT_CHUNK_SAMPLES, queue_chunks: int = 50) -> None:
        super().__init__(uri, rate_hz)
        try:
            import sounddevice as sd
        except (ImportError, OSError):  # OSError: the PortAudio library itself is missing
            raise missing_extra("sounddevice", "mic") from None
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_chunks)
        device_rate = rate_hz
        try:
            sd.check_input_settings(device=device, channels=1, dtype="float32", samplerate=rate_hz)
        except ValueError:
            info = sd.query_devices(device, "input")
            device_rate = int(info["default_samplerate"])
        except sd.PortAudioError as exc:
            raise UsageError(f"audio source {uri!r}: cannot open capture device {device!r}: {exc}; "
                             "list devices with: python -m sounddevice") from None
        self._resample = _Resampler(device_rate, rate_hz)
        try:
            self._sd_stream = sd.InputStream(device=device, channels=1, dtype="float32", samplerate=device_rate,
                                             blocksize=int(chunk_samples * device_rate / rate_hz),
                                             callback=self._callback)
            self._sd_stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise UsageError(f"audio source {uri!r}: cannot open capture device {device!r}: {exc}; "
                             "list devices with: python -m sounddevice") from None
        log.info("%s: capturing at %d Hz%s", uri, device_rate,
                 "" if device_rate == rate_hz else f", resampled to {rate_hz} Hz")

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        if status:
            log.debug("%s: %s", self.uri, status)
        try:
            self._queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.stats.dropped_chunks += 1

    def _chunks(self) -> Iterator[np.ndarray]:
        while not self._closed.is_set():
            try:
                chunk = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            yield self._resample(chunk)

    def close(self) -> None:
        super().close()
        stream = getattr(self, "_sd_stream", None)
        if stream is not None:
            stream.stop()
            stream.close()


def _device(spec: str) -> str | int | None:
    spec = spec.strip()
    if not spec:
        return None
    return int(spec) if spec.isdigit() else spec


def open_source(uri: str, rate_hz: int, *, chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
                raw_rate_hz: int | None = None, stdin: BinaryIO | None = None) -> AudioSource:
    """The source a URI names (see the module docstring), yielding chunks at ``rate_hz``.

    Raises :class:`~edgetune.errors.UsageError` for an unknown scheme (with the closest known
    one), a missing file, or a missing optional package.
    """
    if not isinstance(uri, str) or not uri:
        raise UsageError("audio source is empty; expected wav:PATH, -, mic:[DEVICE] or alsa:[DEVICE]")
    if chunk_samples < 1:
        raise UsageError(f"chunk_samples is {chunk_samples}; expected a positive number of samples")
    if uri == "-":
        return RawPcmSource(uri, rate_hz, raw_rate_hz=raw_rate_hz, stream=stdin, chunk_samples=chunk_samples)
    if raw_rate_hz is not None:
        log.warning("raw_rate_hz=%s applies only to raw PCM on stdin ('-'); ignored for %s", raw_rate_hz, uri)
    if uri.lower() in ("mic", "alsa"):  # a bare scheme: the default capture device
        uri += ":"
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else None
    if scheme in ("wav", "file"):
        return FileSource(uri, match.group(2), rate_hz, chunk_samples)
    if scheme in ("mic", "alsa"):
        return MicSource(uri, _device(match.group(2)), rate_hz, chunk_samples)
    if Path(uri).exists() or scheme is None:
        return FileSource(uri, uri, rate_hz, chunk_samples)
    hint = difflib.get_close_matches(scheme, list(SCHEMES), n=1)
    did_you_mean = f"did you mean '{hint[0]}:'? " if hint else ""
    raise UsageError(f"audio source {uri!r}: unknown scheme '{scheme}:'; {did_you_mean}"
                     f"expected one of: {', '.join(SCHEMES.values())}, or - (raw s16le PCM on stdin)")
