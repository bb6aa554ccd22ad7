"""Where detections go: one failing sink never keeps a record from the others."""

import pytest

from edgetune.edge.audio.detect import Detection
from edgetune.edge.sinks import CollectingSink, DetectionEvent, FanoutSink, StreamSink


def _event() -> DetectionEvent:
    return DetectionEvent(detection=Detection("yes", 0.9, 1.5, 0.4), observed_at=1795000000.0, source="wav:x.wav",
                          bundle_id="kws", bundle_version="1.0.0", head_version=0)


class _ClosedPipe:
    """Stands in for stdout after the reader (`| head`) exited: every write raises."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


class _Failing:
    def detection(self, event):
        raise RuntimeError("disk full")

    def metrics(self, report):
        raise RuntimeError("disk full")


def test_a_failing_sink_does_not_keep_the_event_from_the_next_one():
    # Prepare
    kept = CollectingSink()
    fanout = FanoutSink(_Failing(), kept)
    # Execute / Assert: the failure still surfaces (the loop counts it), after delivery.
    with pytest.raises(RuntimeError, match="disk full"):
        fanout.detection(_event())
    assert len(kept.events) == 1


def test_a_closed_stdout_stops_printing_once_and_says_so():
    # Prepare
    closed = []
    sink = StreamSink(_ClosedPipe(), as_json=True, on_closed=lambda: closed.append(True))
    # Execute
    sink.detection(_event())
    sink.detection(_event())
    # Assert: no exception, the callback ran once, later events are not written.
    assert sink.closed and closed == [True]
