"""The ``speech_embedding`` backbone streamed on the device vs openWakeWord's own streaming.

Run: ``python benchmarks/bench_speech_embedding.py`` (about 2 minutes on 2 cores; needs the ``dev``
extras: torch for the DS-CNN bundle, onnx, openwakeword==0.4.0, and ``espeak-ng`` for the audio).

Bundles: a ``speech_embedding`` bundle written by the exporter's own ``write_bundle`` with
``audio_spec(9, "seg3")`` (the wheel's two graphs rewritten to be frame-local: a clip is 9 windows
of 76 frames, 8 frames = 80 ms apart, 1.42 s; and the embedder's streaming graph,
``audio_embedder_stream.onnx``) and a random head; the same bundle's graphs opened without the
stream graph (``AudioModels.from_files`` on its spec with ``embedder_stream_graph=None``: the
window graph on every window, the device's path before the stream graph); and the DS-CNN bundle
of ``tests/support/bundles.py::make_bundle`` (random weights). Audio: espeak-ng sentences (3 voices)
resampled to 16 kHz with soxr, plus Gaussian noise of 1e-4 rms (about 3 LSB: no digital silence),
rounded to int16 so that both implementations read the very same samples; 30 s.

What runs, all on one ONNX Runtime thread (CPU provider):

- **edgetune streaming**: ``AudioPreprocessor`` (``FeatureRing``: the front-end on the 8 frames a
  hop completes) + ``AudioEmbedder`` (the hop's 8 new frames and the state into the stream graph,
  the new window's embedding into a ring of window embeddings, ``seg3`` pooling); and the whole
  device loop, ``audio_pipeline`` + ``run_pipeline`` (head, detector, metrics) over an in-memory
  iterator of 1,280-sample chunks. Each also with the **window graph** (the bundle opened without
  its stream graph: ``AudioEmbedder`` embeds the one 76-frame window that ends in the hop).
- **whole window each hop**: per hop the front-end over the whole clip (140 frames) and the window
  graph over all 9 windows, pooled: the same sessions, what a simple script does.
- **peer, openWakeWord**: ``openwakeword.utils.AudioFeatures`` (0.4.0) built on the wheel's
  ``melspectrogram.onnx`` / ``embedding_model.onnx``, fed 1,280-sample int16 chunks through
  ``__call__`` (its ``_streaming_features``: mel on the chunk + 480 samples, one embedding per
  chunk). ``ncpu=1``: 0.4.0 sets ``intra_op_num_threads`` and ``inter_op_num_threads`` to it, one
  thread. (0.4.0 has no ``inference_framework`` argument; it always runs ONNX, and asks for CUDA
  first, which this onnxruntime does not have.) It first streams 10 s of the noise floor, untimed,
  so that its 10-s sample deque is full (its steady state; nothing of ours grows).

Figures: CPU time (``time.thread_time`` per hop, ``time.process_time`` per run: on 2 shared cores
it is steadier than wall time, and it is what "streams per core" means); RTF = CPU s / audio s,
streams per core = 1 / RTF. Rounds in rotating order, medians over rounds.

Embedding agreement: openWakeWord's frame ``g`` reads its input's samples ``[160 g, 160 g + 512)``;
ours reads the stream after one clip of zeros (22,752 samples, not a multiple of 160), so its
frames end at multiples of 1,280 in the audio and openWakeWord's 128 samples earlier. The peer
therefore reads the audio from sample 128 on: its embedding after chunk ``k`` and our newest
window after hop ``k`` then cover the same 76 frames. A table of other shifts shows that this one
gives the minimum difference. The agreement is shown at espeak-ng's level and 20 dB down, with the
share of mel values that openWakeWord's call-wide floor raised (the one difference by design).

Where the time goes, and prototypes (not edge code): the session runs timed inside each loop,
and the Python pieces alone; the window graph under other ONNX Runtime options; a lean
``AudioEmbedder`` (the stream graph, the window ring a preallocated array, no ``np.stack`` per
hop); 8 streams batched into one embedder call, of the window graph and of the stream graph; a
whole clip's 9 windows by the window graph and through the stream graph in one call
(``AudioModels.embed_features``). The stream graph is the bundle's own
(``export/audio/speech_embedding_stream.py``): the window graph's time convolutions have no
padding and its max-pools stride 2, 1, 2, 1, 2 in time (8 in all, the window stride), so a stream
needs each layer only on its new columns, given the last 2 input columns of each of its 11 time
convolutions as state. Its embeddings are checked against the window graph's at the end.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np

from _machine import machine_info  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgetune.edge.audio.embed import AudioEmbedder  # noqa: E402
from edgetune.edge.audio.preprocess import AudioPreprocessor  # noqa: E402

RATE_HZ = 16000
HOP = 1280  # 80 ms: the window stride, and openWakeWord's chunk
AUDIO_S = 30
PREFEED_S = 10  # openWakeWord keeps 10 s of samples: it streams this much noise first, untimed
NOISE_RMS = 1e-4
N_WINDOWS = 9
PEER_SKIP = 128  # the peer reads the audio from this sample on (see the module docstring)
COMPARE_FROM_HOP = 12  # both start from a window of silence (ours) / ones (peer): skip 76 frames and more
ROUNDS = 5
WHOLE_S = 10
OPTION_ROUNDS = 9
BATCH_STREAMS = 8
PHRASES = ("the quick brown fox jumps over the lazy dog. turn on the kitchen lights, please.",
           "what is the weather like tomorrow morning? set a timer for ten minutes and play some music.")
VOICES = ("en-us", "en+f3", "en-gb")


def espeak_speech(tmp: Path, seconds: float) -> np.ndarray:
    """espeak-ng sentences (each voice and phrase, 0.25 s apart, repeated) at 16 kHz, float32 [n],
    at espeak-ng's own level (peaks near full scale)."""
    from edgetune.edge.audio.io import read_audio

    parts = []
    for k, (voice, text) in enumerate((v, t) for t in PHRASES for v in VOICES):
        wav = tmp / f"say{k}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
        parts += [read_audio(wav, RATE_HZ), np.zeros(RATE_HZ // 4, np.float32)]  # 22,050 Hz -> 16 kHz with soxr
    return np.tile(np.concatenate(parts), 2)[: int(seconds * RATE_HZ)]


def with_noise(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``x`` + NOISE_RMS Gaussian noise, rounded to int16 [n] (what both implementations read)."""
    rng = np.random.default_rng(seed)
    y = x + NOISE_RMS * rng.standard_normal(x.size)
    return np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16)


def noise_floor(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(NOISE_RMS * 32768 * rng.standard_normal(int(seconds * RATE_HZ))).astype(np.int16)


def as_float(x16: np.ndarray) -> np.ndarray:
    return (x16.astype(np.float32) / 32768.0).astype(np.float32)


def hops(x: np.ndarray):
    for start in range(0, x.size - HOP + 1, HOP):
        yield x[start:start + HOP]


# --- the implementations, timed per hop; only openWakeWord's state grows (its sample deque), so only it is
# --- fed PREFEED_S of noise first, untimed (a multiple of 1,280 samples: its frames stay where they were) -------

def run_edgetune(models, audio16) -> dict:
    """AudioPreprocessor + AudioEmbedder: CPU ms per hop, newest window embedding per hop."""
    pre = AudioPreprocessor.for_models(models, HOP)
    embed = AudioEmbedder(models, HOP, pre.ring.silence)
    return _timed(lambda chunk: [embed(step) for step in pre.push(chunk)], as_float(audio16),
                  lambda: embed._ring[-1])  # the embedder's ring of window embeddings: its newest


def run_whole_window(models, audio16) -> dict:
    """Per hop: the front-end over the whole clip, the embedder over all its windows, pooled."""
    lookback = models.params.lookback_samples
    state = {"window": np.zeros((1, lookback + models.clip_samples), dtype=np.float32)}

    def hop(chunk):
        state["window"] = np.concatenate([state["window"][:, HOP:], chunk[None, :]], axis=1)
        return models.embed_features(models.features(state["window"]))[0]

    return _timed(hop, as_float(audio16), None)


def open_peer():
    from openwakeword.utils import AudioFeatures

    from edgetune.export.audio.speech_embedding import locate_wheel_models

    mel, emb = locate_wheel_models()
    return AudioFeatures(melspec_onnx_model_path=str(mel), embedding_onnx_model_path=str(emb), ncpu=1)


def run_peer(audio16, prefeed16, skip: int = PEER_SKIP) -> dict:
    """openWakeWord's AudioFeatures, 1,280-sample int16 chunks; its newest embedding per chunk."""
    peer = open_peer()
    for chunk in hops(prefeed16):
        peer(chunk)
    return _timed(peer, audio16[skip:], lambda: peer.feature_buffer[-1])


def _timed(step, audio, newest) -> dict:
    cpu_ms, windows = [], []
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    for chunk in hops(audio):
        c0 = time.thread_time()
        step(chunk)
        cpu_ms.append(1000.0 * (time.thread_time() - c0))
        if newest is not None:
            windows.append(np.array(newest(), dtype=np.float32))
    return {"cpu_s": time.process_time() - t_cpu, "wall_s": time.perf_counter() - t_wall, "hop_cpu_ms": cpu_ms,
            "windows": np.array(windows), "audio_s": len(cpu_ms) * HOP / RATE_HZ}


def run_loop(bundle, models, audio16, hop_ms: float | None) -> dict:
    """The whole device loop: audio_pipeline + run_pipeline over in-memory 1,280-sample chunks."""
    from edgetune.edge.audio.pipeline import audio_pipeline
    from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
    from edgetune.edge.pipeline.loop import LoopSettings, run_pipeline
    from edgetune.edge.sinks import CollectingSink

    heads = HeadSet([ActiveHead(bundle.bundle_head().name, bundle.head, 0)])
    pipeline = audio_pipeline(bundle, models, hops(as_float(audio16)), heads, hop_ms=hop_ms)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    summary = run_pipeline(pipeline, CollectingSink(), LoopSettings())
    return {"cpu_s": time.process_time() - t_cpu, "wall_s": time.perf_counter() - t_wall, "audio_s": summary.stream_s,
            "hop_ms": pipeline.info["hop_ms"]}


# --- prototypes and helpers (not edge code) ---------------------------------------------------------------------

def ort_session(path: Path, **options):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = options.pop("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if "mode" in options:
        opts.execution_mode = options.pop("mode")
    for key, value in options.pop("config", {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"], **options)


class BatchedStreams:
    """``batch`` streams in one stream-graph call per hop (``AudioModels.embed_stream`` on their 8 new
    frames each and their stacked states); then the same ring and pooling as AudioEmbedder."""

    def __init__(self, models, silence: np.ndarray, batch: int = 1) -> None:
        self.models, self.new_frames = models, HOP // models.params.frame_hop_samples
        self.state = models.stream_state(np.repeat(silence[None], batch, axis=0))
        start = models.window_embeddings(silence[None])[0]  # [n_windows, D]
        self.rings = [deque(start, maxlen=models.embedder_spec.n_windows) for _ in range(batch)]

    def __call__(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Each stream's feature window [frames_per_clip, F] after the hop -> its pooled embedding."""
        new = np.stack([w[-self.new_frames:] for w in windows])  # [S, 8, F]
        emb, self.state = self.models.embed_stream(new, self.state)
        for ring, e in zip(self.rings, emb):
            ring.extend(e)
        return [self.models.pool(np.stack(ring)[None])[0] for ring in self.rings]


class LeanEmbedder:
    """Prototype of AudioEmbedder's Python side (the stream graph, ``seg3`` only): the window ring a
    preallocated array (no ``np.stack``), the pooling on fixed slices."""

    def __init__(self, models, silence: np.ndarray) -> None:
        spec = models.embedder_spec
        self.models, self.new_frames = models, HOP // models.params.frame_hop_samples
        self.ring = models.window_embeddings(silence[None])[0].copy()  # [n_windows, D], oldest first
        self.state = models.stream_state(silence[None])
        self.parts = [(p[0], p[-1] + 1) for p in np.array_split(np.arange(spec.n_windows), 3)]

    def __call__(self, step) -> np.ndarray:
        fresh, self.state = self.models.embed_stream(step.data[None, -self.new_frames:], self.state)  # [1, 1, D]
        self.ring[:-1] = self.ring[1:]
        self.ring[-1] = fresh[0, 0]
        return np.concatenate([self.ring[a:b].mean(axis=0) for a, b in self.parts])


def run_lean(models, audio16) -> dict:
    """AudioPreprocessor + the lean embedder; also the pooled embeddings, to check them."""
    pre = AudioPreprocessor.for_models(models, HOP)
    embed = LeanEmbedder(models, pre.ring.silence)
    pooled = []
    out = _timed(lambda chunk: pooled.extend(embed(step) for step in pre.push(chunk)), as_float(audio16),
                 lambda: embed.ring[-1])
    return {**out, "pooled": np.array(pooled)}


def run_batched(models, audio16, streams: int, embed_fn) -> dict:
    """``streams`` streams (the audio at different offsets), one preprocessor each; per hop all their
    windows go to ``embed_fn`` (list of windows -> list of pooled embeddings) in one call."""
    x = as_float(audio16)
    shifted = [np.roll(x, s * 7 * HOP) for s in range(streams)]
    pres = [AudioPreprocessor.for_models(models, HOP) for _ in range(streams)]
    t_cpu = time.process_time()
    n = 0
    for start in range(0, x.size - HOP + 1, HOP):
        steps = [next(iter(p.push(s[start:start + HOP]))) for p, s in zip(pres, shifted)]
        embed_fn([st.data for st in steps])
        n += 1
    return {"cpu_s": time.process_time() - t_cpu, "audio_s": n * HOP / RATE_HZ * streams}


def window_batched(models):
    """The window graph, batched: each stream's newest window in one ``models.embed`` call, rings and
    pooling (the rings start from the first hop's embeddings: this only times)."""
    rings: list[deque] = []
    w, n = models.embedder_spec.window_frames, models.embedder_spec.n_windows

    def embed(windows):
        out = models.embed(np.stack([x[-w:] for x in windows]))
        while len(rings) < len(windows):
            rings.append(deque(out[:1].repeat(n, 0), maxlen=n))
        for ring, e in zip(rings, out):
            ring.append(e)
        return [models.pool(np.stack(ring)[None])[0] for ring in rings]

    return embed


class TimedSession:
    """Wraps an ONNX Runtime session and adds up the thread CPU time of its ``run`` calls."""

    def __init__(self, session) -> None:
        self.session, self.cpu_s, self.calls = session, 0.0, 0

    def run(self, *args, **kwargs):
        t0 = time.thread_time()
        out = self.session.run(*args, **kwargs)
        self.cpu_s += time.thread_time() - t0
        self.calls += 1
        return out

    def __getattr__(self, name):
        return getattr(self.session, name)


def cpu_per_call_ms(fn, calls: int, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        for _ in range(max(2, calls // 10)):
            fn()
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        times.append(1000.0 * (time.process_time() - t0) / calls)
    return statistics.median(times)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the peer asks for CUDA first; keep its warning out of the table
    import soxr

    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.runtime.providers import ProviderSettings
    from edgetune.export.audio.speech_embedding_export import audio_spec, speech_embedding_graphs
    from edgetune.export.bundle import KEYWORD_HEAD, HeadArrays, write_bundle

    from tests.support.bundles import device_trust, make_bundle, signing_key
    from edgetune.export.signing import sign_bundle

    wall_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="edgetune-bench-speech-"))
    try:
        t0 = time.perf_counter()
        spec = audio_spec(N_WINDOWS, "seg3")
        labels = ("_background_", "yes", "no", "zero", "one")
        rng = np.random.default_rng(0)
        weight = (rng.standard_normal((len(labels), spec.embedding_size)) / np.sqrt(spec.embedding_size))
        write_bundle(tmp / "speech", bundle_id="bench-speech", bundle_version="0.0.0", audio=spec,
                     write_graphs=speech_embedding_graphs(spec),
                     heads=[HeadArrays(KEYWORD_HEAD, labels, weight.astype(np.float32), np.zeros(len(labels)))])
        sign_bundle(tmp / "speech", signing_key())
        speech = load_bundle(tmp / "speech", trust=device_trust())
        speech_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        dscnn = load_bundle(make_bundle(tmp / "dscnn"), trust=device_trust())
        dscnn_s = time.perf_counter() - t0
        one_thread = ProviderSettings(providers=("cpu",), intra_op_threads=1)
        models, ds_models = AudioModels(speech, one_thread), AudioModels(dscnn, one_thread)
        if not models.streams:
            raise SystemExit("the speech_embedding bundle has no stream graph; the exporter should write one")
        # the same graphs without the stream graph: the window graph on every window
        window_models = AudioModels.from_files(dataclasses.replace(spec, embedder_stream_graph=None),
                                               speech.directory, one_thread)
        voice = espeak_speech(tmp, AUDIO_S)
        audio16, quiet16 = with_noise(voice), with_noise(0.1 * voice)  # the same speech, and 20 dB down
        prefeed16 = noise_floor(PREFEED_S)

        print(f"speech_embedding streamed: {AUDIO_S} s of espeak-ng speech ({len(VOICES)} voices, soxr to 16 kHz, "
              f"+{NOISE_RMS:g} rms noise, int16), 80 ms hops ({HOP} samples), 1 ONNX Runtime thread, CPU provider; "
              f"{ROUNDS} rounds (rotating order)")
        print(f"bundles: speech_embedding audio_spec({N_WINDOWS}, 'seg3') (clip {spec.clip_samples} samples = "
              f"{spec.clip_samples / RATE_HZ:.2f} s, {spec.frames_per_clip} frames, {N_WINDOWS} windows of 76), "
              f"random head, made in {speech_s:.1f} s; DS-CNN make_bundle (random weights), made in {dscnn_s:.1f} s")
        print(machine_info(numpy=np.__version__, onnxruntime=ort.__version__,
                           openwakeword=importlib.metadata.version("openwakeword"), soxr=soxr.__version__))
        print()

        # A + B: the rounds. Each implementation once per round, in rotating order.
        # (the whole-window script runs on the first WHOLE_S: 16 ms a hop; its per-hop cost does not change)
        impls = {
            "edgetune streaming": lambda x: run_edgetune(models, x),
            "edgetune streaming, window graph": lambda x: run_edgetune(window_models, x),
            "whole window each hop": lambda x: run_whole_window(window_models, x[: WHOLE_S * RATE_HZ]),
            "openWakeWord AudioFeatures": lambda x: run_peer(x, prefeed16),
            "edgetune loop, speech_embedding": lambda x: run_loop(speech, models, x, None),
            "edgetune loop, window graph": lambda x: run_loop(speech, window_models, x, None),
            "edgetune loop, DS-CNN": lambda x: run_loop(dscnn, ds_models, x, None),
            "prototype lean AudioEmbedder": lambda x: run_lean(models, x),
        }
        for fn in impls.values():  # warm-up
            fn(audio16[: 3 * RATE_HZ])
        results: dict[str, list[dict]] = {k: [] for k in impls}
        keys = list(impls)
        for r in range(ROUNDS):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                results[key].append(impls[key](audio16))

        def med(key, field):
            return statistics.median(r[field] for r in results[key])

        def hop_ms(key):
            return np.concatenate([r["hop_cpu_ms"] for r in results[key]])

        print("A. Backbone cost per 80 ms hop: CPU ms (thread time) per hop, over all rounds' hops")
        rows = [("edgetune streaming", "8 new frames, stream graph on them, pool"),
                ("edgetune streaming, window graph", "8 new frames, 1 new window, pool"),
                ("whole window each hop", f"{spec.frames_per_clip} frames, {N_WINDOWS} windows, pool"),
                ("openWakeWord AudioFeatures", "mel on 1760 samples (8 frames), 1 window")]
        header = f"{'implementation':<32} {'computes per hop':<42} {'median':>7} {'p90':>7} {'mean':>7} {'vs whole':>9}"
        print(header)
        print("-" * len(header))
        whole = np.median(hop_ms("whole window each hop"))
        for key, what in rows:
            h = hop_ms(key)
            print(f"{key:<32} {what:<42} {np.median(h):>7.3f} {np.percentile(h, 90):>7.3f} {h.mean():>7.3f} "
                  f"{whole / np.median(h):>8.2f}x")
        ours, peer = np.median(hop_ms("edgetune streaming")), np.median(hop_ms("openWakeWord AudioFeatures"))
        window = np.median(hop_ms("edgetune streaming, window graph"))
        print(f"ratio whole window / edgetune streaming: {whole / ours:.2f}x; openWakeWord / edgetune streaming: "
              f"{peer / ours:.2f}x, with the window graph {peer / window:.2f}x (median per hop; > 1: edgetune is "
              f"cheaper)")
        print()

        print("B. Streams one core keeps in real time: RTF = CPU s / audio s (median over rounds), "
              "streams/core = 1/RTF")
        rows = [("edgetune loop, speech_embedding", "audio_pipeline + run_pipeline: head, detector, metrics"),
                ("edgetune streaming", "AudioPreprocessor + AudioEmbedder: what the peer does"),
                ("openWakeWord AudioFeatures", "the peer, ncpu=1, steady state"),
                ("edgetune loop, window graph", "the loop, the bundle opened without its stream graph"),
                ("edgetune streaming, window graph", "AudioEmbedder on the window ending in the hop"),
                ("edgetune loop, DS-CNN", "audio_pipeline + run_pipeline, 100 ms hops, 1 s clip"),
                ("prototype lean AudioEmbedder", "stream graph; ring an array, no np.stack (not edge code)")]
        header = (f"{'implementation':<44} {'audio s':>7} {'CPU s':>7} {'wall s':>7} {'RTF':>7} {'streams/core':>12} "
                  f"{'vs peer':>8}  what")
        print(header)
        print("-" * len(header))
        peer_rtf = med("openWakeWord AudioFeatures", "cpu_s") / med("openWakeWord AudioFeatures", "audio_s")
        streams = {}
        for key, what in rows:
            rtf = med(key, "cpu_s") / med(key, "audio_s")
            streams[key] = 1 / rtf
            print(f"{key:<44} {med(key, 'audio_s'):>7.1f} {med(key, 'cpu_s'):>7.3f} {med(key, 'wall_s'):>7.3f} "
                  f"{rtf:>7.4f} {1 / rtf:>12.0f} {peer_rtf / rtf:>7.2f}x  {what}")
        batched = {}
        silence = AudioPreprocessor.for_models(models, HOP).ring.silence
        for name, fn in (("window graph", window_batched(window_models)),
                         ("stream graph", BatchedStreams(models, silence, batch=BATCH_STREAMS))):
            runs = [run_batched(models, audio16[: 10 * RATE_HZ], BATCH_STREAMS, fn) for _ in range(ROUNDS)]
            rtf = statistics.median(r["cpu_s"] / r["audio_s"] for r in runs)
            batched[name] = 1 / rtf
            print(f"{f'{BATCH_STREAMS} streams batched, {name}':<44} {runs[0]['audio_s']:>7.1f} "
                  f"{statistics.median(r['cpu_s'] for r in runs):>7.3f} {'':>7} {rtf:>7.4f} {1 / rtf:>12.0f} "
                  f"{peer_rtf / rtf:>7.2f}x  {BATCH_STREAMS} preprocessors, one embedder call per hop (not edge code)")
        theirs = streams["openWakeWord AudioFeatures"]
        print(f"ratio edgetune / openWakeWord streams per core: loop "
              f"{streams['edgetune loop, speech_embedding'] / theirs:.2f}x, backbone alone "
              f"{streams['edgetune streaming'] / theirs:.2f}x (target: 2x); with the window graph: loop "
              f"{streams['edgetune loop, window graph'] / theirs:.2f}x, backbone alone "
              f"{streams['edgetune streaming, window graph'] / theirs:.2f}x; {BATCH_STREAMS} streams batched "
              f"{batched['stream graph'] / theirs:.2f}x")
        print("(CPU s: process time of the timed part (openWakeWord's 10 s pre-feed is not timed; nothing of ours "
              "grows, so ours has none); wall s on shared cores, for reference; audio s of the batched rows: all "
              "streams' audio)")
        print()

        print("C. Window embeddings: edgetune's newest window (AudioEmbedder's ring) vs openWakeWord's newest "
              f"(feature_buffer[-1]), per hop from hop {COMPARE_FROM_HOP} on")
        ours_w = results["edgetune streaming"][0]["windows"]
        print(f"{'alignment (peer frames vs ours)':<40} {'hops':>5} {'max |diff|':>10} {'mean |diff|':>11}")
        for shift, skip, lag in ((-1280, PEER_SKIP, -1), (-128, 0, 0), (0, PEER_SKIP, 0), (160, PEER_SKIP + 160, 0),
                                 (1280, PEER_SKIP, 1)):
            peer_w = results["openWakeWord AudioFeatures"][0]["windows"] if skip == PEER_SKIP else \
                run_peer(audio16, prefeed16, skip)["windows"]
            ks = np.arange(COMPARE_FROM_HOP, min(len(ours_w), len(peer_w)) - 1)
            d = np.abs(ours_w[ks] - peer_w[ks + lag])
            label = f"{shift:+d} samples" + (" (chosen: peer from sample 128)" if shift == 0 else "")
            print(f"{label:<40} {len(ks):>5} {d.max():>10.3g} {d.mean():>11.3g}")
        print()
        print(f"{'audio':<40} {'max |diff|':>10} {'mean |diff|':>11} {'peer mean |e|':>13} {'mel max |diff|':>14} "
              f"{'peer floor binds':>16}")
        for name, x16 in ((f"espeak-ng's level (peaks {peak_range(audio16)} dBFS)", audio16),
                          (f"20 dB quieter (peaks {peak_range(quiet16)} dBFS)", quiet16)):
            d, dm, bound, scale = agreement(models, x16, prefeed16)
            print(f"{name:<40} {d.max():>10.3g} {d.mean():>11.3g} {scale:>13.1f} "
                  f"{dm.max():>14.2g} {bound:>15.2%}")
        print("(mel: the 8 frames each call adds, ours vs the peer's melspectrogram_buffer. peer floor binds: share of "
              "those values the peer raised by its call-wide floor (the call's max - 80 dB over 1,760 samples) above "
              "ours by > 1e-3; ours, a fixed -20 dB floor, sits below int16 rounding noise: the one difference by "
              "design between the two front-ends)")
        print()

        print(f"D. Where the time goes (CPU ms per hop, mean over the {AUDIO_S} s, session runs timed inside)")
        _breakdown(models, audio16, prefeed16)
        print()
        _options(models, window_models, speech, spec, audio16)
        print(f"\nwall time of this run: {time.perf_counter() - wall_start:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def peak_range(x16: np.ndarray) -> str:
    """The quietest and loudest rendering's peak in dBFS (renderings are 0.25 s of noise apart)."""
    x = np.abs(x16.astype(np.float32)) / 32768.0
    loud = x > 0.01
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    peaks, start = [], None
    for a, b in zip(edges[::2], edges[1::2]):  # runs of loud samples; a gap of > 0.1 s starts a new rendering
        if start is None or a - start[1] > RATE_HZ // 10:
            if start is not None:
                peaks.append(x[start[0]:start[1]].max())
            start = [a, b]
        else:
            start[1] = b
    if start is not None:
        peaks.append(x[start[0]:start[1]].max())
    db = 20 * np.log10(np.array(peaks))
    return f"{db.min():.1f}..{db.max():.1f}"


def agreement(models, x16, prefeed16):
    """Ours and the peer in lockstep over ``x16``: |window embedding diff| [H, 96], |mel diff| [H, 8, 32]
    the share of the peer's mel values its call-wide floor raised above ours, the peer's mean |embedding|."""
    pre = AudioPreprocessor.for_models(models, HOP)
    embed = AudioEmbedder(models, HOP, pre.ring.silence)
    peer = open_peer()
    for chunk in hops(prefeed16):
        peer(chunk)
    d, dm, scale = [], [], []
    x = as_float(x16)
    for k, start in enumerate(range(0, x16.size - PEER_SKIP - HOP + 1, HOP)):
        for step in pre.push(x[start:start + HOP]):
            embed(step)
        peer(x16[PEER_SKIP + start:PEER_SKIP + start + HOP])
        if k >= COMPARE_FROM_HOP:
            d.append(np.abs(embed._ring[-1] - peer.feature_buffer[-1]))
            scale.append(np.abs(peer.feature_buffer[-1]).mean())
            dm.append(pre.ring.window()[-8:] - peer.melspectrogram_buffer[-8:])
    dm = np.array(dm)
    return np.array(d), np.abs(dm), float(np.mean(dm < -1e-3)), float(np.mean(scale))


def _breakdown(models, audio16, prefeed16) -> None:
    """``models``' device path (the stream graph) against the peer, then the Python pieces alone."""
    x = audio16
    # the sessions AudioModels runs: front-end, window graph, stream graph
    fe, em, st = TimedSession(models._frontend), TimedSession(models._embedder), TimedSession(models._stream)
    models._frontend, models._embedder, models._stream = fe, em, st
    try:
        pre = AudioPreprocessor.for_models(models, HOP)
        embed = AudioEmbedder(models, HOP, pre.ring.silence)
        fe.cpu_s = em.cpu_s = st.cpu_s = 0.0
        c = []
        for chunk in hops(as_float(x)):
            c0 = time.thread_time()
            for step in pre.push(chunk):
                embed(step)
            c.append(1000 * (time.thread_time() - c0))
        ours = {"front-end graph": 1000 * fe.cpu_s / len(c), "embedder graph": 1000 * (em.cpu_s + st.cpu_s) / len(c)}
        ours["everything else"] = float(np.mean(c)) - sum(ours.values())
    finally:
        models._frontend, models._embedder, models._stream = fe.session, em.session, st.session
    peer = open_peer()
    for chunk in hops(prefeed16):
        peer(chunk)
    pm, pe = TimedSession(peer.melspec_model), TimedSession(peer.embedding_model)
    peer.melspec_model, peer.embedding_model = pm, pe
    c = []
    for chunk in hops(x):
        c0 = time.thread_time()
        peer(chunk)
        c.append(1000 * (time.thread_time() - c0))
    theirs = {"front-end graph": 1000 * pm.cpu_s / len(c), "embedder graph": 1000 * pe.cpu_s / len(c)}
    theirs["everything else"] = float(np.mean(c)) - sum(theirs.values())
    print(f"{'part':<20} {'edgetune':>9} {'openWakeWord':>12}")
    for part in ours:
        print(f"{part:<20} {ours[part]:>9.3f} {theirs[part]:>12.3f}")
    print(f"{'total':<20} {sum(ours.values()):>9.3f} {sum(theirs.values()):>12.3f}")

    # the Python and numpy pieces, timed alone
    pre = AudioPreprocessor.for_models(models, HOP)
    embed = AudioEmbedder(models, HOP, pre.ring.silence)
    buf = np.zeros(models.clip_samples + HOP, np.float32)
    hop = np.zeros(HOP, np.float32)
    ring = embed._ring
    deq = peer.raw_data_buffer
    pieces = [
        ("FeatureRing: np.concatenate of the sample buffer", lambda: np.concatenate([buf, hop]), "edgetune"),
        ("FeatureRing: ring append (concatenate + slice)",
         lambda: np.concatenate([pre.ring.window(), pre.ring.window()[-8:]])[-models.frames_per_clip:], "edgetune"),
        ("AudioEmbedder: np.stack(ring) + seg3 pool", lambda: models.pool(np.stack(ring)[None])[0], "edgetune"),
        ("openWakeWord: list(deque of 160,000 samples)[-1760:]", lambda: list(deq)[-1760:], "peer"),
        ("openWakeWord: chunk.tolist() into the deque", lambda: deq.extend(audio16[:HOP].tolist()), "peer"),
    ]
    for name, fn, who in pieces:
        print(f"  {name:<56} {1000 * cpu_per_call_ms(fn, 500):>7.1f} us  ({who})")


def _options(models, window_models, speech, spec, audio16) -> None:
    import onnxruntime as ort

    from edgetune.contract import tensors

    # real windows of speech features
    pre = AudioPreprocessor.for_models(models, HOP)
    wins = [s.data[-76:].copy() for c in hops(as_float(audio16[: 5 * RATE_HZ])) for s in pre.push(c)]
    w1 = wins[-1][None]
    level = ort.GraphOptimizationLevel
    for title, path, feed, check in (
            ("Window graph, one window of speech features", speech.directory / spec.embedder_file, {"features": w1},
             ("AudioModels.embed (checks, contiguous copy)", lambda: models.embed(w1))),
            ("Stream graph, one hop's 8 new frames of speech + the state",
             speech.directory / tensors.AUDIO_EMBEDDER_STREAM_FILE, None, None)):
        if feed is None:  # the stream graph: the state after the hops before the last
            state = models.stream_state(np.concatenate(wins[-11:-1])[None, -80:])
            new = wins[-1][None, -8:]
            feed = {"features": new, **{f"state_in_{i}": v for i, v in enumerate(state)}}
            check = ("AudioModels.embed_stream (checks, contiguous copy)", lambda: models.embed_stream(new, state))
        variants = {
            "ALL (the device's create_session)": ort_session(path),
            "EXTENDED (no NCHWc layout)": ort_session(path, level=level.ORT_ENABLE_EXTENDED),
            "BASIC": ort_session(path, level=level.ORT_ENABLE_BASIC),
            "DISABLE_ALL": ort_session(path, level=level.ORT_DISABLE_ALL),
            "ALL, NchwcTransformer disabled": ort_session(path, disabled_optimizers=["NchwcTransformer"]),
            "ALL, PARALLEL mode (ORT's own inter-op pool)": ort_session(path, mode=ort.ExecutionMode.ORT_PARALLEL),
            "ALL, denormals as zero": ort_session(path, config={"session.set_denormal_as_zero": "1"}),
        }
        base = variants["ALL (the device's create_session)"]
        calls = {name: (lambda s=s: s.run(None, feed)) for name, s in variants.items()}  # every output, states too
        if "state_in_0" not in feed:
            binding = base.io_binding()
            out = np.empty((1, 96), np.float32)
            binding.bind_cpu_input("features", w1)
            binding.bind_output("embedding", "cpu", 0, np.float32, out.shape, out.ctypes.data)
            calls["ALL, IOBinding (preallocated output)"] = lambda b=binding: base.run_with_iobinding(b)
        calls[check[0]] = check[1]
        times = {name: [] for name in calls}
        for _ in range(OPTION_ROUNDS):  # interleaved, so load drifts fall on all
            for name, fn in calls.items():
                times[name].append(cpu_per_call_ms(fn, 60, rounds=1))
        ref = base.run(["embedding"], feed)[0]
        print(f"{title}, ONNX Runtime options (CPU ms per call over {OPTION_ROUNDS} interleaved rounds of 60 calls, "
              f"1 thread)")
        print(f"{'variant':<52} {'median':>7} {'best':>7} {'vs ALL':>7}  max |diff| vs ALL")
        t_all = statistics.median(times["ALL (the device's create_session)"])
        for name in calls:
            t = statistics.median(times[name])
            got = variants[name].run(["embedding"], feed)[0] if name in variants else ref
            print(f"{name:<52} {t:>7.3f} {min(times[name]):>7.3f} {t_all / t:>6.2f}x  {np.abs(got - ref).max():.1e}")
        print("(vs ALL: median of ALL / this one's; best: the fastest round, the least disturbed by other processes)")
        print()

    print("Batching, and whole clips (CPU ms; 'per window' = per stream-hop, or per window of the clip)")
    print(f"{'what':<66} {'ms/call':>8} {'ms/window':>9} {'vs window B=1':>13}")
    rows = []
    for b in (1, 4, 16):
        wb = np.stack(wins[:b])
        rows.append((f"window graph, batch {b}", lambda wb=wb: window_models.embed(wb), b))
    silence = AudioPreprocessor.for_models(models, HOP).ring.silence
    for b in (1, 4, 16):
        state = models.stream_state(np.repeat(silence[None], b, axis=0))
        new = np.stack([w[-8:] for w in wins[:b]])
        rows.append((f"stream graph, 8 new frames + state, batch {b}",
                     lambda new=new, st=state: models.embed_stream(new, st), b))
    clip_features = np.concatenate(wins[:1] + [w[-8:] for w in wins[1:N_WINDOWS]])[None]  # 140 frames
    rows.append(("window graph: a whole clip's 9 windows (embed_features)",
                 lambda: window_models.embed_features(clip_features), N_WINDOWS))
    rows.append(("stream graph: the clip's 140 frames, one call (embed_features)",
                 lambda: models.embed_features(clip_features), N_WINDOWS))
    t_one = None
    for name, fn, b in rows:
        t = cpu_per_call_ms(fn, max(10, 200 // b))
        t_one = t_one or t
        print(f"{name:<66} {t:>8.3f} {t / b:>9.3f} {t_one / (t / b):>12.2f}x")
    # exactness: the stream graph against the window graph
    nine = window_models.window_embeddings(clip_features)
    print(f"check: a clip's 9 window embeddings, stream graph (one call) vs window graph max |diff| "
          f"{np.abs(models.window_embeddings(clip_features) - nine).max():.1e} (scale {np.abs(nine).max():.0f})")
    a = run_edgetune(models, audio16[: 10 * RATE_HZ])["windows"]
    w = run_edgetune(window_models, audio16[: 10 * RATE_HZ])["windows"]
    print(f"check: AudioEmbedder with the stream graph vs the window graph, {len(a)} hops of speech: newest window "
          f"embeddings max |diff| {np.abs(a - w).max():.1e} (scale {np.abs(w).max():.0f})")
    pre = AudioPreprocessor.for_models(models, HOP)
    embed = AudioEmbedder(models, HOP, pre.ring.silence)
    device = np.array([embed(st) for c in hops(as_float(audio16[: 10 * RATE_HZ])) for st in pre.push(c)])
    lean = run_lean(models, audio16[: 10 * RATE_HZ])["pooled"]
    print(f"check: lean AudioEmbedder vs AudioEmbedder, pooled seg3 embeddings max |diff| "
          f"{np.abs(device - lean).max():.1e}")


if __name__ == "__main__":
    main()
