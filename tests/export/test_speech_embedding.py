"""speech_embedding's bundle graphs, rewritten from the openwakeword==0.4.0 wheel, in real ONNX Runtime
sessions: contract, batch independence, frame locality (exact streaming), the floor, and agreement
with openWakeWord's own streaming ``AudioFeatures`` on speech."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("openwakeword")

from edgetune.contract import tensors  # noqa: E402
from edgetune.errors import UsageError  # noqa: E402
from edgetune.export.audio import speech_embedding as se  # noqa: E402

ALSA_DIR = Path("/usr/share/sounds/alsa")
#: The voice recordings of alsa-utils (one real speaker); Noise.wav is not speech.
ALSA_VOICES = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right",
               "Side_Left", "Side_Right")
ESPEAK_CLIPS = (("en-us", "seven"), ("en+f3", "seven"), ("en-us", "hey there, turn on the lights"),
                ("en+f3", "hey there, turn on the lights"))
#: openWakeWord's streaming chunk: 1280 samples (80 ms) = one embedding.
OWW_CHUNK_SAMPLES = se.EMBEDDER_STRIDE_FRAMES * se.FRAME_HOP_SAMPLES
#: ONNX Runtime warns (a UserWarning) that AudioFeatures asks for CUDA on a CPU-only install.
ORT_NO_CUDA = "ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names:UserWarning"


# --- helpers -----------------------------------------------------------------------------------

def _session(path: Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A CPU session; ``intra_op_threads`` 0 is ONNX Runtime's default (one per core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _assert_same(actual: np.ndarray, desired: np.ndarray, atol: float) -> None:
    if atol == 0:
        np.testing.assert_array_equal(actual, desired)
    else:
        np.testing.assert_allclose(actual, desired, rtol=0, atol=atol)


def _features(frontend, pcm: np.ndarray) -> np.ndarray:
    """pcm float32 [B, N] in [-1, 1] -> features float32 [B, T, 32]."""
    return frontend.run([tensors.AUDIO_FRONTEND_OUTPUT], {tensors.AUDIO_FRONTEND_INPUT: pcm.astype(np.float32)})[0]


def _wheel_db(wheel_mel, pcm: np.ndarray) -> np.ndarray:
    """The wheel graph on pcm float32 [B, N] in [-1, 1] -> its dB float32 [B, T, 32]."""
    return wheel_mel.run(None, {"input": (pcm * se.PCM_TO_INT16_SCALE).astype(np.float32)})[0][:, 0]


def _embed(embedder, features: np.ndarray) -> np.ndarray:
    """features float32 [B, 76, 32] -> embedding float32 [B, 96]."""
    return embedder.run([tensors.AUDIO_EMBEDDER_OUTPUT], {tensors.AUDIO_EMBEDDER_INPUT: features})[0]


def _test_signal(rng: np.random.Generator) -> np.ndarray:
    """float32 [N]: digital silence, quiet noise (-80 dBFS), a loud chirp, then quiet noise again."""
    t = np.arange(8000) / se.SAMPLE_RATE_HZ
    chirp = 0.8 * np.sin(2 * np.pi * (100 * t + 3000 * t ** 2))
    quiet = 1e-4 * rng.standard_normal(6000)
    return np.concatenate([np.zeros(2000), quiet, chirp, quiet[::-1]]).astype(np.float32)


def _as_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _padded_for_streaming(x16: np.ndarray) -> np.ndarray:
    """int16 [N]: 0.5 s of zeros, the clip, zeros to a whole number of 1280-sample chunks (>= 0.25 s)."""
    n = se.SAMPLE_RATE_HZ // 2 + len(x16) + se.SAMPLE_RATE_HZ // 4
    out = np.zeros(-(-n // OWW_CHUNK_SAMPLES) * OWW_CHUNK_SAMPLES, np.int16)
    out[se.SAMPLE_RATE_HZ // 2:se.SAMPLE_RATE_HZ // 2 + len(x16)] = x16
    return out


def _with_noise_floor(x16: np.ndarray, seed: int, rms_lsb: float = 3.0) -> np.ndarray:
    """x16 plus Gaussian noise of ``rms_lsb`` (3 LSB: about -80 dBFS), as a real microphone has."""
    noise = rms_lsb * np.random.default_rng(seed).standard_normal(len(x16))
    return np.clip(np.round(x16 + noise), -32768, 32767).astype(np.int16)


def _streamed_chunk_ends(n_samples: int) -> list[int]:
    """The 1-based chunks k after which AudioFeatures' last 76 frames are all real frames of the
    clip: its buffer then holds frames [8k - 79, 8k - 3) (the first call yields 5 frames, later
    ones 8), so k >= 10."""
    window, stride = se.EMBEDDER_WINDOW_FRAMES, se.EMBEDDER_STRIDE_FRAMES
    return [k for k in range(1, n_samples // OWW_CHUNK_SAMPLES + 1) if stride * k - 3 >= window]


def _oww_streaming_embeddings(x16: np.ndarray, mel_path: Path, emb_path: Path) -> np.ndarray:
    """openWakeWord's AudioFeatures fed 1280-sample chunks: float32 [K, 96], one per chunk end."""
    from openwakeword.utils import AudioFeatures

    features = AudioFeatures(melspec_onnx_model_path=str(mel_path), embedding_onnx_model_path=str(emb_path))
    ends, out = set(_streamed_chunk_ends(len(x16))), []
    for k in range(1, len(x16) // OWW_CHUNK_SAMPLES + 1):
        features(x16[(k - 1) * OWW_CHUNK_SAMPLES:k * OWW_CHUNK_SAMPLES])
        if k in ends:
            out.append(features.feature_buffer[-1].copy())
    return np.stack(out).astype(np.float32)


def _windows(features: np.ndarray, n_samples: int) -> np.ndarray:
    """features [T, 32] -> float32 [K, 76, 32]: the window ending at each chunk end AudioFeatures embeds."""
    stride, window = se.EMBEDDER_STRIDE_FRAMES, se.EMBEDDER_WINDOW_FRAMES
    return np.stack([features[stride * k - 3 - window:stride * k - 3] for k in _streamed_chunk_ends(n_samples)])


def _our_streaming_embeddings(x16: np.ndarray, frontend, embedder) -> np.ndarray:
    features = _features(frontend, (x16.astype(np.float32) / se.PCM_TO_INT16_SCALE)[None])[0]
    return _embed(embedder, _windows(features, len(x16)))


def _wheel_whole_clip_embeddings(x16: np.ndarray, wheel_mel, wheel_emb) -> np.ndarray:
    """openWakeWord's whole-clip mode: the wheel graph on the whole clip, x / 10 + 2, same windows."""
    features = wheel_mel.run(None, {"input": x16.astype(np.float32)[None]})[0][0, 0] / 10 + 2
    windows = _windows(features, len(x16))[..., None].astype(np.float32)
    return wheel_emb.run(None, {"input_1": windows})[0].reshape(len(windows), se.EMBEDDING_SIZE)


def _read_mono_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), rate_hz, se.SAMPLE_RATE_HZ).astype(np.float32)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel_paths() -> tuple[Path, Path]:
    return se.locate_wheel_models()


@pytest.fixture(scope="module")
def written(tmp_path_factory, wheel_paths) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("speech_embedding")
    return out_dir, se.write_graphs(out_dir)


@pytest.fixture(scope="module")
def frontend(written):
    return _session(written[0] / tensors.AUDIO_FRONTEND_FILE)


#: Tolerance of the locality tests. Measured: 0 in a one-thread session (every op then gives a
#: frame the same bits whatever else is in the call); up to 4.8e-7 (one float32 ulp of a value
#: near 6.5) with the default threads, because ONNX Runtime splits the Log over threads by the
#: call's size, and its vectorised and scalar paths differ by an ulp. Bound: 2 ulps of the log.
LOCALITY_ATOL = {1: 0.0, 0: 2e-6}


@pytest.fixture(scope="module", params=sorted(LOCALITY_ATOL, reverse=True), ids=["1-thread", "default-threads"])
def frontend_and_atol(request, written):
    """(front-end session with 1 or the default number of threads, the tolerance that goes with it)."""
    return _session(written[0] / tensors.AUDIO_FRONTEND_FILE, request.param), LOCALITY_ATOL[request.param]


@pytest.fixture(scope="module")
def embedder(written):
    return _session(written[0] / tensors.AUDIO_EMBEDDER_FILE)


@pytest.fixture(scope="module")
def wheel_mel(wheel_paths):
    return _session(wheel_paths[0])


@pytest.fixture(scope="module")
def wheel_emb(wheel_paths):
    return _session(wheel_paths[1])


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory) -> dict[str, np.ndarray]:
    """ESPEAK_CLIPS synthesised with espeak-ng (22.05 kHz), resampled to 16 kHz: float32 [N] each."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng on the PATH (Debian package espeak-ng)")
    out_dir, clips = tmp_path_factory.mktemp("espeak"), {}
    for k, (voice, text) in enumerate(ESPEAK_CLIPS):
        wav = out_dir / f"{k}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        clips[f"{voice}: {text}"] = _read_mono_16k(wav)
    return clips


@pytest.fixture(scope="module")
def alsa_speech() -> dict[str, np.ndarray]:
    """The alsa-utils voice recordings (48 kHz, one real speaker), at 16 kHz: float32 [N] each."""
    paths = [ALSA_DIR / f"{name}.wav" for name in ALSA_VOICES]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"needs the alsa-utils recordings {ALSA_DIR}/{{{','.join(ALSA_VOICES)}}}.wav "
                    "(Debian package alsa-utils)")
    return {p.stem: _read_mono_16k(p) for p in paths}


@pytest.fixture(params=[pytest.param("espeak", marks=pytest.mark.espeak), "alsa"])
def speech(request) -> dict[str, np.ndarray]:
    """Synthetic (espeak-ng) or real (alsa-utils) speech clips, skipped where absent."""
    return request.getfixturevalue(f"{request.param}_speech")


# --- the wheel and its files -------------------------------------------------------------------

def test_locate_finds_the_two_graphs_in_the_wheel(wheel_paths):
    mel, emb = wheel_paths
    assert (mel.name, emb.name) == ("melspectrogram.onnx", "embedding_model.onnx")
    assert mel.parent.parts[-3:] == ("openwakeword", "resources", "models") and mel.parent == emb.parent


def test_locate_without_openwakeword_says_how_to_install_it(monkeypatch):
    # Prepare: None in sys.modules makes find_spec report the package as absent.
    monkeypatch.setitem(sys.modules, "openwakeword", None)
    # Execute / Assert
    with pytest.raises(UsageError, match=r"pip install 'openwakeword==0\.4\.0'"):
        se.locate_wheel_models()


def test_locate_with_a_wheel_that_ships_no_models_names_the_missing_file(tmp_path):
    # Prepare: an openwakeword package without resources/models, as the 0.6.0 wheel installs.
    (tmp_path / "openwakeword").mkdir()
    (tmp_path / "openwakeword" / "__init__.py").write_text("")
    script = ("from edgetune.export.audio.speech_embedding import locate_wheel_models\n"
              "from edgetune.errors import UsageError\n"
              "try:\n    locate_wheel_models()\nexcept UsageError as e:\n    print(e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    # Execute
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    # Assert
    assert "melspectrogram.onnx" in out and "pip install 'openwakeword==0.4.0'" in out


def test_only_the_two_graphs_are_read_from_the_wheel(tmp_path, wheel_paths):
    # Prepare: an audit hook records every file Python opens while the graphs are written.
    script = textwrap.dedent("""
        import json, sys
        opened = []
        sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" else None)
        from pathlib import Path
        from edgetune.export.audio import speech_embedding
        speech_embedding.write_graphs(Path(sys.argv[1]))
        print(json.dumps({"opened": [str(p) for p in opened if isinstance(p, (str, Path))],
                          "imported": "openwakeword" in sys.modules}))
    """)
    # Execute
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    # Assert: nothing else under the installed package (no .py, no wake-word model, no VAD).
    wheel_dir = wheel_paths[0].parents[2]
    from_wheel = {Path(p).resolve() for p in report["opened"] if Path(p).resolve().is_relative_to(wheel_dir.resolve())}
    assert from_wheel == {p.resolve() for p in wheel_paths}
    assert not report["imported"]


def test_provenance_names_origin_license_and_digests(written, wheel_paths):
    import hashlib

    out_dir, provenance = written
    sources = {tensors.AUDIO_FRONTEND_FILE: wheel_paths[0], tensors.AUDIO_EMBEDDER_FILE: wheel_paths[1]}
    assert set(provenance) == set(sources)
    for name, src in sources.items():
        entry = provenance[name]
        assert entry["origin"] == f"PyPI wheel openwakeword==0.4.0, openwakeword/resources/models/{src.name}"
        assert entry["license"] == "Apache-2.0" and "speech_embedding" in entry["license_note"]
        assert entry["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert entry["sha256"] == hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
        assert entry["rewrite"] and "\n" not in entry["rewrite"]


# --- the contract ------------------------------------------------------------------------------

def test_graphs_pass_the_checker_and_keep_opset_13(written):
    for name in (tensors.AUDIO_FRONTEND_FILE, tensors.AUDIO_EMBEDDER_FILE):
        model = onnx.load(str(written[0] / name))
        onnx.checker.check_model(model, full_check=True)
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]


def test_tensor_names_and_shapes(frontend, embedder):
    (fe_in,), (fe_out,) = frontend.get_inputs(), frontend.get_outputs()
    (em_in,), (em_out,) = embedder.get_inputs(), embedder.get_outputs()
    assert (fe_in.name, fe_out.name) == (tensors.AUDIO_FRONTEND_INPUT, tensors.AUDIO_FRONTEND_OUTPUT)
    assert (em_in.name, em_out.name) == (tensors.AUDIO_EMBEDDER_INPUT, tensors.AUDIO_EMBEDDER_OUTPUT)
    assert isinstance(fe_in.shape[0], str) and isinstance(fe_in.shape[1], str) and fe_out.shape[2] == 32
    assert isinstance(em_in.shape[0], str) and em_in.shape[1:] == [76, 32] and em_out.shape[1] == 96
    features = _features(frontend, np.zeros((3, 16000), np.float32))
    assert features.shape == (3, 97, 32) and features.dtype == np.float32
    embedding = _embed(embedder, features[:, :76])
    assert embedding.shape == (3, 96) and embedding.dtype == np.float32


@pytest.mark.parametrize("n_samples", [512, 671, 672, 1280, 1760, 16000])
def test_frame_count_is_1_plus_n_minus_512_over_160_as_in_the_wheel(frontend, wheel_mel, n_samples):
    pcm = np.full((1, n_samples), 0.1, np.float32)
    want = 1 + (n_samples - 512) // 160
    assert se.num_frames(n_samples) == want
    assert _features(frontend, pcm).shape[1] == want == _wheel_db(wheel_mel, pcm).shape[1]


@pytest.mark.parametrize("n_samples", [0, 1, 351, 352, 353, 400, 511])
def test_fewer_than_512_samples_give_no_frames(frontend, n_samples):
    # (The wheel graph fails on these.)
    assert se.num_frames(n_samples) == 0
    assert _features(frontend, np.zeros((2, n_samples), np.float32)).shape == (2, 0, 32)


def test_frame_g_reads_samples_160g_plus_57_to_160g_plus_455(frontend):
    # Prepare: noise, then a click at every sample in turn; which clicks change frame g?
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(1200)).astype(np.float32)
    g = 2
    clicked = np.repeat(x[None], len(x), axis=0)
    clicked[np.arange(len(x)), np.arange(len(x))] += 0.5
    # Execute
    base = _features(frontend, x[None])[0, g]
    changed = np.flatnonzero(np.any(_features(frontend, clicked)[:, g] != base, axis=1))
    # Assert: the 400-sample Hann window whose first tap (sample 160 g + 56) is zero.
    start = 160 * g + se.WINDOW_OFFSET_SAMPLES
    np.testing.assert_array_equal(changed, np.arange(start + 1, start + se.WINDOW_LENGTH_SAMPLES))


# --- agreement with the wheel graphs -----------------------------------------------------------

def test_embedder_equals_the_wheel_graph(embedder, wheel_emb):
    features = np.random.default_rng(2).uniform(-1, 10, (4, 76, 32)).astype(np.float32)
    want = wheel_emb.run(None, {"input_1": features[..., None]})[0].reshape(4, 96)
    np.testing.assert_array_equal(_embed(embedder, features), want)


def test_frontend_equals_the_wheel_graph_where_its_floor_does_not_bind(frontend, wheel_mel):
    # Prepare: loud noise, where no band falls 80 dB below the call's maximum.
    pcm = (0.3 * np.random.default_rng(3).standard_normal((2, 8000))).astype(np.float32)
    # Execute
    ours, wheel = _features(frontend, pcm), _wheel_db(wheel_mel, pcm) / 10 + 2
    # Assert. Measured: max 1.9e-6 on values about 10 (a few float32 ulps): the DFT runs as a
    # MatMul here and as a strided Conv in the wheel, so the sums round differently.
    np.testing.assert_allclose(ours, wheel, rtol=0, atol=1e-5)


def test_digital_silence_gives_the_floor(frontend):
    features = _features(frontend, np.zeros((1, 4000), np.float32))
    np.testing.assert_array_equal(features, np.full_like(features, se.FLOOR_DB / 10 + 2))


# --- locality: what makes streaming exact ------------------------------------------------------

def test_batch_items_equal_single_runs(frontend_and_atol):
    frontend, atol = frontend_and_atol
    rng = np.random.default_rng(4)
    pcm = np.stack([_test_signal(rng), 1e-3 * _test_signal(rng), np.zeros(22000, np.float32)])
    features = _features(frontend, pcm)
    for b in range(3):
        _assert_same(features[b], _features(frontend, pcm[b:b + 1])[0], atol)


def test_embedder_batch_items_equal_single_runs(embedder):
    # Measured: 0 difference, with the default threads.
    features = np.random.default_rng(9).uniform(-1, 10, (5, 76, 32)).astype(np.float32)
    embeddings = _embed(embedder, features)
    for b in range(5):
        np.testing.assert_array_equal(embeddings[b], _embed(embedder, features[b:b + 1])[0])


def test_wheel_graph_mixes_batch_items(wheel_mel):
    # The defect we remove: its ReduceMax runs over the whole batch (measured: up to 60 dB here).
    rng = np.random.default_rng(5)
    quiet, loud = 1e-3 * _test_signal(rng), _test_signal(rng)
    alone = _wheel_db(wheel_mel, quiet[None])[0]
    batched = _wheel_db(wheel_mel, np.stack([quiet, loud]))[0]
    assert np.abs(batched - alone).max() > 10.0  # dB


def test_frames_equal_the_frames_of_their_own_samples(frontend_and_atol):
    # Prepare
    frontend, atol = frontend_and_atol
    x = _test_signal(np.random.default_rng(6))
    # Execute: the whole signal once, and each frame's 512 samples on their own.
    whole = _features(frontend, x[None])[0]
    slices = np.stack([x[160 * g:160 * g + 512] for g in range(len(whole))])
    alone = np.concatenate([_features(frontend, s[None])[0] for s in slices])
    # Assert (LOCALITY_ATOL). The DFT is a MatMul over frames, so each frame is summed in the same
    # order whatever the frame count; the wheel's strided Conv gave differences up to 2.8e-5.
    _assert_same(whole, alone, atol)


def test_any_chunking_gives_the_features_of_the_whole(frontend_and_atol):
    # Prepare: chunks of 1 to 2999 samples; a stream keeps the last 352 samples as context.
    frontend, atol = frontend_and_atol
    rng = np.random.default_rng(7)
    x = _test_signal(rng)
    whole = _features(frontend, x[None])[0]
    # Execute
    pending, streamed, pos = np.zeros(0, np.float32), [], 0
    while pos < len(x):
        size = int(rng.integers(1, 3000))
        pending, pos = np.concatenate([pending, x[pos:pos + size]]), pos + size
        n_frames = se.num_frames(len(pending))
        if n_frames:
            streamed.append(_features(frontend, pending[None])[0])
            pending = pending[n_frames * se.FRAME_HOP_SAMPLES:]
    # Assert (LOCALITY_ATOL)
    _assert_same(np.concatenate(streamed), whole, atol)


def test_loud_audio_in_the_call_leaves_quiet_frames_alone(frontend_and_atol, wheel_mel):
    # Prepare: 0.5 s of quiet noise (-80 dBFS), then 0.5 s of a loud chirp.
    rng = np.random.default_rng(8)
    quiet = (1e-4 * rng.standard_normal(8000)).astype(np.float32)
    t = np.arange(8000) / se.SAMPLE_RATE_HZ
    loud = (0.8 * np.sin(2 * np.pi * (200 * t + 2000 * t ** 2))).astype(np.float32)
    both = np.concatenate([quiet, loud])[None]
    n_quiet = se.num_frames(len(quiet))
    frontend, atol = frontend_and_atol
    # Execute
    ours_alone, ours_both = _features(frontend, quiet[None])[0], _features(frontend, both)[0, :n_quiet]
    wheel_alone, wheel_both = _wheel_db(wheel_mel, quiet[None])[0], _wheel_db(wheel_mel, both)[0, :n_quiet]
    # Assert: the wheel lifts every quiet band (5-25 dB alone) to the loud maximum - 80 dB (31.4
    # dB here): measured rise up to 26 dB.
    assert np.abs(wheel_both - wheel_alone).max() > 10.0
    _assert_same(ours_both, ours_alone, atol)


# --- agreement with openWakeWord's streaming on speech -----------------------------------------

@pytest.mark.filterwarnings(ORT_NO_CUDA)
def test_embeddings_match_openwakeword_streaming_on_speech_with_a_noise_floor(
        speech, frontend, embedder, wheel_paths, wheel_mel, wheel_emb):
    # Prepare: each clip padded with silence, plus a 3 LSB rms noise floor (no digital zeros).
    diffs, own_modes = [], []
    for seed, clip in enumerate(speech.values()):
        x16 = _with_noise_floor(_padded_for_streaming(_as_int16(clip)), seed)
        # Execute
        reference = _oww_streaming_embeddings(x16, *wheel_paths)
        diffs.append(np.abs(_our_streaming_embeddings(x16, frontend, embedder) - reference))
        own_modes.append(np.abs(_wheel_whole_clip_embeddings(x16, wheel_mel, wheel_emb) - reference))
    diffs, own_modes = np.concatenate(diffs), np.concatenate(own_modes)
    # Assert. Embeddings have mean |e| 13, max 85. Measured, ours: espeak-ng max 0.030 / mean
    # 0.0007, alsa max 0.36 / mean 0.0056 (other noise draws: up to 1.02 / 0.013; AudioFeatures
    # still floors quiet bands of a loud call at its local maximum - 80 dB). openWakeWord's own
    # whole-clip mode against its streaming: max 22 / mean 0.86 and max 11 / mean 1.0.
    assert diffs.max() < 1.5 and diffs.mean() < 0.02
    assert diffs.mean() < own_modes.mean() / 10


@pytest.mark.filterwarnings(ORT_NO_CUDA)
def test_embeddings_on_speech_with_digital_silence_are_closer_to_openwakeword_streaming_than_its_whole_clip_mode(
        speech, frontend, embedder, wheel_paths, wheel_mel, wheel_emb):
    # Prepare: the clips as recorded (exact zeros inside and around them).
    diffs, own_modes = [], []
    for clip in speech.values():
        x16 = _padded_for_streaming(_as_int16(clip))
        # Execute
        reference = _oww_streaming_embeddings(x16, *wheel_paths)
        diffs.append(np.abs(_our_streaming_embeddings(x16, frontend, embedder) - reference))
        own_modes.append(np.abs(_wheel_whole_clip_embeddings(x16, wheel_mel, wheel_emb) - reference))
    # Assert. Digital silence is where openWakeWord disagrees with itself (-100 dB in an all-zero
    # call, local max - 80 dB otherwise), so no frame-local rule can follow it closely. Measured
    # mean: ours 1.33 (espeak-ng) and 0.97 (alsa); its whole-clip mode 1.81 and 1.66.
    assert np.concatenate(diffs).mean() < 0.85 * np.concatenate(own_modes).mean()
