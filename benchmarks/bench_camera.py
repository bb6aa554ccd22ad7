"""Live camera latency: ``edgetune.edge.image.sources.open_camera`` (a capture thread that keeps only
the newest frame) vs a naive loop that calls ``VideoCapture.read()`` between inferences.

Run: ``python benchmarks/bench_camera.py [--seconds 3]`` (about a minute; NumPy only: the camera
is synthetic, so neither OpenCV nor a camera is needed).

**The camera is synthetic** (no camera exists on the machines this runs on):
:class:`Synthetic30fpsCamera` has OpenCV's ``VideoCapture`` interface and a sensor that produces a
640 x 480 BGR frame every 1/30 s, on the wall clock, whether or not anyone reads it. Frames wait in
a driver queue until ``read()`` takes the oldest, modelled two ways:

- **V4L2-like**: 4 buffers (a common V4L2 default, and OpenCV's V4L2 backend's). When all are
  full, the driver drops the *new* frame (no free buffer to fill), so the buffers hold old frames.
- **stream-like**: an unbounded queue, as an RTSP stream decoded by FFmpeg behaves until the
  socket buffers overflow: every frame is kept, and a slow reader falls further behind.

The edgetune source sees the same camera through ``capture_factory`` (modelled V4L2-like; its
thread drains the queue as frames arrive, so the model hardly matters to it).

The consumer simulates inference by sleeping ``work_ms`` per frame (on a Jetson inference runs on
the GPU, so it does not take the CPU from the capture thread) and wants frames at ``rate_hz``:
edgetune paces itself (``rate_hz``); the naive loop sleeps to the same schedule after each
``read()`` and inference. Each frame carries its sensor frame number in its first pixels, so its
**age** when the consumer gets it is measured from the moment the sensor produced it
(``time.perf_counter``), the same way for both. Settings run in rotating order; figures are for
one run of ``--seconds`` each, so a lag that grows (stream-like) grows with the run length.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _machine import machine_info  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CAMERA_FPS = 30.0
FRAME_HW = (480, 640)
V4L2_BUFFERS = 4
RATES_HZ = (5.0, 10.0, 30.0)
WORK_MS = (8.0, 40.0)
_ID_BYTES = 8  # the frame number, little-endian, in the first pixels of row 0 (all channels)


class Synthetic30fpsCamera:
    """A synthetic live camera with ``cv2.VideoCapture``'s interface: frame k exists at
    ``t0 + k / fps`` (wall clock, from the first open) and waits in a driver queue of ``buffers``
    frames (None = unbounded) until read() takes the oldest; when the queue is full the driver
    drops the new frame. ``produced_s[k]`` is when frame k was produced."""

    def __init__(self, fps: float = CAMERA_FPS, buffers: int | None = V4L2_BUFFERS) -> None:
        self.fps, self.buffers = fps, buffers
        self._base = np.random.default_rng(0).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
        self._queue: deque[int] = deque()
        self._t0: float | None = None
        self._next = 0
        self.produced_s: dict[int, float] = {}
        self.produced = 0
        self.driver_dropped = 0
        self.reads = 0

    def __call__(self, target: Any) -> "Synthetic30fpsCamera":  # capture_factory
        return self

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def _advance(self, now: float) -> None:
        while self._t0 + self._next / self.fps <= now:
            if self.buffers is None or len(self._queue) < self.buffers:
                self._queue.append(self._next)
                self.produced_s[self._next] = self._t0 + self._next / self.fps
            else:
                self.driver_dropped += 1
            self._next += 1
            self.produced += 1

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's spelling
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        self.start()
        while True:
            now = time.perf_counter()
            self._advance(now)
            if self._queue:
                break
            time.sleep(max(0.0, self._t0 + self._next / self.fps - now))
        k = self._queue.popleft()
        image = self._base.copy()
        image[0, :_ID_BYTES, :] = np.frombuffer(int(k).to_bytes(_ID_BYTES, "little"), dtype=np.uint8)[:, None]
        self.reads += 1
        return True, image

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def frame_number(image: np.ndarray) -> int:
    """The sensor frame number written by :meth:`Synthetic30fpsCamera.read` (order of channels irrelevant)."""
    return int.from_bytes(image[0, :_ID_BYTES, 0].tobytes(), "little")


@dataclass
class Result:
    produced: int
    captured: int
    yielded: int
    dropped: int
    driver_dropped: int
    ages_ms: list[float]


def run_edgetune(rate_hz: float, work_ms: float, seconds: float) -> Result:
    from edgetune.edge.image.sources import open_camera

    camera = Synthetic30fpsCamera(buffers=V4L2_BUFFERS)
    source = open_camera("v4l2:0", rate_hz=rate_hz, capture_factory=camera)
    ages_ms: list[float] = []
    end = None
    for frame in source:
        now = time.perf_counter()
        end = end or now + seconds
        ages_ms.append((now - camera.produced_s[frame_number(frame.image)]) * 1e3)
        time.sleep(work_ms / 1e3)  # inference
        if time.perf_counter() >= end:
            break
    source.close()
    s = source.stats
    return Result(camera.produced, s.frames_captured, s.frames_yielded, s.dropped_frames, camera.driver_dropped,
                  ages_ms)


def run_naive(rate_hz: float, work_ms: float, seconds: float, buffers: int | None) -> Result:
    """``read()`` in the consumer loop, paced to ``rate_hz`` the same way as the source paces itself."""
    camera = Synthetic30fpsCamera(buffers=buffers)
    camera.start()  # the camera runs from the moment it is opened, like the source's
    period_s = 1.0 / rate_hz
    ages_ms: list[float] = []
    due = end = None
    while True:
        ok, image = camera.read()
        now = time.perf_counter()
        end = end or now + seconds
        due = due or now
        ages_ms.append((now - camera.produced_s[frame_number(image)]) * 1e3)
        time.sleep(work_ms / 1e3)  # inference
        if time.perf_counter() >= end:
            break
        due = max(due + period_s, time.perf_counter())
        time.sleep(max(0.0, due - time.perf_counter()))
    return Result(camera.produced, camera.reads, len(ages_ms), 0, camera.driver_dropped, ages_ms)


IMPLS = {
    "edgetune open_camera": lambda r, w, s: run_edgetune(r, w, s),
    "naive read(), V4L2-like 4 buffers": lambda r, w, s: run_naive(r, w, s, V4L2_BUFFERS),
    "naive read(), stream-like unbounded": lambda r, w, s: run_naive(r, w, s, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="consumer time per setting and implementation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(machine_info(numpy=np.__version__))
    print(f"synthetic camera: {CAMERA_FPS:g} fps, {FRAME_HW[1]}x{FRAME_HW[0]} BGR; {args.seconds:g} s per run; "
          "inference simulated by sleeping work_ms\n")
    settings = [(r, w) for r in RATES_HZ for w in WORK_MS]
    names = list(IMPLS)
    results: dict[tuple[float, float, str], Result] = {}
    for i, (rate_hz, work_ms) in enumerate(settings):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotating order
            results[(rate_hz, work_ms, name)] = IMPLS[name](rate_hz, work_ms, args.seconds)

    print("| rate_hz | work_ms | implementation | sensor frames | read from driver | yielded | "
          "dropped by source | dropped by driver | age p50 ms | age p99 ms | age max ms |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate_hz, work_ms in settings:
        for name in names:
            r = results[(rate_hz, work_ms, name)]
            p50, p99 = np.percentile(r.ages_ms, [50, 99])
            print(f"| {rate_hz:g} | {work_ms:g} | {name} | {r.produced} | {r.captured} | {r.yielded} | {r.dropped} | "
                  f"{r.driver_dropped} | {p50:.1f} | {p99:.1f} | {max(r.ages_ms):.1f} |")
    print("\nage: from the sensor producing a frame to the consumer getting it. edgetune's is the age of the\n"
          f"newest frame when its schedule comes due: 0 to one sensor interval ({1e3 / CAMERA_FPS:.1f} ms) plus the\n"
          "hand-over, set by the phase of its schedule against the sensor's (these rates divide 30 fps, so a run\n"
          "keeps one phase). The naive loop's is the depth of the driver queue in reads. Ratio of p50 ages,\n"
          "naive / edgetune:")
    for rate_hz, work_ms in settings:
        base = float(np.percentile(results[(rate_hz, work_ms, names[0])].ages_ms, 50))
        ratios = [float(np.percentile(results[(rate_hz, work_ms, n)].ages_ms, 50)) / base for n in names[1:]]
        print(f"  rate {rate_hz:g} Hz, work {work_ms:g} ms: V4L2-like x{ratios[0]:.1f}, stream-like x{ratios[1]:.1f}")


if __name__ == "__main__":
    main()
