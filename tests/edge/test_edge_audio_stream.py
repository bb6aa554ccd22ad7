"""The audio stages on their own: incremental features, and results that do not depend on chunking."""

import numpy as np
import pytest

from edgetune.edge.audio.embed import AudioEmbedder
from edgetune.edge.audio.preprocess import AudioPreprocessor, hop_samples_for
from edgetune.errors import UsageError


@pytest.fixture(scope="module")
def audio():
    """2.37 s of noise bursts and tones: a length that is not a whole number of hops."""
    rng = np.random.default_rng(0)
    t = np.arange(37920) / 16000
    x = 0.2 * np.sin(2 * np.pi * 440 * t) * (t > 0.8) + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _embeddings(models, audio, chunk, hop=1600):
    pre = AudioPreprocessor.for_models(models, hop)
    embed = AudioEmbedder(models, hop, pre.ring.silence)
    steps = []
    for start in range(0, audio.size, chunk):
        steps += [(s.offset_s, embed(s)) for s in pre.push(audio[start:start + chunk])]
    steps += [(s.offset_s, embed(s)) for s in pre.flush()]
    return np.stack([e for _, e in steps]), [t for t, _ in steps]


def test_embeddings_do_not_depend_on_chunking(models, audio):
    whole, offsets = _embeddings(models, audio, audio.size)
    assert whole.shape == (24, models.embedding_size)  # 23 full hops and the flushed last one
    assert offsets[0] == pytest.approx(0.1) and offsets[-1] == pytest.approx(2.4)
    for chunk in (1, 37, 160, 1600):
        streamed, _ = _embeddings(models, audio, chunk)
        np.testing.assert_array_equal(streamed, whole, err_msg=f"chunks of {chunk}")


def test_streamed_embedding_equals_the_whole_clip(models, audio):
    pre = AudioPreprocessor.for_models(models, 1600)
    embed = AudioEmbedder(models, 1600, pre.ring.silence)
    list(pre.push(audio[:7000]))
    last = [embed(s) for s in pre.push(audio[7000:16000])][-1]  # exactly one clip in: the window is the clip
    whole = models.embed_clips(audio[None, :16000])[0]
    np.testing.assert_allclose(last, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_the_first_step_comes_after_the_first_hop(models):
    pre = AudioPreprocessor.for_models(models, 1600)
    assert list(pre.push(np.zeros(1599, dtype=np.float32))) == []
    (first,) = pre.push(np.zeros(1, dtype=np.float32))
    assert first.index == 1 and first.offset_s == pytest.approx(0.1) and not first.failed


def test_a_failing_hop_is_counted_and_the_stream_goes_on(models, audio):
    calls = {"n": 0}

    def flaky_frontend(pcm):  # a fake that wraps the real front-end and fails on its third hop
        calls["n"] += 1
        if calls["n"] == 4:  # call 1 computes the silent history
            raise RuntimeError("simulated ONNX Runtime failure")
        return models.features(pcm)

    pre = AudioPreprocessor(flaky_frontend, models.params, models.clip_samples, 1600)
    steps = list(pre.push(audio[:8000]))
    assert [s.failed for s in steps] == [False, False, True, False, False]
    assert pre.errors["hop_failures"] == 1


def test_hop_must_be_a_whole_number_of_steps():
    assert hop_samples_for(100, 16000, 160) == 1600
    with pytest.raises(UsageError, match="hop_ms is 105"):
        hop_samples_for(105, 16000, 160)
    with pytest.raises(UsageError, match="1280 samples"):
        hop_samples_for(100, 16000, 1280)  # a windowed embedder steps by 80 ms
