"""The pretrained speech_embedding backbone on the device: streamed like the DS-CNN, exact under any chunking;
its stream graph (audio_embedder_stream.onnx) gives the window graph's embeddings, on the stream and on whole
clips, and keeps its windows aligned over a failed hop."""

import dataclasses
import shutil

import numpy as np
import pytest

from edgetune.contract import ContractError, tensors
from edgetune.edge.audio.embed import AudioEmbedder
from edgetune.edge.audio.pipeline import audio_pipeline, default_hop_ms, step_samples
from edgetune.edge.audio.preprocess import AudioPreprocessor
from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
from edgetune.errors import UsageError

pytest.importorskip("onnx")
pytest.importorskip("openwakeword", reason="the speech_embedding graphs come from the openwakeword==0.4.0 wheel")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from support.bundles import device_trust, make_speech_bundle

    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.runtime.providers import ProviderSettings

    bundle = load_bundle(make_speech_bundle(tmp_path_factory.mktemp("speech") / "b"), trust=device_trust())
    return bundle, AudioModels(bundle, ProviderSettings(providers=("cpu",), intra_op_threads=1))


@pytest.fixture(scope="module")
def window_models(speech):
    """The same bundle's graphs without its stream graph: the window graph on every window."""
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.runtime.providers import ProviderSettings

    bundle, _ = speech
    audio = dataclasses.replace(bundle.manifest.audio, embedder_stream_graph=None)
    return AudioModels.from_files(audio, bundle.directory, ProviderSettings(providers=("cpu",), intra_op_threads=1))


@pytest.fixture(scope="module")
def audio():
    """2.9 s of tone and noise with a small noise floor: not a whole number of 80-ms hops."""
    rng = np.random.default_rng(1)
    t = np.arange(46500) / 16000
    x = 0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) * (t > 0.7) + 1e-3 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def _stream(models, audio, chunk, hop, frontend=None):
    """Pooled embeddings per hop [H, embedding_size]; ``frontend`` replaces ``models.features`` (failures).
    A failed hop (or a failed embedding) is skipped as the loop skips it, and gives a row of NaN."""
    pre = AudioPreprocessor(frontend or models.features, models.params, models.clip_samples, hop)
    embed = AudioEmbedder(models, hop, pre.ring.silence)
    out = []

    def step(s):
        if s.failed:
            embed.skip(s)
            return np.full(models.embedding_size, np.nan, np.float32)
        try:
            return embed(s)
        except RuntimeError:
            return np.full(models.embedding_size, np.nan, np.float32)

    for start in range(0, audio.size, chunk):
        out += [step(s) for s in pre.push(audio[start:start + chunk])]
    out += [step(s) for s in pre.flush()]
    return np.stack(out)


def _failing_on(models, call):
    """models.features, failing on its ``call``-th call (call 1 computes the silent history)."""
    calls = {"n": 0}

    def frontend(pcm):
        calls["n"] += 1
        if calls["n"] == call:
            raise RuntimeError("simulated ONNX Runtime failure")
        return models.features(pcm)

    return frontend


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


# --- the stream graph --------------------------------------------------------------------------

def test_the_bundle_opens_its_stream_graph_beside_the_window_graph(speech, window_models):
    _, models = speech
    assert models.streams and models.providers["embedder_stream"] == "CPUExecutionProvider"
    assert len(models.stream_state_shapes) == 11 and models.history_frames == 80
    assert not window_models.streams
    assert AudioEmbedder(models, 1280, models.features(np.zeros((1, models.clip_samples), np.float32))[0]).streaming


def test_the_stream_graph_gives_the_window_paths_embeddings_bit_for_bit(speech, window_models, audio):
    # Measured: max |diff| 0.0 (one thread, CPU provider), pooled and window by window.
    _, models = speech
    for hop in (1280, 2560):
        np.testing.assert_array_equal(_stream(models, audio, 1000, hop), _stream(window_models, audio, 1000, hop),
                                      err_msg=f"hop {hop}")


def test_whole_clips_through_the_stream_graph_equal_the_windows(speech, window_models, audio):
    # Measured: max |diff| 0.0: one stream call per batch of clips, from a zero state, the frames padded in front.
    _, models = speech
    clips = np.stack([audio[k * 1000:k * 1000 + models.clip_samples] for k in range(12)])
    np.testing.assert_array_equal(models.embed_clips(clips, batch_size=5), window_models.embed_clips(clips))
    features = models.features(clips)  # no look-back for this front-end
    got = models.window_embeddings(features)
    assert got.shape == (12, models.embedder_spec.n_windows, 96)
    np.testing.assert_array_equal(got, window_models.embed(models.windows_of(features).reshape(-1, 76, 32))
                                  .reshape(got.shape))


def test_the_stream_state_of_silence_continues_like_the_window_graph(speech, window_models, audio):
    _, models = speech
    silence = models.features(np.zeros((1, models.clip_samples), np.float32))
    state = models.stream_state(silence)
    frames = models.features(np.concatenate([np.zeros(models.clip_samples, np.float32), audio[:5120]])[None])
    history = models.frames_per_clip
    got, _ = models.embed_stream(frames[:, history:history + 32], state)  # the 4 windows after the silence
    ends = history + 8 * np.arange(1, 5) - 1
    want = window_models.embed(np.stack([frames[0, e - 75:e + 1] for e in ends]))
    np.testing.assert_array_equal(got[0], want)


def test_a_failed_front_end_hop_keeps_the_later_hops_aligned(speech, window_models, audio):
    # Prepare: hop 5 fails (front-end call 6) on both paths; a clean run for reference.
    _, models = speech
    n = models.embedder_spec.n_windows
    clean = _stream(models, audio, 1280, 1280)
    streamed = _stream(models, audio, 1280, 1280, _failing_on(models, 6))
    windowed = _stream(window_models, audio, 1280, 1280, _failing_on(window_models, 6))
    # Assert: the stream graph's state took silence for the hop, as the feature ring did
    np.testing.assert_array_equal(streamed, windowed)
    assert np.isnan(streamed[4]).all() and not np.isnan(np.delete(streamed, 4, axis=0)).any()
    # hops whose windows overlap the failed one differ; from hop 5 + 9 + n on, none does
    assert not np.array_equal(streamed[5], clean[5])
    np.testing.assert_array_equal(streamed[4 + 9 + n:], clean[4 + 9 + n:])


def test_a_failed_embedding_puts_silence_in_the_hops_place_as_a_failed_front_end_does(speech, window_models, audio,
                                                                                     monkeypatch):
    # The feature ring keeps the hop's frames, which the failed call could not take into the state: the
    # state advances over silence instead, so every later hop equals the window path's run whose
    # front-end failed there.
    _, models = speech
    front_end_failed = _stream(window_models, audio, 1280, 1280, _failing_on(window_models, 6))
    real, calls = models.embed_stream, {"n": 0}

    def flaky(frames, state):  # calls 1-2: silence's windows and state; call 7: hop 5's embedding
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("simulated ONNX Runtime failure")
        return real(frames, state)

    monkeypatch.setattr(models, "embed_stream", flaky)
    got = _stream(models, audio, 1280, 1280)
    assert calls["n"] > 7 and np.isnan(got[4]).all()
    np.testing.assert_array_equal(got, front_end_failed)


def test_a_skip_whose_state_update_fails_restarts_from_silence_and_does_not_raise(speech, audio, monkeypatch):
    _, models = speech
    pre = AudioPreprocessor.for_models(models, 1280)
    embed = AudioEmbedder(models, 1280, pre.ring.silence)
    steps = list(pre.push(audio[:12800]))
    for s in steps[:5]:
        embed(s)
    def broken(frames, state):
        raise RuntimeError("simulated ONNX Runtime failure")

    monkeypatch.setattr(models, "embed_stream", broken)
    embed.skip(steps[5])  # Execute: must not raise
    assert all(np.array_equal(a, b) for a, b in zip(embed._state, embed._silence_state))


def test_stream_frames_that_are_not_a_whole_number_of_strides_are_refused(speech):
    _, models = speech
    state = models.zero_stream_state(1)
    with pytest.raises(ValueError, match=r"expected \[B, k \* 8, 32\]"):
        models.embed_stream(np.zeros((1, 12, 32), np.float32), state)
    with pytest.raises(ValueError, match="stream state has shapes"):
        models.embed_stream(np.zeros((2, 8, 32), np.float32), state)


def _graphs_with_stream(tmp_path, speech, edit):
    """The bundle's graphs copied to tmp_path, the stream graph edited by ``edit(model)``."""
    import onnx

    bundle, _ = speech
    for name in bundle.manifest.audio.files:
        shutil.copy(bundle.directory / name, tmp_path / name)
    path = tmp_path / tensors.AUDIO_EMBEDDER_STREAM_FILE
    model = onnx.load(str(path))
    edit(model.graph)
    onnx.save(model, str(path))
    return bundle.manifest.audio


def _rename(graph, old, new):
    for v in list(graph.input) + list(graph.output):
        if v.name == old:
            v.name = new
    for node in graph.node:
        for io in (node.input, node.output):
            for k, name in enumerate(io):
                if name == old:
                    io[k] = new


@pytest.mark.parametrize("edit, message", [
    (lambda g: _rename(g, "state_in_3", "cache_3"), r"inputs .*'cache_3'.* paired by index"),
    (lambda g: _rename(g, "state_out_10", "state_out_11"), r"outputs .*'state_out_11'.* paired by index"),
    (lambda g: (_rename(g, "state_out_1", "tmp"), _rename(g, "state_out_2", "state_out_1"),
                _rename(g, "tmp", "state_out_2")), r"'state_in_1' has shape .* expected the same shape"),
], ids=["state-name", "unpaired-index", "swapped-states"])
def test_a_stream_graph_that_breaks_the_contract_is_refused(speech, tmp_path, edit, message):
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.runtime.providers import ProviderSettings

    audio = _graphs_with_stream(tmp_path, speech, edit)
    with pytest.raises(ContractError, match=message):
        AudioModels.from_files(audio, tmp_path, ProviderSettings(providers=("cpu",), intra_op_threads=1))
