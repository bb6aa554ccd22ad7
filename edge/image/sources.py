"""Camera sources as URIs: the same code reads a live camera, a stream, a video file and a folder.

=====================================  ===========================================================
URI                                    source
=====================================  ===========================================================
``v4l2:0``, ``v4l2:/dev/video0``       a V4L2 camera (USB, or a CSI camera exposed through V4L2);
                                       a bare ``/dev/videoN`` too
``rtsp://HOST[:PORT]/PATH``            an RTSP stream (an IP camera); ``rtsps://`` too
``gst:PIPELINE``                       a GStreamer pipeline ending in ``appsink``, e.g. a Jetson CSI
                                       camera: ``gst:nvarguscamerasrc sensor-id=0 !
                                       video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1
                                       ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert !
                                       video/x-raw,format=BGR ! appsink drop=true max-buffers=1``
``video:FILE``                         a video file; a plain path ending in a video extension too
``images:DIR``                         a folder of PNG/JPEG images, in name order (zero-pad the
                                       numbers: ``img10`` sorts before ``img9``); a plain directory
                                       path too
=====================================  ===========================================================

Everything goes through OpenCV (``cv2``, the ``camera`` extra), imported only when a source opens.
Each source is an iterable of :class:`Frame`: uint8 [H, W, 3] RGB, converted from OpenCV's BGR
once, here, with the frame's stream time and index.

**Live sources** (V4L2, RTSP, GStreamer) are read by a capture thread that keeps only the newest
frame (:class:`~.capture.LiveCapture`), so a slow consumer never sees a growing lag; the source
yields that newest frame at most ``rate_hz`` times a second, sleeping in between. Stream time is
monotonic seconds since the source was opened. A camera that goes away, or cannot be opened at
start (a Jetson may boot before its camera is ready), is reported and retried with backoff; it
never raises out of the iterator and never ends it: only ``close()`` does.

**Offline sources** (a video file, a folder) are read as fast as the consumer pulls, and only
frames at least ``1 / rate_hz`` apart in stream time are yielded (the others are counted as
``skipped_by_rate``), so a file gives the same frames however fast the machine is. Stream time is
the frame's container timestamp (a video) or ``index / folder_fps`` (a folder). A bad URI, a
missing file or folder, an empty folder or a file OpenCV cannot open raises
:class:`~edgetune.errors.UsageError` at open time.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgetune.errors import UsageError

from .capture import (CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_MSEC, CameraStats, CaptureFactory,
                      LiveCapture, VideoCaptureLike, bgr_to_rgb, finite_positive, frame_problem, import_cv2,
                      is_frame, note_bad_frame, opencv_factory)

__all__ = ["CameraSource", "CameraStats", "Frame", "ImageFolderSource", "LiveCameraSource", "VideoFileSource",
           "FORMS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "open_camera"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv",
                              ".flv", ".mjpeg", ".mjpg", ".h264", ".h265", ".hevc"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
#: The accepted forms, for error messages.
FORMS = ("v4l2:INDEX or v4l2:/dev/videoN (a V4L2 camera)",
         "rtsp://HOST/PATH (an RTSP stream)",
         "gst:PIPELINE ending in appsink (GStreamer, e.g. a Jetson CSI camera via nvarguscamerasrc)",
         "video:FILE or a path ending in .mp4, .avi, .mkv, .mov, ... (a video file)",
         "images:DIR or a directory path (PNG/JPEG images, in name order)")
_SCHEMES = ("v4l2", "rtsp", "rtsps", "gst", "video", "images")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/]*@")  # up to the authority's last @
_DEV_VIDEO = re.compile(r"^/dev/video\d+$")
#: Used for stream time when a video file gives neither timestamps nor a frame rate.
FALLBACK_VIDEO_FPS = 30.0
#: Slack in the offline rate filter: container timestamps are often rounded to whole milliseconds
#: (a 30 fps file: 0, 33, 67 ms), which must not read as "closer than 1/30 s".
RATE_SLACK_S = 1e-3
#: Seconds the end of a live iteration waits for the capture thread to release the camera (it may be
#: inside a driver call that blocks for longer, e.g. a V4L2 read on an unplugged device; it then
#: releases the camera as soon as that call returns, on its own).
JOIN_TIMEOUT_S = 1.0


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame: ``image`` uint8 [H, W, 3] in RGB order; ``offset_s`` its stream time in
    seconds (see the module docstring); ``index`` its number in the source, 0-based (live: the
    capture count, across reconnections, so gaps show dropped frames; a file or folder: its
    position). Compared by identity (``eq=False``): comparing arrays with ``==`` is ambiguous."""

    image: np.ndarray
    offset_s: float
    index: int


class CameraSource:
    """Base class: iterate for :class:`Frame`; ``close()`` (from any thread) ends the iteration."""

    live = False

    def __init__(self, uri: str, rate_hz: float) -> None:
        self.uri = uri
        self.rate_hz = float(rate_hz)
        self.stats = CameraStats()
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Stop: a loop over the source ends promptly (a live one also while it waits for a frame,
        for its rate or for a camera to come back)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiveCameraSource(CameraSource):
    """A V4L2 camera, RTSP stream or GStreamer pipeline: the newest frame, at most ``rate_hz`` a second.

    The capture thread starts with the first iteration (not at open, so frames are not captured
    and dropped while the model loads); a source is iterated once.
    """

    live = True

    def __init__(self, uri: str, target: Any, factory: CaptureFactory, *, rate_hz: float, backoff_initial_s: float,
                 backoff_max_s: float) -> None:
        super().__init__(uri, rate_hz)
        self.target = target
        self._opened_s = time.monotonic()
        self._capture = LiveCapture(uri, target, factory, self.stats, self._closed,
                                    backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s)

    def clock_s(self) -> float:
        """Stream time now: monotonic seconds since the source was opened (a frame's age is
        ``clock_s() - frame.offset_s``)."""
        return time.monotonic() - self._opened_s

    def __iter__(self) -> Iterator[Frame]:
        if self._closed.is_set():
            return
        self._capture.start()
        period_s = 1.0 / self.rate_hz
        due_s = time.monotonic()
        last_seq = -1
        try:
            while True:
                wait_s = due_s - time.monotonic()
                if (wait_s > 0 and self._closed.wait(wait_s)) or self._closed.is_set():
                    break
                captured = self._capture.newest_after(last_seq)
                if captured is None:  # closed
                    break
                last_seq = captured.seq
                self.stats.frames_yielded += 1
                yield Frame(captured.rgb, captured.capture_s - self._opened_s, captured.seq)
                # The next frame is due one period after this one was, or now if the consumer took
                # longer than that: never a burst to catch up.
                due_s = max(due_s + period_s, time.monotonic())
        finally:
            self._closed.set()  # a consumer that stops iterating is done with the camera
            self._capture.wake()
            self._capture.join(JOIN_TIMEOUT_S)

    def close(self) -> None:
        super().close()
        self._capture.wake()


class _OfflineSource(CameraSource):
    """A finite source read as fast as the consumer pulls, keeping frames >= 1 / rate_hz apart."""

    def _frames(self) -> Iterator[tuple[int, float, Callable[[], tuple[Any, str]]]]:  # pragma: no cover
        """(index, offset_s, read) per frame; ``read()`` gives (BGR image or None, why it is None)."""
        raise NotImplementedError

    def _release(self) -> None:
        """Let go of what the source holds (called once iteration ends)."""

    _started = False

    def __iter__(self) -> Iterator[Frame]:
        self._started = True
        min_spacing_s = 1.0 / self.rate_hz - min(RATE_SLACK_S, 0.1 / self.rate_hz)
        last_s: float | None = None
        try:
            for index, offset_s, read in self._frames():
                if self._closed.is_set():
                    break
                if last_s is not None and offset_s - last_s < min_spacing_s:
                    self.stats.skipped_by_rate += 1
                    continue
                image, why = read()
                if not is_frame(image):
                    note_bad_frame(self.stats, self.uri, f"#{index} at {offset_s:.3f} s", why or frame_problem(image))
                    continue
                self.stats.frames_captured += 1
                self.stats.frames_yielded += 1
                last_s = offset_s
                yield Frame(bgr_to_rgb(image), offset_s, index)
        finally:
            self._release()

    def close(self) -> None:
        super().close()
        # Releasing while another thread is inside read() is unsafe in OpenCV: once iteration has
        # started, the iterator releases what the source holds as it ends.
        if not self._started:
            self._release()


class VideoFileSource(_OfflineSource):
    """A video file through ``cv2.VideoCapture``; stream time from the container's timestamps."""

    def __init__(self, uri: str, path: Path, factory: CaptureFactory, *, rate_hz: float) -> None:
        super().__init__(uri, rate_hz)
        self.path = path
        self._lock = threading.Lock()
        try:
            capture = factory(str(path))
            opened = bool(capture.isOpened())
        except Exception as exc:  # a backend may raise anything; this is a start-up error
            raise UsageError(f"camera source {uri!r}: {path} cannot be opened as a video: "
                             f"{type(exc).__name__}: {exc}") from None
        if not opened:
            _quiet_release(capture)
            raise UsageError(f"camera source {uri!r}: {path} cannot be opened as a video (not a video file, "
                             "damaged, or a codec this OpenCV build lacks)")
        self._capture: VideoCaptureLike | None = capture
        self.fps = _positive_or_zero(capture.get(CAP_PROP_FPS))
        self.declared_frames = int(_positive_or_zero(capture.get(CAP_PROP_FRAME_COUNT)))
        log.info("camera %s: video %s, %s fps, %s frames", uri, path, f"{self.fps:g}" if self.fps else "unknown",
                 self.declared_frames or "unknown")

    def _frames(self) -> Iterator[tuple[int, float, Callable[[], tuple[Any, str]]]]:
        capture = self._capture
        if capture is None:  # closed before iterating, or iterated already
            return
        index, last_s = 0, 0.0
        fallback_warned = False
        while not self._closed.is_set():
            try:
                ok, image = capture.read()
                position_ms = capture.get(CAP_PROP_POS_MSEC)
            except Exception as exc:  # a backend may raise anything; end this file, not the daemon
                self.stats.video_ended_early += 1
                log.error("camera %s: reading frame %d raised %s: %s; the video ends here", self.uri, index,
                          type(exc).__name__, exc)
                return
            if not ok:
                self._check_end(index)
                return
            position_s = _positive_or_zero(position_ms) / 1000.0
            if index == 0 or position_s > last_s:
                offset_s = position_s
            else:
                fps = self.fps or FALLBACK_VIDEO_FPS
                if not self.fps and not fallback_warned:
                    fallback_warned = True
                    log.warning("camera %s: the video gives no timestamps and no frame rate; assuming %g fps",
                                self.uri, FALLBACK_VIDEO_FPS)
                offset_s = index / fps
            offset_s = max(offset_s, last_s)
            last_s = offset_s
            yield index, offset_s, (lambda image=image: (image, ""))
            index += 1

    def _check_end(self, frames_read: int) -> None:
        declared = self.declared_frames
        # Declared counts are estimates in some containers (from duration x fps): allow a little slack.
        if declared > 0 and frames_read + max(2, 0.02 * declared) < declared:
            self.stats.video_ended_early += 1
            log.warning("camera %s: the video ended after %d of its %d frames (truncated or damaged file)",
                        self.uri, frames_read, declared)
        else:
            log.info("camera %s: end of video after %d frames", self.uri, frames_read)

    def _release(self) -> None:
        with self._lock:
            capture, self._capture = self._capture, None
        if capture is not None:
            _quiet_release(capture)


class ImageFolderSource(_OfflineSource):
    """PNG/JPEG images of a folder in name order, ``folder_fps`` images per second of stream time."""

    def __init__(self, uri: str, folder: Path, *, rate_hz: float, folder_fps: float) -> None:
        super().__init__(uri, rate_hz)
        self.folder = folder
        self.folder_fps = float(folder_fps)
        try:
            self.paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                                key=lambda p: p.name)
        except OSError as exc:
            raise UsageError(f"camera source {uri!r}: folder {folder} cannot be listed: "
                             f"{exc.strerror or exc}") from None
        if not self.paths:
            raise UsageError(f"camera source {uri!r}: folder {folder} has no images; expected PNG or JPEG files "
                             f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self._cv2 = import_cv2()
        log.info("camera %s: %d images at %g per second of stream time", uri, len(self.paths), self.folder_fps)

    def _frames(self) -> Iterator[tuple[int, float, Callable[[], tuple[Any, str]]]]:
        for index, path in enumerate(self.paths):
            yield index, index / self.folder_fps, (lambda path=path: self._decode(path))

    def _decode(self, path: Path) -> tuple[Any, str]:
        cv2 = self._cv2
        try:
            data = path.read_bytes()
        except OSError as exc:
            return None, f"{path.name}: {exc.strerror or exc}"
        if not data:
            return None, f"{path.name}: empty file"
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            return None, f"{path.name}: {exc}"
        return image, "" if image is not None else f"{path.name}: not a readable PNG/JPEG image"


def _positive_or_zero(value: Any) -> float:
    """A capture property as a finite number > 0, or 0.0 (OpenCV's "unknown")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _quiet_release(capture: VideoCaptureLike) -> None:
    try:
        capture.release()
    except Exception as exc:  # nothing to do about a failing release
        log.debug("release() raised %s: %s", type(exc).__name__, exc)


def _forms() -> str:
    return "; ".join(FORMS)


def redact(uri: str) -> str:
    """``uri`` with the password of a ``scheme://user:password@host`` URL replaced by ``***``: the
    source's ``uri`` goes into logs and telemetry, the password only to the capture."""
    return _CREDENTIALS.sub(r"\1***@", uri)


def _parse(uri: str) -> tuple[str, Any]:
    """(kind, target) for a URI: kind one of v4l2, rtsp, gst, video, images. Raises UsageError."""
    shown = redact(uri)
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else None
    rest = match.group(2) if match else ""
    if scheme in ("rtsp", "rtsps"):
        if not rest.startswith("//") or len(rest) <= 2:
            raise UsageError(f"camera source {shown!r}: expected {scheme}://HOST[:PORT]/PATH")
        return "rtsp", uri
    if scheme == "v4l2":
        spec = rest.strip()
        if spec.isdigit():
            return "v4l2", int(spec)
        if spec.startswith("/dev/"):
            return "v4l2", spec
        raise UsageError(f"camera source {uri!r}: expected v4l2:INDEX (v4l2:0) or v4l2:/dev/videoN")
    if scheme == "gst":
        pipeline = rest.strip()
        last = pipeline.rsplit("!", 1)[-1].strip()
        if not last.startswith("appsink"):
            raise UsageError(f"camera source {uri!r}: a GStreamer pipeline must end in appsink, e.g. "
                             "gst:v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink")
        return "gst", pipeline
    if scheme == "video":
        return "video", _existing_file(uri, rest)
    if scheme == "images":
        return "images", _existing_folder(uri, rest)
    if _DEV_VIDEO.match(uri):
        return "v4l2", uri
    if scheme is None or len(scheme) == 1 or Path(uri).exists():  # a plain path (or a drive letter)
        path = Path(uri).expanduser()
        if path.is_dir():
            return "images", path
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return "video", _existing_file(uri, uri)
        if path.exists():
            raise UsageError(f"camera source {uri!r}: {path} is neither a folder nor a video file "
                             f"({', '.join(sorted(VIDEO_EXTENSIONS))}); write video:{uri} if it is a video. "
                             f"Accepted forms: {_forms()}")
        raise UsageError(f"camera source {uri!r}: no such file or folder. Accepted forms: {_forms()}")
    hint = difflib.get_close_matches(scheme, _SCHEMES, n=1)
    did_you_mean = f"did you mean '{hint[0]}:'? " if hint else ""
    raise UsageError(f"camera source {shown!r}: unknown scheme '{scheme}:'; {did_you_mean}accepted forms: {_forms()}")


def _existing_file(uri: str, spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(f"camera source {uri!r}: {path}: no such video file. Accepted forms: {_forms()}")
    return path


def _existing_folder(uri: str, spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UsageError(f"camera source {uri!r}: {path}: no such folder. Accepted forms: {_forms()}")
    return path


def _check_positive(name: str, value: Any, what: str) -> None:
    if not finite_positive(value):
        raise UsageError(f"camera {name} is {value!r}; expected a positive number ({what})")


def open_camera(uri: str, *, rate_hz: float = 5.0, folder_fps: float = 1.0, backoff_initial_s: float = 0.5,
                backoff_max_s: float = 10.0, capture_factory: CaptureFactory | None = None) -> CameraSource:
    """The camera source a URI names (see the module docstring), yielding :class:`Frame` s.

    rate_hz: frames yielded per second (live: of wall time; a file or folder: of stream time).
    folder_fps: images per second of stream time in a folder source. backoff_initial_s,
    backoff_max_s: a live camera that goes away is reopened after ``backoff_initial_s``, doubling
    (with jitter) up to ``backoff_max_s``. capture_factory: opens a capture with
    ``cv2.VideoCapture``'s interface from the target (a V4L2 index or path, the URL, the pipeline,
    the video path); default OpenCV with the backend the URI needs. Folders always use OpenCV.

    Raises :class:`~edgetune.errors.UsageError` for a bad URI or setting, a missing or unreadable
    file, an empty folder, or OpenCV missing. A live camera that cannot be opened now is not an
    error: it is reported, counted as an outage and retried, because a device may boot before
    its camera (or its RTSP server) is up.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise UsageError(f"camera source is {uri!r}; expected one of: {_forms()}")
    uri = uri.strip()
    _check_positive("rate_hz", rate_hz, "frames per second")
    _check_positive("folder_fps", folder_fps, "images per second of stream time")
    _check_positive("backoff_initial_s", backoff_initial_s, "seconds")
    _check_positive("backoff_max_s", backoff_max_s, "seconds")
    if backoff_max_s < backoff_initial_s:
        raise UsageError(f"camera backoff_max_s is {backoff_max_s!r}; expected at least backoff_initial_s "
                         f"({backoff_initial_s!r})")
    kind, target = _parse(uri)
    uri = redact(uri)  # from here on, for logs and telemetry; ``target`` keeps the password
    if kind == "images":
        return ImageFolderSource(uri, target, rate_hz=rate_hz, folder_fps=folder_fps)
    factory = capture_factory or opencv_factory(kind, uri)
    if kind == "video":
        return VideoFileSource(uri, target, factory, rate_hz=rate_hz)
    return LiveCameraSource(uri, target, factory, rate_hz=rate_hz, backoff_initial_s=backoff_initial_s,
                            backoff_max_s=backoff_max_s)
