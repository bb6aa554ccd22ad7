"""The streaming classifier: incremental features, and results that do not depend on chunking."""

import numpy as np
import pytest

from edgetune.edge.audio.stream import StreamingClassifier, hop_samples_for
from edgetune.errors import UsageError


@pytest.fixture(scope="module")
def audio():
    """2.37 s of noise bursts and tones: a length that is not a whole number of hops."""
    rng = np.random.default_rng(0)
    t = np.arange(37920) / 16000
    x = 0.2 * np.sin(2 * np.pi * 440 * t) * (t > 0.8) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _scores(models, head, audio, chunk):
    clf = StreamingClassifier.for_models(models, head, 1600)
    results = []
    for start in range(0, audio.size, chunk):
        results += clf.push(audio[start:start + chunk])
    results += clf.flush()
    return np.stack([r.posteriors for r in results]), [r.offset_s for r in results]


def test_scores_do_not_depend_on_chunking(models, bundle, audio):
    whole, offsets = _scores(models, bundle.head, audio, audio.size)
    assert whole.shape == (24, len(bundle.head.labels))  # 23 full hops and the flushed last one
    assert offsets[0] == pytest.approx(0.1) and offsets[-1] == pytest.approx(2.4)
    for chunk in (1, 37, 160, 1600):
        scores, _ = _scores(models, bundle.head, audio, chunk)
        np.testing.assert_array_equal(scores, whole, err_msg=f"chunks of {chunk}")


def test_streamed_window_features_equal_the_front_end_on_the_whole_clip(models, bundle, audio):
    clf = StreamingClassifier.for_models(models, bundle.head, 1600)
    clf.push(audio[:7000])
    clf.push(audio[7000:16000])  # exactly one clip in: the window is the clip
    pcm = np.concatenate([[0.0], audio[:16000]]).astype(np.float32)[None, :]  # a zero look-back sample
    whole = models.features(pcm)[0]
    streamed = clf.window_features()
    assert streamed.shape == whole.shape == (models.frames_per_clip, models.n_features)
    np.testing.assert_allclose(streamed, whole, rtol=1e-5, atol=1e-4 * np.abs(whole).max())


def test_the_first_result_comes_after_the_first_hop(models, bundle):
    clf = StreamingClassifier.for_models(models, bundle.head, 1600)
    assert clf.push(np.zeros(1599, dtype=np.float32)) == []
    (first,) = clf.push(np.zeros(1, dtype=np.float32))
    assert first.index == 1 and first.offset_s == pytest.approx(0.1) and first.latency_ms > 0
    np.testing.assert_allclose(first.posteriors.sum(), 1.0, rtol=1e-5)


def test_a_failing_hop_is_counted_and_the_stream_goes_on(models, bundle, audio):
    calls = {"n": 0}

    def flaky_frontend(pcm):  # a fake that wraps the real front-end and fails on its third hop
        calls["n"] += 1
        if calls["n"] == 4:  # call 1 computes the silent history
            raise RuntimeError("simulated ONNX Runtime failure")
        return models.features(pcm)

    clf = StreamingClassifier(flaky_frontend, models.embed, bundle.head, models.params, models.clip_samples, 1600)
    results = clf.push(audio[:8000])
    assert [r.posteriors is None for r in results] == [False, False, True, False, False]
    assert clf.errors["hop_failures"] == 1


def test_hop_must_be_a_whole_number_of_frames():
    assert hop_samples_for(100, 16000, 160) == 1600
    with pytest.raises(UsageError, match="hop_ms is 105"):
        hop_samples_for(105, 16000, 160)
