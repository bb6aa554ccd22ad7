"""Camera sources (``edge/image/sources.py``, ``edge/image/capture.py``).

No camera exists on the machines that run these tests, so live-source behaviour (newest frame
only, drop counting, outages, backoff, reconnection, close) is tested through ``capture_factory``
with fakes that have OpenCV's ``VideoCapture`` interface, each named for what it stands in for.
File and folder sources are tested with real files written here by OpenCV (PNG, JPEG, MJPG AVI).

Waits on another thread use :func:`wait_until`, a hang guard that fails a test which would
otherwise block; no test asserts how fast anything is.
"""

from __future__ import annotations

import logging
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from edgetune.edge.image import capture as capture_module
from edgetune.edge.image.capture import CameraStats, backoff_delays
from edgetune.edge.image.sources import Frame, open_camera
from edgetune.errors import UsageError

cv2 = pytest.importorskip("cv2")

CAPTURE_LOG = "edgetune.edge.image.capture"
GUARD_S = 10.0  # hang guard for waits on another thread; never reached when the code works


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail (not hang) after GUARD_S."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def bgr(value: int, shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    """A uint8 [H, W, 3] BGR frame whose blue channel is ``value`` (red 0, green 7)."""
    image = np.zeros((*shape, 3), dtype=np.uint8)
    image[..., 0], image[..., 1] = value, 7
    return image


def blue_of(frame: Frame) -> int:
    """The frame's blue value (RGB order: channel 2)."""
    return int(frame.image[0, 0, 2])


# -- fakes with OpenCV's VideoCapture interface -------------------------------------------------


class ScriptedFakeCamera:
    """Stands in for a camera whose frames the test releases one by one: ``read()`` returns the
    next scripted ``(ok, image)`` pair, waiting for the test to push it (so what the source keeps
    can be checked without timing). ``(False, None)`` is a failed read (the camera went away)."""

    def __init__(self) -> None:
        self._script: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self.released = threading.Event()

    def push(self, image: Any, ok: bool = True) -> None:
        self._script.put((ok, image))

    def unplug(self) -> None:
        self.push(None, ok=False)

    def __call__(self, target: Any) -> "ScriptedFakeCamera":  # the factory: always this camera
        self.target = target
        return self

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's spelling
        return True

    def read(self) -> tuple[bool, Any]:
        return self._script.get(timeout=GUARD_S)

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released.set()


class _FakeCapture:
    """One opening of a :class:`FlakyFakeCamera`: ``frames`` frames (None = endless) at about
    ``fps``, then read() fails; or not opened at all."""

    def __init__(self, camera: "FlakyFakeCamera", opened: bool, frames: int | None, fps: float) -> None:
        self.camera, self.opened, self.frames_left, self.period_s = camera, opened, frames, 1.0 / fps
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self) -> tuple[bool, Any]:
        if not self.opened or self.frames_left == 0:
            return False, None
        if self.camera.read_error is not None:
            error, self.camera.read_error = self.camera.read_error, None
            raise error
        time.sleep(self.period_s)
        if self.frames_left is not None:
            self.frames_left -= 1
        self.camera.delivered += 1
        return True, bgr(self.camera.delivered % 256)

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


class FlakyFakeCamera:
    """Stands in for a USB camera that is unplugged and plugged back: opening number ``i``
    (0-based) follows ``plan[i]`` (the last entry repeats): ``"absent"`` = isOpened() is False
    (not plugged in), ``"raise"`` = opening raises OSError, an int n = n frames then read()
    fails (unplugged), ``"endless"`` = frames until closed."""

    def __init__(self, plan: list[Any], fps: float = 500.0) -> None:
        self.plan, self.fps = plan, fps
        self.captures: list[_FakeCapture] = []
        self.delivered = 0
        self.read_error: Exception | None = None

    def __call__(self, target: Any) -> _FakeCapture:
        step = self.plan[min(len(self.captures), len(self.plan) - 1)]
        if step == "raise":
            self.captures.append(_FakeCapture(self, opened=False, frames=0, fps=self.fps))
            raise OSError("VIDIOC_STREAMON: No such device")
        capture = _FakeCapture(self, opened=step != "absent", frames=None if step == "endless" else
                               (step if isinstance(step, int) else 0), fps=self.fps)
        self.captures.append(capture)
        return capture

    @property
    def opens(self) -> int:
        return len(self.captures)


def consume_in_thread(source, until: Callable[[list[Frame]], bool] | None = None) -> tuple[threading.Thread, list]:
    """Iterate ``source`` on a thread, collecting frames; stop early once ``until(frames)``."""
    frames: list[Frame] = []

    def run() -> None:
        for frame in source:
            frames.append(frame)
            if until is not None and until(frames):
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, frames


# -- live sources ----------------------------------------------------------------------------------


def test_live_source_yields_the_newest_frame_and_counts_the_overwritten_ones():
    camera = ScriptedFakeCamera()
    source = open_camera("v4l2:0", rate_hz=1000, capture_factory=camera)
    frames = iter(source)
    camera.push(bgr(0))
    first = next(frames)

    for value in range(1, 6):  # five frames arrive while the consumer is busy
        camera.push(bgr(value))
    wait_until(lambda: source.stats.frames_captured == 6, "six frames captured")
    second = next(frames)

    assert (first.index, blue_of(first)) == (0, 0)
    assert (second.index, blue_of(second)) == (5, 5)  # the newest, not the next in line
    assert source.stats.dropped_frames == 4  # frames 1-4 were overwritten before use
    assert source.stats.errors() == {"dropped_frames": 4}
    source.close()
    camera.unplug()
    assert list(frames) == []
    assert camera.released.is_set()


def test_live_frames_are_rgb_with_offsets_since_open():
    camera = ScriptedFakeCamera()
    source = open_camera("v4l2:/dev/video3", rate_hz=1000, capture_factory=camera)
    frames = iter(source)
    camera.push(bgr(200))
    frame = next(frames)
    age_s = source.clock_s() - frame.offset_s

    assert camera.target == "/dev/video3"
    assert source.live
    assert frame.image.dtype == np.uint8 and frame.image.shape == (4, 6, 3) and frame.image.flags.c_contiguous
    assert frame.image[0, 0].tolist() == [0, 7, 200]  # BGR (200, 7, 0) in RGB order
    assert 0.0 <= frame.offset_s <= source.clock_s() and age_s >= 0.0
    source.close()
    camera.unplug()
    list(frames)


def test_unusable_live_frames_are_counted_and_skipped():
    camera = ScriptedFakeCamera()
    source = open_camera("rtsp://camera.local/stream", rate_hz=1000, capture_factory=camera)
    frames = iter(source)
    camera.push(None)  # an empty read
    camera.push(np.zeros((4, 6), dtype=np.uint8))  # grey, not [H, W, 3]
    camera.push(np.zeros((4, 6, 3), dtype=np.float32))  # wrong dtype
    camera.push(np.zeros((0, 6, 3), dtype=np.uint8))  # empty
    camera.push(bgr(9))
    frame = next(frames)

    assert camera.target == "rtsp://camera.local/stream"
    assert blue_of(frame) == 9 and frame.index == 0
    assert source.stats.bad_frames == 4
    assert source.stats.camera_outages == 0
    source.close()
    camera.unplug()
    list(frames)


def test_unplugged_camera_is_reported_once_retried_and_reconnected(caplog):
    caplog.set_level(logging.DEBUG, logger=CAPTURE_LOG)
    camera = FlakyFakeCamera([3, "absent", "absent", "absent", "endless"])
    source = open_camera("v4l2:0", rate_hz=1000, backoff_initial_s=0.001, backoff_max_s=0.004,
                         capture_factory=camera)
    thread, frames = consume_in_thread(source, until=lambda got: sum(f.index >= 3 for f in got) >= 3)
    thread.join(GUARD_S)

    assert not thread.is_alive()
    assert source.stats.camera_outages == 1
    assert source.stats.camera_reconnects == 1
    assert camera.opens == 5  # the first opening, three failed attempts, the one that worked
    assert all(c.released for c in camera.captures[:-1])
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))  # strictly increasing across the reconnection
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == CAPTURE_LOG]
    assert sum("went away" in m for m in warnings) == 1  # one report for the outage, not one per attempt
    assert sum("is back after" in m for m in warnings) == 1
    wait_until(lambda: camera.captures[-1].released, "the last capture released")


def test_camera_missing_at_start_is_retried_until_it_appears():
    camera = FlakyFakeCamera(["absent", "raise", "absent", "endless"])
    source = open_camera("gst:nvarguscamerasrc ! nvvidconv ! appsink", rate_hz=1000, backoff_initial_s=0.001,
                         backoff_max_s=0.002, capture_factory=camera)
    thread, frames = consume_in_thread(source, until=lambda got: len(got) >= 2)
    thread.join(GUARD_S)

    assert not thread.is_alive() and len(frames) == 2
    assert camera.opens == 4
    assert source.stats.camera_outages == 1 and source.stats.camera_reconnects == 1


def test_a_read_that_raises_is_an_outage_not_a_crash():
    camera = FlakyFakeCamera(["endless"])
    camera.read_error = RuntimeError("VIDIOC_DQBUF: No such device")
    source = open_camera("v4l2:1", rate_hz=1000, backoff_initial_s=0.001, capture_factory=camera)
    thread, frames = consume_in_thread(source, until=lambda got: len(got) >= 2)
    thread.join(GUARD_S)  # an exception escaping the capture thread would fail the test (warnings are errors)

    assert not thread.is_alive() and len(frames) == 2
    assert camera.opens == 2
    assert source.stats.camera_outages == 1 and source.stats.camera_reconnects == 1


def test_close_during_backoff_ends_iteration_before_the_next_attempt():
    camera = FlakyFakeCamera(["absent"])
    source = open_camera("v4l2:0", backoff_initial_s=60.0, backoff_max_s=60.0, capture_factory=camera)
    thread, frames = consume_in_thread(source)
    wait_until(lambda: source.stats.camera_outages == 1, "the outage reported")

    source.close()
    thread.join(GUARD_S)

    assert not thread.is_alive() and frames == []
    assert source._capture.join(GUARD_S)  # the capture thread ended too, not after its 30-60 s wait
    assert camera.opens == 1


def test_close_while_waiting_for_the_rate_ends_iteration():
    camera = FlakyFakeCamera(["endless"], fps=200)
    source = open_camera("v4l2:0", rate_hz=0.01, capture_factory=camera)  # one frame every 100 s
    thread, frames = consume_in_thread(source)
    wait_until(lambda: len(frames) == 1, "the first frame")

    source.close()
    thread.join(GUARD_S)

    assert not thread.is_alive() and len(frames) == 1
    assert source._capture.join(GUARD_S)
    assert camera.captures[0].released


def test_live_source_yields_at_most_rate_hz_frames_per_second():
    camera = FlakyFakeCamera(["endless"], fps=1000)  # far faster than the rate
    source = open_camera("v4l2:0", rate_hz=40, capture_factory=camera)
    started = time.monotonic()
    frames = []
    with source:
        for frame in source:
            frames.append(frame)
            if time.monotonic() - started >= 0.3:
                break
    elapsed_s = time.monotonic() - started

    assert len(frames) <= 40 * elapsed_s + 1  # a slow machine gives fewer, never more
    assert source.stats.dropped_frames > 0  # the frames in between were captured and overwritten
    assert [f.index for f in frames] == sorted({f.index for f in frames})


def test_backoff_doubles_to_the_cap_with_jitter():
    delays = backoff_delays(0.5, 10.0, random.Random(1))
    drawn = [next(delays) for _ in range(10)]
    nominal = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0, 10.0]

    for got, full in zip(drawn, nominal):
        assert (1 - capture_module.BACKOFF_JITTER) * full <= got <= full
    assert len(set(drawn[5:])) == 5  # capped delays still differ: cameras do not retry in lockstep


# -- folders of images -------------------------------------------------------------------------------


def write_image(path: Path, value: int) -> None:
    assert cv2.imwrite(str(path), bgr(value, shape=(8, 10)))


def test_folder_yields_images_in_name_order_as_rgb_at_folder_fps(tmp_path):
    write_image(tmp_path / "frame_002.png", 30)
    write_image(tmp_path / "frame_000.png", 10)
    write_image(tmp_path / "frame_001.JPG", 20)
    (tmp_path / "notes.txt").write_text("not an image")

    with open_camera(str(tmp_path), rate_hz=100, folder_fps=4.0) as source:
        frames = list(source)

    assert not source.live
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.offset_s for f in frames] == [0.0, 0.25, 0.5]
    assert [blue_of(f) for f in (frames[0], frames[2])] == [10, 30]  # PNG: exact
    assert abs(blue_of(frames[1]) - 20) <= 3  # JPEG: lossy
    assert frames[0].image.shape == (8, 10, 3) and frames[0].image[0, 0].tolist() == [0, 7, 10]
    assert source.stats.errors() == {}


def test_corrupt_image_in_a_folder_is_counted_and_skipped(tmp_path):
    write_image(tmp_path / "a.png", 1)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    (tmp_path / "c.jpg").write_bytes(b"")
    write_image(tmp_path / "d.png", 4)

    source = open_camera(f"images:{tmp_path}", rate_hz=100)
    frames = list(source)

    assert [(f.index, blue_of(f)) for f in frames] == [(0, 1), (3, 4)]
    assert source.stats.errors() == {"bad_frames": 2}


def test_folder_frames_closer_than_the_rate_are_skipped(tmp_path):
    for i in range(10):
        write_image(tmp_path / f"{i:03d}.png", i)

    source = open_camera(f"images:{tmp_path}", rate_hz=5, folder_fps=10)
    frames = list(source)

    assert [f.index for f in frames] == [0, 2, 4, 6, 8]
    assert source.stats.skipped_by_rate == 5


def test_image_deleted_after_open_is_a_bad_frame(tmp_path):
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    source = open_camera(str(tmp_path), rate_hz=100)
    (tmp_path / "b.png").unlink()

    assert [blue_of(f) for f in source] == [1]
    assert source.stats.bad_frames == 1


def test_empty_or_missing_folder_is_a_usage_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")

    with pytest.raises(UsageError, match="has no images"):
        open_camera(f"images:{tmp_path}")
    with pytest.raises(UsageError, match="no such folder") as missing:
        open_camera(f"images:{tmp_path / 'nope'}")
    assert "nope" in str(missing.value) and "v4l2:INDEX" in str(missing.value)


# -- video files ---------------------------------------------------------------------------------------


def write_video(path: Path, frames: int, fps: float = 10.0, size: tuple[int, int] = (32, 24),
                noise: bool = False) -> Path:
    """An MJPG AVI (OpenCV's own writer) whose frame i is a flat grey of value 4 * i, or random
    pixels with ``noise`` (large frames: a file the reader cannot have buffered whole)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "this OpenCV cannot write MJPG AVI"
    rng = np.random.default_rng(0)
    for i in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noise
                     else np.full((size[1], size[0], 3), 4 * i, dtype=np.uint8))
    writer.release()
    return path


def test_video_frames_carry_their_container_timestamps(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=12, fps=10.0)

    source = open_camera(f"video:{path}", rate_hz=100)
    frames = list(source)

    assert not source.live
    assert [f.index for f in frames] == list(range(12))
    assert [round(f.offset_s, 6) for f in frames] == [round(i / 10.0, 6) for i in range(12)]
    assert frames[0].image.shape == (24, 32, 3)
    assert all(abs(int(f.image[5, 5, 0]) - 4 * f.index) <= 3 for f in frames)
    assert source.stats.errors() == {}


def test_video_is_thinned_to_the_rate_in_stream_time(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=20, fps=10.0)

    source = open_camera(str(path), rate_hz=5)  # a plain path with a video extension
    frames = list(source)

    assert [f.index for f in frames] == list(range(0, 20, 2))
    assert source.stats.errors() == {"skipped_by_rate": 10}


def test_a_file_gives_the_same_frames_however_slow_the_consumer(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=15, fps=30.0)

    fast = [f.index for f in open_camera(str(path), rate_hz=10)]
    slow = []
    for frame in open_camera(str(path), rate_hz=10):
        time.sleep(0.02)  # a consumer slower than the rate: a live camera would drop frames here
        slow.append(frame.index)

    assert fast == slow == [0, 3, 6, 9, 12]


def test_video_truncated_mid_run_ends_and_is_reported(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=60, fps=30.0, size=(64, 48), noise=True)
    source = open_camera(str(path), rate_hz=1000)
    frames = iter(source)
    got = [next(frames) for _ in range(5)]

    with path.open("r+b") as fh:  # the file is cut short while it is being read
        fh.truncate(path.stat().st_size * 4 // 10)
    got += list(frames)

    assert 5 <= len(got) < 60
    assert source.stats.video_ended_early == 1


def test_video_deleted_mid_run_ends_without_raising(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=20, fps=10.0)
    source = open_camera(str(path), rate_hz=1000)
    frames = iter(source)
    got = [next(frames) for _ in range(3)]

    path.unlink()
    got += list(frames)  # an open file stays readable on POSIX; either way the stream ends cleanly

    assert 3 <= len(got) <= 20
    assert [f.index for f in got] == list(range(len(got)))


def test_close_ends_a_video_between_frames(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=20)
    source = open_camera(str(path), rate_hz=1000)
    got = []
    for frame in source:
        got.append(frame)
        if len(got) == 4:
            source.close()

    assert len(got) == 4


def test_a_file_that_is_not_a_video_is_a_usage_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello")

    with pytest.raises(UsageError, match="cannot be opened as a video") as err:
        open_camera(str(path))
    assert "notes.mp4" in str(err.value)


def test_missing_video_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such video file"):
        open_camera(f"video:{tmp_path / 'gone.mp4'}")
    with pytest.raises(UsageError, match="no such video file"):
        open_camera(str(tmp_path / "gone.mkv"))


# -- URIs, settings, OpenCV ----------------------------------------------------------------------------


@pytest.mark.parametrize("uri, match, lists_forms", [
    ("vl42:0", r"unknown scheme 'vl42:'; did you mean 'v4l2:'\?", True),
    ("webcam:0", "unknown scheme 'webcam:'", True),
    ("no/such/thing", "no such file or folder", True),
    ("", "camera source is ''", True),
    ("v4l2:front", "expected v4l2:INDEX", False),  # the scheme is right: its own form is shown
    ("rtsp:camera", "expected rtsp://", False),
    ("gst:videotestsrc ! videoconvert", "must end in appsink", False),
])
def test_bad_uri_is_a_usage_error_naming_it_and_the_accepted_forms(uri, match, lists_forms):
    with pytest.raises(UsageError, match=match) as err:
        open_camera(uri, capture_factory=ScriptedFakeCamera())

    message = str(err.value)
    assert repr(uri) in message
    if lists_forms:
        for form in ("v4l2:", "rtsp://", "gst:", "video:", "images:"):
            assert form in message


def test_a_plain_file_that_is_neither_video_nor_folder_is_a_usage_error(tmp_path):
    path = tmp_path / "photo.png"
    write_image(path, 1)

    with pytest.raises(UsageError, match="neither a folder nor a video file"):
        open_camera(str(path))


@pytest.mark.parametrize("field, value", [("rate_hz", 0), ("rate_hz", float("nan")), ("folder_fps", -1.0),
                                          ("backoff_initial_s", True), ("backoff_max_s", 0.1)])
def test_bad_setting_is_a_usage_error_naming_the_field(field, value):
    with pytest.raises(UsageError, match=field):
        open_camera("v4l2:0", capture_factory=ScriptedFakeCamera(), **{field: value})


def test_uri_forms_reach_the_capture_as_opencv_targets():
    targets = {}
    for uri in ("v4l2:2", "/dev/video1", "rtsps://cam/live", "gst:v4l2src ! appsink drop=true"):
        camera = ScriptedFakeCamera()
        source = open_camera(uri, capture_factory=camera)
        frames = iter(source)
        camera.push(bgr(1))
        next(frames)
        targets[uri] = (camera.target, source.live)
        source.close()
        camera.unplug()
        list(frames)

    assert targets == {"v4l2:2": (2, True), "/dev/video1": ("/dev/video1", True),
                       "rtsps://cam/live": ("rtsps://cam/live", True),
                       "gst:v4l2src ! appsink drop=true": ("v4l2src ! appsink drop=true", True)}


def test_a_stream_password_reaches_the_capture_but_not_the_uri(caplog):
    camera = FlakyFakeCamera(["absent"])
    source = open_camera("rtsp://admin:s3cr@t@10.0.0.7:554/live", backoff_initial_s=60.0, backoff_max_s=60.0,
                         capture_factory=camera)
    frames = iter(source)
    thread = threading.Thread(target=list, args=(frames,), daemon=True)
    thread.start()
    wait_until(lambda: source.stats.camera_outages == 1, "the outage reported")
    source.close()
    thread.join(GUARD_S)

    assert source.target == "rtsp://admin:s3cr@t@10.0.0.7:554/live"
    assert source.uri == "rtsp://admin:***@10.0.0.7:554/live"  # what logs and telemetry show
    assert "s3cr" not in caplog.text


def test_missing_opencv_names_the_extra_to_install(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", 1)
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError

    with pytest.raises(UsageError, match=r"pip install 'edgetune\[camera\]'"):
        open_camera(str(tmp_path))
    with pytest.raises(UsageError, match=r"pip install 'edgetune\[camera\]'"):
        open_camera("v4l2:0")


def test_opencv_without_gstreamer_is_a_usage_error_at_open():
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer")

    with pytest.raises(UsageError, match="no GStreamer video backend"):
        open_camera("gst:videotestsrc ! appsink")


def test_importing_the_sources_does_not_import_opencv():
    code = ("import sys, edgetune.edge.image.sources, edgetune.edge.image.capture\n"
            "print('cv2' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_property_ids_match_opencv():
    assert capture_module.CAP_PROP_POS_MSEC == cv2.CAP_PROP_POS_MSEC
    assert capture_module.CAP_PROP_FPS == cv2.CAP_PROP_FPS
    assert capture_module.CAP_PROP_FRAME_COUNT == cv2.CAP_PROP_FRAME_COUNT


def test_stats_report_only_nonzero_error_counters():
    stats = CameraStats(frames_captured=9, frames_yielded=3, dropped_frames=6, camera_outages=1)

    assert stats.errors() == {"dropped_frames": 6, "camera_outages": 1}
