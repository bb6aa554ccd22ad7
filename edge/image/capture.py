"""The capture side of the camera sources: OpenCV, frame checks, and the live capture thread.

Every camera, stream, pipeline and video file is read through one interface, OpenCV's
``cv2.VideoCapture`` (``isOpened()``, ``read() -> (ok, bgr)``, ``get(prop)``, ``release()``),
described by :class:`VideoCaptureLike` so that tests can inject a fake in its place.

A live camera is read by :class:`LiveCapture`, a thread that reads as fast as the camera delivers
and keeps only the newest frame: a consumer slower than the camera always gets the newest frame,
never a queue of old ones, and each frame overwritten before it was taken is counted
(``dropped_frames``). A camera that goes away (``read()`` fails or raises, the device is
unplugged, an RTSP stream ends) is reported once per outage, counted (``camera_outages``) and
reopened with exponential backoff and jitter until it comes back (``camera_reconnects``); the
thread never raises and ``close()`` ends it, also while it waits between attempts.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from edgetune.backoff import JITTER, JitteredBackoff
from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)

# OpenCV's property ids (the values of cv2.CAP_PROP_*; a test checks them against cv2), so that a
# fake capture needs no cv2.
CAP_PROP_POS_MSEC = 0
CAP_PROP_FPS = 5
CAP_PROP_FRAME_COUNT = 7

#: Consecutive unusable frames (ok but empty or the wrong shape) after which a live camera is
#: treated as gone and reopened: a driver that keeps returning garbage would otherwise spin.
MAX_BAD_FRAMES_IN_A_ROW = 30
#: Open and read timeouts for network streams (OpenCV's FFmpeg backend), so that a stream that
#: stops sending ends a read instead of blocking the capture thread for ever.
STREAM_TIMEOUT_MS = 10_000
#: Each backoff delay is drawn uniformly from [(1 - BACKOFF_JITTER) * d, d], d the doubling delay,
#: so that cameras (or devices) that failed together do not all retry at the same instant.
BACKOFF_JITTER = JITTER


class VideoCaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's spelling

    def read(self) -> tuple[bool, Any]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


#: Opens a capture: called with the V4L2 index (int) or device path, the RTSP URL, the GStreamer
#: pipeline or the video file path; called again for every reconnection attempt.
CaptureFactory = Callable[[Any], VideoCaptureLike]


def import_cv2() -> Any:
    """The ``cv2`` module, or a UsageError that says how to install it."""
    try:
        import cv2
    except ImportError:
        raise missing_extra("OpenCV (cv2)", "camera") from None
    return cv2


def opencv_factory(kind: str, uri: str) -> CaptureFactory:
    """The ``cv2.VideoCapture`` opener for a source ``kind`` (v4l2, rtsp, gst, video).

    Raises UsageError now, at open time, when this OpenCV build lacks the backend the kind needs
    (the opencv-python wheels from PyPI have no GStreamer; a Jetson's JetPack OpenCV has).
    """
    cv2 = import_cv2()
    api = {"v4l2": cv2.CAP_V4L2, "rtsp": cv2.CAP_FFMPEG, "gst": cv2.CAP_GSTREAMER, "video": cv2.CAP_ANY}[kind]
    has_backend = getattr(getattr(cv2, "videoio_registry", None), "hasBackend", None)
    if api != cv2.CAP_ANY and has_backend is not None and not has_backend(api):
        name = {"v4l2": "V4L2", "rtsp": "FFmpeg", "gst": "GStreamer"}[kind]
        hint = (" (the opencv-python wheels from PyPI are built without it; on a Jetson use JetPack's "
                "OpenCV, e.g. apt install python3-opencv, in place of the wheel)" if kind == "gst" else "")
        raise UsageError(f"camera source {uri!r}: this OpenCV {cv2.__version__} has no {name} video backend{hint}")
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
              STREAM_TIMEOUT_MS] if kind == "rtsp" else []

    def open_capture(target: Any) -> VideoCaptureLike:
        return cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)

    return open_capture


def is_frame(image: Any) -> bool:
    """True when ``image`` is a usable frame: a uint8 [H, W, 3] array with H, W >= 1."""
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] >= 1 and image.shape[1] >= 1)


def frame_problem(image: Any) -> str:
    """Why ``image`` is not a usable frame, for the log."""
    if image is None:
        return "no image (empty read or undecodable data)"
    if not isinstance(image, np.ndarray):
        return f"a {type(image).__name__}, not an array"
    return f"{image.dtype} {list(image.shape)}, expected uint8 [H, W, 3]"


def bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] BGR (OpenCV's order) -> a contiguous RGB copy. The one conversion of a frame."""
    return np.ascontiguousarray(bgr[:, :, ::-1])


def backoff_delays(initial_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Seconds to wait before each reconnection attempt: ``initial_s`` doubling up to ``max_s``,
    each drawn from [(1 - BACKOFF_JITTER) * d, d] for the doubling delay d (endless;
    :class:`edgetune.backoff.JitteredBackoff`, the policy every program uses)."""
    return iter(JitteredBackoff(initial_s, max_s, rng))


@dataclass
class CameraStats:
    """Counters a camera source keeps while it is read.

    frames_captured: usable frames read from a live camera, or from a file or folder at the rate
    (frames a file skips by rate are not checked, and a folder's are not even read). frames_yielded:
    frames the consumer got. dropped_frames: live frames overwritten by a newer one before the consumer took
    them. bad_frames: reads that gave no usable image (empty, undecodable, wrong shape or dtype).
    camera_outages: times a live camera went away or could not be opened (one per outage,
    however many attempts it took). camera_reconnects: outages that ended with a usable frame.
    skipped_by_rate: file or folder frames closer than 1 / rate_hz in stream time to the last one
    yielded. video_ended_early: a video file that stopped before its declared frame count
    (truncated, unreadable) or whose read raised.
    """

    frames_captured: int = 0
    frames_yielded: int = 0
    dropped_frames: int = 0
    bad_frames: int = 0
    camera_outages: int = 0
    camera_reconnects: int = 0
    skipped_by_rate: int = 0
    video_ended_early: int = 0

    def errors(self) -> dict[str, int]:
        """The non-zero error counters, for the metrics message."""
        out = {"dropped_frames": self.dropped_frames, "bad_frames": self.bad_frames,
               "camera_outages": self.camera_outages, "camera_reconnects": self.camera_reconnects,
               "skipped_by_rate": self.skipped_by_rate, "video_ended_early": self.video_ended_early}
        return {k: v for k, v in out.items() if v}


def note_bad_frame(stats: CameraStats, uri: str, where: str, problem: str) -> None:
    """Count a bad frame; log the first and then every 100th, so a broken camera cannot flood the log."""
    stats.bad_frames += 1
    if stats.bad_frames == 1 or stats.bad_frames % 100 == 0:
        log.warning("camera %s: bad frame %s skipped: %s (%d bad frames so far)", uri, where, problem,
                    stats.bad_frames)


@dataclass(frozen=True)
class Captured:
    """One usable live frame: capture sequence number ``seq`` (0-based, across reconnections),
    ``capture_s`` (time.monotonic() when read() returned) and the RGB image."""

    seq: int
    capture_s: float
    rgb: np.ndarray


class LiveCapture:
    """A thread that reads a live camera and keeps only its newest frame, reopening it when it goes away.

    ``factory(target)`` opens the camera; it is called again for each reconnection attempt.
    ``closed`` is the source's close event: setting it (and calling :meth:`wake`) ends the thread
    and any :meth:`newest_after` call promptly. The capture object is released by this thread
    only: OpenCV's ``release()`` must not run while another thread is inside ``read()``.
    """

    #: Longest a waiting consumer sleeps before rechecking ``closed`` (in case a wake-up was missed).
    POLL_S = 0.1

    def __init__(self, uri: str, target: Any, factory: CaptureFactory, stats: CameraStats, closed: threading.Event,
                 *, backoff_initial_s: float, backoff_max_s: float) -> None:
        self.uri = uri
        self._target = target
        self._factory = factory
        self._stats = stats
        self._closed = closed
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._cond = threading.Condition()
        self._newest: Captured | None = None
        self._newest_taken = True
        self._seq = 0
        self._out_since: float | None = None  # monotonic start of the current outage
        self._attempts = 0  # failed attempts in the current outage
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the capture thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"camera {self.uri[:40]}", daemon=True)
            self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the thread to end (after close); True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def wake(self) -> None:
        """Wake a consumer waiting in :meth:`newest_after` (called by close(); never blocks, so a signal
        handler may call it)."""
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    def newest_after(self, seq: int) -> Captured | None:
        """The newest frame with a sequence number above ``seq``, waiting for one; None once closed."""
        with self._cond:
            while not self._closed.is_set():
                newest = self._newest
                if newest is not None and newest.seq > seq:
                    self._newest_taken = True
                    return newest
                self._cond.wait(self.POLL_S)
        return None

    # -- the capture thread --------------------------------------------------------------------

    def _run(self) -> None:
        delays: Iterator[float] = iter(())
        while not self._closed.is_set():
            capture, reason = self._open()
            if capture is not None:
                try:
                    reason = self._read_until_failure(capture)
                finally:
                    self._release(capture)
            if self._closed.is_set():
                break
            if self._out_since is None:
                delays = backoff_delays(*self._backoff)
            delay = next(delays)
            self._outage(reason, delay)
            if self._closed.wait(delay):
                break
        log.debug("camera %s: capture thread ended", self.uri)

    def _open(self) -> tuple[VideoCaptureLike | None, str]:
        try:
            capture = self._factory(self._target)
        except Exception as exc:  # a driver or backend may raise anything; the daemon must go on
            return None, f"opening it raised {type(exc).__name__}: {exc}"
        try:
            opened = bool(capture.isOpened())
        except Exception as exc:  # as above
            opened, reason = False, f"isOpened() raised {type(exc).__name__}: {exc}"
        else:
            reason = "it cannot be opened (not connected, busy, or the stream is not there)"
        if not opened:
            self._release(capture)
            return None, reason
        return capture, ""

    def _read_until_failure(self, capture: VideoCaptureLike) -> str:
        """Read frames until a read fails (returns why) or the source is closed (returns "")."""
        bad_in_a_row = 0
        while not self._closed.is_set():
            try:
                ok, image = capture.read()
            except Exception as exc:  # a driver or backend may raise anything; the daemon must go on
                return f"read() raised {type(exc).__name__}: {exc}"
            if self._closed.is_set():
                return ""
            if not ok:
                return "read() failed (device unplugged, or the stream ended)"
            if not is_frame(image):
                note_bad_frame(self._stats, self.uri, f"#{self._seq}", frame_problem(image))
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW:
                    return f"{bad_in_a_row} unusable frames in a row"
                continue
            bad_in_a_row = 0
            self._store(image)
        return ""

    def _store(self, bgr: np.ndarray) -> None:
        captured = Captured(self._seq, time.monotonic(), bgr_to_rgb(bgr))
        self._seq += 1
        self._stats.frames_captured += 1
        if self._out_since is not None:
            self._back()
        with self._cond:
            if not self._newest_taken:
                self._stats.dropped_frames += 1
            self._newest, self._newest_taken = captured, False
            self._cond.notify_all()

    def _outage(self, reason: str, delay_s: float) -> None:
        self._attempts += 1
        if self._out_since is not None:  # already reported: one log line per outage
            log.debug("camera %s: attempt %d failed: %s; next in %.3g s", self.uri, self._attempts, reason, delay_s)
            return
        self._out_since = time.monotonic()
        self._stats.camera_outages += 1
        what = "went away" if self._seq else "is not available"
        log.warning("camera %s %s: %s; retrying in %.3g s, then with backoff up to %g s, until it is back",
                    self.uri, what, reason, delay_s, self._backoff[1])

    def _back(self) -> None:
        out_since = self._out_since if self._out_since is not None else time.monotonic()
        self._stats.camera_reconnects += 1
        log.warning("camera %s is back after %.1f s (%d failed attempts to read or open it)", self.uri,
                    time.monotonic() - out_since, self._attempts)
        self._out_since, self._attempts = None, 0

    def _release(self, capture: VideoCaptureLike) -> None:
        try:
            capture.release()
        except Exception as exc:  # releasing a vanished device may fail too; nothing to do about it
            log.debug("camera %s: release() raised %s: %s", self.uri, type(exc).__name__, exc)


def finite_positive(value: float) -> bool:
    """True for a finite number > 0 (not a bool)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and value > 0)
