"""The pretrained speech_embedding backbone on the device: streamed like the DS-CNN, exact under any chunking."""

import numpy as np
import pytest

from edgetune.edge.audio.embed import AudioEmbedder
from edgetune.edge.audio.pipeline import audio_pipeline, default_hop_ms, step_samples
from edgetune.edge.audio.preprocess import AudioPreprocessor
from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
from edgetune.errors import UsageError

pytest.importorskip("onnx")
pytest.importorskip("openwakeword", reason="the speech_embedding graphs come from the openwakeword==0.4.0 wheel")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from support.bundles import make_speech_bundle

    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.runtime.providers import ProviderSettings

    bundle = load_bundle(make_speech_bundle(tmp_path_factory.mktemp("speech") / "b"))
    return bundle, AudioModels(bundle, ProviderSettings(providers=("cpu",), intra_op_threads=1))


@pytest.fixture(scope="module")
def audio():
    """2.9 s of tone and noise with a small noise floor: not a whole number of 80-ms hops."""
    rng = np.random.default_rng(1)
    t = np.arange(46500) / 16000
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) * (t > 0.7) + 1e-3 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _stream(models, audio, chunk, hop):
    pre = AudioPreprocessor.for_models(models, hop)
    embed = AudioEmbedder(models, hop, pre.ring.silence)
    out = []
    for start in range(0, audio.size, chunk):
        out += [embed(s) for s in pre.push(audio[start:start + chunk])]
    out += [embed(s) for s in pre.flush()]
    return np.stack(out)


def test_the_bundle_steps_by_the_backbones_80_ms(speech):
    bundle, models = speech
    assert step_samples(models) == 1280 and default_hop_ms(models) == 80.0
    assert models.embedder_spec.n_windows == 3 and models.embedding_size == 3 * 96


def test_embeddings_are_bit_identical_however_the_audio_is_chunked(speech, audio):
    _, models = speech
    whole = _stream(models, audio, audio.size, 1280)
    assert whole.shape == (37, models.embedding_size)  # 36 full hops and the flushed last one
    for chunk in (1, 160, 1279, 4000):
        np.testing.assert_array_equal(_stream(models, audio, chunk, 1280), whole, err_msg=f"chunks of {chunk}")


def test_a_longer_hop_gives_the_same_embeddings_at_the_hops_they_share(speech, audio):
    _, models = speech
    by80 = _stream(models, audio, 999, 1280)
    by160 = _stream(models, audio, 999, 2560)  # two new windows per hop
    np.testing.assert_array_equal(by160[:18], by80[1:36:2])


def test_the_streamed_embedding_is_the_whole_clips(speech, audio):
    _, models = speech
    streamed = _stream(models, audio, 1280, 1280)
    clip = models.clip_samples  # 15072 samples: 3 windows of 76 frames, 8 apart
    k = 30  # after hop k the window holds samples [k*1280 - clip, k*1280)
    whole = models.embed_clips(audio[None, k * 1280 - clip:k * 1280])[0]
    np.testing.assert_allclose(streamed[k - 1], whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_a_hop_that_is_not_a_multiple_of_80_ms_is_refused_with_the_step(speech, tmp_path):
    bundle, models = speech
    heads = HeadSet([ActiveHead("keywords", bundle.head, 0)])
    with pytest.raises(UsageError, match=r"hop_ms is 100: 1600 samples .* multiple of 1280 samples \(80 ms\)"):
        audio_pipeline(bundle, models, iter(()), heads, hop_ms=100)
