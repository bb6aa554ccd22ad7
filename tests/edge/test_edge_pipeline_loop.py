"""The pipeline loop, driving the audio pipeline: detections and metrics to a sink, bad input
counted, never fatal, heads swapped between chunks."""

import numpy as np
import pytest

from edgetune.edge.audio.detect import DetectorSettings
from edgetune.edge.audio.sources import open_source
from edgetune.contract import messages
from edgetune.edge.audio.pipeline import audio_pipeline
from edgetune.edge.head import Head, fit_head
from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
from edgetune.edge.pipeline.loop import LoopSettings, run_pipeline
from edgetune.edge.sinks import CollectingSink


def run_audio(bundle, source, settings, sink, *, head, models, head_version=0, head_updates=None,
              detector=DetectorSettings()):
    """The audio pipeline of ``bundle`` over ``source`` with one head, run by the loop (100 ms hops)."""
    heads = HeadSet([ActiveHead("keywords", head, head_version)])
    pipeline = audio_pipeline(bundle, models, source, heads, hop_ms=100, detector=detector)
    return run_pipeline(pipeline, sink, settings, head_updates=head_updates)


@pytest.fixture
def always_yes(bundle):
    """A head whose bias makes 'yes' win every window (weights zero): detections are certain."""
    labels = bundle.head.labels
    bias = np.where(np.array(labels) == "yes", 10.0, 0.0)
    return Head(np.zeros_like(bundle.head.weight), bias, labels)


def test_run_reports_detections_and_metrics_as_valid_messages(bundle, models, always_yes, tmp_path, tone,
                                                             write_wav):
    path = write_wav(tmp_path / "a.wav", tone(440, 3.05))
    sink = CollectingSink()
    settings = LoopSettings(metrics_interval_s=1.0)
    with open_source(f"wav:{path}", 16000) as source:
        summary = run_audio(bundle, source, settings, sink, head=always_yes, head_version=3, models=models)
    # The score never drops below the threshold: one event, however long the stream (no re-arm).
    assert [e.detection.label for e in sink.events] == ["yes"]
    assert summary.steps == 31 and summary.detections == 1 and summary.stream_s == pytest.approx(3.1)
    body = sink.events[0].body()
    assert body["offset_s"] == pytest.approx(0.1) and body["head_version"] == 3 and body["source"] == f"wav:{path}"
    assert body["pipeline"] == "audio" and body["head"] == "keywords" and body["modality"] == "audio"
    messages.make("jetson-07", 1, sink.events[0].observed_at, "event", body)
    assert [r.inferences for r in sink.reports] == [10, 10, 10, 1]
    for report in sink.reports:
        assert report.body()["pipeline"] == "audio"
        messages.make("jetson-07", 2, report.observed_at, "metrics", report.body())
    assert sink.reports[0].provider == "CPUExecutionProvider" and sink.reports[0].latency_ms["p50"] > 0


def _burst_clips(n, rng):
    """Clips float32 [n, 16000], each holding one 0.3-s noise burst at a random place."""
    clips = 1e-4 * rng.standard_normal((n, 16000)).astype(np.float32)
    for clip in clips:
        start = rng.integers(0, 16000 - 4800)
        clip[start:start + 4800] = 0.3 * rng.standard_normal(4800)
    return clips


def test_one_event_per_word_like_burst(bundle, models, tmp_path, write_wav):
    # Prepare: a head fitted (on the device's own embeddings) to tell noise bursts from silence.
    rng = np.random.default_rng(0)
    quiet = 1e-4 * rng.standard_normal((20, 16000)).astype(np.float32)
    quiet[:5, : 16000 // 2] = 0.0  # the stream starts from exact zeros: silence too
    emb = models.embed_clips(np.concatenate([quiet, _burst_clips(20, rng)]))
    weight, bias, labels = fit_head(emb, ["_background_"] * 20 + ["yes"] * 20,
                                    init_weight=bundle.head.weight, init_bias=bundle.head.bias,
                                    init_labels=bundle.head.labels)
    stream = 1e-4 * rng.standard_normal(16000 * 6).astype(np.float32)
    for start_s in (0.5, 3.5):  # two "words", 3 s apart
        begin = int(start_s * 16000)
        stream[begin:begin + 4800] = 0.3 * rng.standard_normal(4800)
    path = write_wav(tmp_path / "words.wav", stream, subtype="FLOAT")
    sink = CollectingSink()
    # Execute
    with open_source(str(path), 16000) as source:
        run_audio(bundle, source, LoopSettings(), sink, head=Head(weight, bias, labels), models=models)
    # Assert: each burst stays in the window for 1.3 s (13 hops) and gives exactly one event.
    offsets = [e.detection.offset_s for e in sink.events]
    assert [e.detection.label for e in sink.events] == ["yes", "yes"]
    assert 0.5 < offsets[0] < 1.5 and 3.5 < offsets[1] < 4.5


def test_nan_input_and_a_failing_sink_are_counted_not_fatal(bundle, models, always_yes, tmp_path, tone, write_wav):
    x = tone(440, 1.0)
    x[5000:5100] = np.nan
    path = write_wav(tmp_path / "nan.wav", x, subtype="FLOAT")

    class FailingSink(CollectingSink):  # a fake sink whose detection call fails, as a broken network would
        def detection(self, event):
            raise ConnectionError("simulated")

    sink = FailingSink()
    with open_source(str(path), 16000) as source:
        summary = run_audio(bundle, source, LoopSettings(), sink, head=always_yes, models=models)
    assert summary.steps == 10
    assert summary.errors == {"nonfinite_chunks": 1, "sink_errors": 1}
    assert sink.reports[-1].errors == summary.errors


def test_a_head_promoted_while_running_is_used_from_the_next_poll(bundle, models, always_yes, tmp_path, tone,
                                                                  write_wav):
    # Prepare: 3 s of audio; after the first second a new head version appears that knows a new
    # label and always picks it.
    path = write_wav(tmp_path / "a.wav", tone(440, 3.0))
    labels = bundle.head.labels + ("whistle",)
    bias = np.where(np.array(labels) == "whistle", 10.0, 0.0)
    whistle = Head(np.zeros((len(labels), bundle.head.embedding_size)), bias, labels)
    polls = []

    def head_updates():
        polls.append(len(polls))
        return {"keywords": (whistle, 4)} if len(polls) == 1 else {}

    sink = CollectingSink()
    settings = LoopSettings(head_poll_s=1.0)
    # Execute
    with open_source(f"wav:{path}", 16000, chunk_samples=1600) as source:
        run_audio(bundle, source, settings, sink, head=always_yes, head_version=3, models=models,
                  head_updates=head_updates, detector=DetectorSettings(refractory_s=0.5))
    # Assert: 'yes' from v3 first, then 'whistle' from v4, each event naming its head version.
    assert [(e.detection.label, e.body()["head_version"]) for e in sink.events] == [("yes", 3), ("whistle", 4)]
    assert len(polls) == 2  # at 1 s and 2 s of audio
