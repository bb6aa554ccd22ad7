"""The device's streaming loop end to end: ``audio_pipeline`` + ``run_pipeline`` vs a naive per-hop script.

Run: ``python benchmarks/bench_stream.py`` (about 20 s on 2 cores; needs the ``dev`` extras: the
bundle is exported with torch first).

The bundle is a real one written by the exporter (``tests/support/bundles.py::make_bundle``): the
real MFCC front-end graph and a real DS-CNN embedder graph (64 channels, 4 blocks: the default
architecture), with **random seeded weights** — so detections mean nothing, but every operation,
shape and cost is that of a trained bundle of the same architecture.

- **edgetune**: ``edge.audio.pipeline.audio_pipeline`` over 60 s of audio from an in-memory
  iterator of 1,600-sample chunks (the size the file and stdin sources read), 100 ms hops, one head
  (``HeadSet``), run by ``edge.pipeline.loop.run_pipeline`` into a ``CollectingSink``: per hop
  ``AudioPreprocessor`` (``FeatureRing``: front-end on the new frames only) + ``AudioEmbedder`` +
  head + detector, plus the loop's bookkeeping and a metrics report every 10 s.
- **naive peer**: the same chunks; per 100 ms hop the last 1 s window (+ look-back sample) is
  rebuilt, the front-end graph runs over the whole window, then the embedder and the head — the
  same ONNX Runtime sessions (``AudioModels.features`` / ``.embed_features``), the same ``Head`` and
  the same ``Detector``, so the only difference is how the features are computed.

Per-hop latency is measured the same way for both (``time.perf_counter`` from the hop's samples to
its posteriors; for edgetune it is ``run_pipeline``'s own figure); real-time factor = wall time of
the whole run / seconds of audio. Several rounds, rotating order; medians over rounds.

Both run twice: with ONNX Runtime's default intra-op thread pool (``intra_op_threads=0``) and with
one thread (``intra_op_threads=1``, the daemon's default since this benchmark showed it). The
front-end and embedder sessions each have their own pool; on 2 cores their spinning workers make
an occasional hop wait for a scheduler tick, which shows in p99.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _machine import machine_info  # noqa: E402  (benchmarks/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AUDIO_S = 60
CHUNK_SAMPLES = 1600
HOP_MS = 100.0
ROUNDS = 5


def test_audio(seconds: float, rate_hz: int, seed: int = 0) -> np.ndarray:
    """Low noise with a louder word-like burst every 1.5 s, float32 [n] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    x = 0.01 * rng.standard_normal(n)
    burst = int(0.3 * rate_hz)
    t = np.arange(burst) / rate_hz
    for start in range(rate_hz // 2, n - burst, int(1.5 * rate_hz)):
        x[start:start + burst] += 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) * np.hanning(burst)
    return np.clip(x, -1, 1).astype(np.float32)


def chunks(audio: np.ndarray):
    for start in range(0, audio.size, CHUNK_SAMPLES):
        yield audio[start:start + CHUNK_SAMPLES]


def run_naive(models, head, bundle, audio: np.ndarray, hop: int, detector_settings):
    """The simple script: per hop, the front-end over the whole window, then embedder and head.

    Returns (wall s, per-hop latencies ms, detections [(label, offset_s)], posteriors [H, C]).
    """
    from edgetune.edge.audio.detect import Detector

    rate = models.rate_hz
    lookback = models.params.lookback_samples
    detector = Detector(head.labels, detector_settings, clip_s=models.clip_samples / rate,
                        background_label=bundle.background_label)
    window = np.zeros((1, lookback + models.clip_samples), dtype=np.float32)  # starts as silence, like the ring
    pending = np.zeros(0, dtype=np.float32)
    latencies, detections, posteriors = [], [], []
    index = 0
    t_start = time.perf_counter()
    for chunk in chunks(audio):
        pending = np.concatenate([pending, chunk])
        while pending.size >= hop:
            samples, pending = pending[:hop], pending[hop:]
            t0 = time.perf_counter()
            window = np.concatenate([window[:, hop:], samples[None, :]], axis=1)
            embedding = models.embed_features(models.features(window))[0]  # [1, T, F] -> [1, D] -> [D]
            post = head.predict_proba(embedding)
            latency_ms = 1000.0 * (time.perf_counter() - t0)
            index += 1
            det = detector.update(post, index * hop / rate, latency_ms)
            latencies.append(latency_ms)
            posteriors.append(post)
            if det is not None:
                detections.append((det.label, round(det.offset_s, 4)))
    wall_s = time.perf_counter() - t_start
    return wall_s, latencies, detections, np.array(posteriors)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # the loop logs at INFO; keep the table readable
    import onnxruntime as ort
    from edgetune.edge.audio.detect import DetectorSettings
    from edgetune.edge.audio.embed import AudioEmbedder
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.audio.pipeline import audio_pipeline
    from edgetune.edge.audio.preprocess import AudioPreprocessor
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.metrics import latency_percentiles
    from edgetune.edge.pipeline.heads import ActiveHead, HeadSet
    from edgetune.edge.pipeline.loop import LoopSettings, run_pipeline
    from edgetune.edge.runtime.providers import ProviderSettings
    from edgetune.edge.sinks import CollectingSink

    from tests.support.bundles import device_trust, make_bundle

    tmp = Path(tempfile.mkdtemp(prefix="edgetune-bench-stream-"))
    try:
        t0 = time.perf_counter()
        bundle = load_bundle(make_bundle(tmp / "bundle"), trust=device_trust())
        setup_s = time.perf_counter() - t0
        # Two thread settings: ONNX Runtime's default intra-op pool (0) and one thread per session
        # (the daemon's default).
        models = {t: AudioModels(bundle, ProviderSettings(providers=("cpu",), intra_op_threads=t)) for t in (0, 1)}
        detector = DetectorSettings()
        head = bundle.head
        rate = models[0].rate_hz
        hop = int(HOP_MS * rate / 1000)
        audio = test_audio(AUDIO_S, rate)

        print(f"Streaming loop: {AUDIO_S} s of audio, {HOP_MS:g} ms hops ({hop} samples), 1 s window, "
              f"chunks of {CHUNK_SAMPLES} samples from memory, {ROUNDS} rounds each (rotating order)")
        print(f"bundle: make_bundle random weights (DS-CNN {models[0].embedding_size}-d embedding, "
              f"{len(head.labels)} labels), made in {setup_s:.1f} s; provider {models[0].provider}")
        print(machine_info(numpy=np.__version__, onnxruntime=ort.__version__))
        print()

        def edgetune_run(threads: int, samples: np.ndarray) -> tuple[dict, list]:
            sink = CollectingSink()
            t_start = time.perf_counter()
            heads = HeadSet([ActiveHead(bundle.bundle_head().name, head, 0)])
            pipeline = audio_pipeline(bundle, models[threads], chunks(samples), heads, hop_ms=HOP_MS,
                                      detector=detector)
            summary = run_pipeline(pipeline, sink, LoopSettings())
            wall_s = time.perf_counter() - t_start
            dets = [(e.detection.label, round(e.detection.offset_s, 4)) for e in sink.events]
            return {"wall_s": wall_s, **summary.latency_ms, "hops": summary.steps}, dets

        def naive_run(threads: int, samples: np.ndarray) -> tuple[dict, list]:
            wall_s, latencies, dets, _ = run_naive(models[threads], head, bundle, samples, hop, detector)
            return {"wall_s": wall_s, **latency_percentiles(latencies), "hops": len(latencies)}, dets

        edgetune, naive = "edgetune run_pipeline", "naive (whole window per hop)"
        runs = {(name, t): (lambda f=f, t=t: f(t, audio))
                for t in (0, 1) for name, f in ((edgetune, edgetune_run), (naive, naive_run))}
        for threads in (0, 1):  # warm-up: a short pass of each
            edgetune_run(threads, audio[: 5 * rate])
            naive_run(threads, audio[: 5 * rate])
        results: dict[tuple, list[dict]] = {key: [] for key in runs}
        detections: dict[tuple, list] = {}
        keys = list(runs)
        for r in range(ROUNDS):
            for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                row, detections[key] = runs[key]()
                results[key].append(row)

        def med(key: tuple, field: str) -> float:
            return statistics.median(r[field] for r in results[key])

        header = (f"{'implementation':<30} {'ORT threads':>11} {'hops':>5} {'wall s':>7} {'RTF':>7} "
                  f"{'x real time':>11} {'hop p50 ms':>10} {'hop p99 ms':>10} {'hop mean ms':>11}")
        print(header)
        print("-" * len(header))
        for key in keys:
            name, threads = key
            wall = med(key, "wall_s")
            print(f"{name:<30} {'default' if threads == 0 else threads:>11} {results[key][0]['hops']:>5} "
                  f"{wall:>7.3f} {wall / AUDIO_S:>7.4f} {AUDIO_S / wall:>10.0f}x {med(key, 'p50'):>10.3f} "
                  f"{med(key, 'p99'):>10.3f} {med(key, 'mean'):>11.3f}")
        print()
        for threads in (0, 1):
            e, n = (edgetune, threads), (naive, threads)
            print(f"ratio naive / edgetune, ORT threads {'default' if threads == 0 else threads}: "
                  f"wall {med(n, 'wall_s') / med(e, 'wall_s'):.2f}x, hop p50 {med(n, 'p50') / med(e, 'p50'):.2f}x, "
                  f"hop p99 {med(n, 'p99') / med(e, 'p99'):.2f}x (> 1: edgetune is faster)")
        print("RTF = wall time / audio time (lower is better); medians over rounds. ORT threads: intra_op_threads "
              "of both sessions (ProviderSettings); default = ONNX Runtime's own choice")

        # Same answers? The streaming stages' posteriors vs the naive ones, hop by hop.
        pre = AudioPreprocessor.for_models(models[1], hop)
        embed = AudioEmbedder(models[1], hop, pre.ring.silence)
        streamed = np.array([head.predict_proba(embed(step)) for c in chunks(audio) for step in pre.push(c)])
        _, _, _, naive_post = run_naive(models[1], head, bundle, audio, hop, detector)
        same = all(detections[k] == detections[keys[0]] for k in keys)
        print(f"check: {len(streamed)} hops, max |posterior difference| streaming vs naive "
              f"{np.max(np.abs(streamed - naive_post)):.1e}; detections identical in all four runs: {same} "
              f"({len(detections[keys[0]])} events; random weights, so they mean nothing)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
