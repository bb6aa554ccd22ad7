"""MFCC front-end speed: edgetune's exported graph under ONNX Runtime vs PyTorch eager vs librosa.

Run: ``python benchmarks/bench_frontend.py`` (about 30 s on 2 cores; needs the ``dev`` extras:
torch and onnx to export the graph, librosa for the peer).

What runs:

- **edgetune ORT**: ``edgetune.export.audio.frontend.MfccFrontend`` exported by
  ``edgetune.export.onnx_export.export_frontend`` (the exporter's own path, the same graph a bundle
  ships as ``audio_frontend.onnx``) and opened with the device's ``create_session`` (CPU
  provider, all graph optimisations, ONNX Runtime's default threads).
- **PyTorch eager**: the same ``MfccFrontend`` module, ``torch.inference_mode``, default threads.
- **librosa**: ``librosa.feature.melspectrogram`` (n_fft 512, win 400, hop 160, 40 mels, fmin 20,
  fmax 7600, ``center=False``, Hann) on the pre-emphasised audio (the NumPy pre-emphasis is timed
  too: the graph does it as well), absolute ``power_to_db(top_db=None)``, then
  ``librosa.feature.mfcc(S=..., n_mfcc=13)``. ``top_db=None`` because edgetune scales dB absolutely
  (a streamed clip must equal the whole clip); librosa's default ``top_db=80`` would give other
  numbers for no less work. The max abs difference to librosa is printed as a parity check.

Batch 1, 1 s and 10 s clips: median of many calls after warm-up (``time.perf_counter``).

Each implementation is timed in a process of its own (this script started again with
``--child``), the way each is used: a device loads ONNX Runtime and never torch. In one process,
PyTorch's OpenMP threads and ONNX Runtime's thread pool (2 + 2 spinning threads on 2 cores) slow
each other: measured here, ONNX Runtime's 1 s median went from about 0.54 to 0.68 ms, with one
call in six taking over 2 ms, once torch had run in the process. The rounds rotate the order of
the processes, so slow drifts in background load fall on all of them.

Streaming (100 ms hops over a 1 s window), in one process (ONNX Runtime and librosa, no torch):
edgetune's ``FeatureRing.advance`` (the device's streaming front-end,
``edgetune.edge.audio.features``) runs the graph on only the 1,953 samples that the hop's 10 new
frames read, vs librosa recomputing the whole 1 s window every hop (what a simple script does).
Two more rows separate the algorithm from the runtime: the edgetune graph recomputing the whole
window, and librosa computing only the new frames.
"""

from __future__ import annotations

import json
import statistics
import subprocess
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

RATE_HZ = 16000
CLIPS = ((1, 300), (10, 40))  # (seconds, timed calls per process)
ROUNDS = 2  # processes per implementation, in rotating order
HOP_MS = 100
STREAM_S = 20  # seconds of audio streamed per implementation and round in the streaming case
STREAM_ROUNDS = 3
IMPLS = ("edgetune ORT", "PyTorch eager", "librosa")


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p90) in ms."""
    return statistics.median(times), float(np.percentile(times, 90))


def test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-band tones plus noise, float32 [n] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    x = 0.2 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * 2200 * t) + 0.05 * rng.standard_normal(n)
    return np.clip(x, -1, 1).astype(np.float32)


def clip_pcm(seconds: int) -> np.ndarray:
    """float32 [1, 1 + seconds * rate]: the look-back sample, then the clip."""
    return np.concatenate([[0.0], test_signal(seconds)]).astype(np.float32)[None, :]


# -- the three implementations (each imports only what it needs) ----------------------------

def ort_impl(model_path: str):
    from edgetune.contract import tensors
    from edgetune.edge.runtime.providers import ProviderSettings, create_session

    session = create_session(model_path, ProviderSettings(providers=("cpu",)))

    def features(pcm: np.ndarray) -> np.ndarray:  # float32 [1, N] -> [1, T, 13]
        return session.run([tensors.AUDIO_FRONTEND_OUTPUT], {tensors.AUDIO_FRONTEND_INPUT: pcm})[0]
    return features


def torch_impl(model_path: str):
    import torch
    from edgetune.contract.manifest import MfccParams
    from edgetune.export.audio.frontend import MfccFrontend

    module = MfccFrontend(MfccParams()).eval()

    def features(pcm: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(pcm)).numpy()
    return features


def librosa_impl(model_path: str = ""):
    import librosa
    from edgetune.contract.manifest import MfccParams

    p = MfccParams()
    mel_kwargs = {"sr": p.sample_rate_hz, "n_fft": p.n_fft, "win_length": p.window_samples,
                  "hop_length": p.frame_hop_samples, "n_mels": p.n_mels, "fmin": p.fmin_hz, "fmax": p.fmax_hz,
                  "center": False, "window": "hann", "power": 2.0}

    def features(pcm: np.ndarray) -> np.ndarray:  # same contract: [1, N] with a look-back sample
        x = pcm[0]
        emphasised = x[1:] - np.float32(p.preemphasis) * x[:-1]
        mel = librosa.feature.melspectrogram(y=emphasised, **mel_kwargs)
        log_mel = librosa.power_to_db(mel, ref=1.0, amin=p.log_floor, top_db=None)
        return librosa.feature.mfcc(S=log_mel, n_mfcc=p.n_mfcc).T[None]  # [1, T, 13]
    return features


MAKERS = {"edgetune ORT": ort_impl, "PyTorch eager": torch_impl, "librosa": librosa_impl}


# -- child processes -------------------------------------------------------------------------

def child_clips(impl: str, model_path: str) -> dict:
    """Time one implementation on each clip length; then its largest difference from librosa."""
    warnings.filterwarnings("ignore")
    fn = MAKERS[impl](model_path)
    out: dict = {"times": {}, "max_abs_diff": {}, "ref_max_abs": {}}
    for seconds, repeats in CLIPS:
        pcm = clip_pcm(seconds)
        for _ in range(10):  # warm-up
            fn(pcm)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(pcm)
            times.append(1000.0 * (time.perf_counter() - t0))
        out["times"][str(seconds)] = times
    reference = librosa_impl()  # after the timing: its import must not disturb it
    for seconds, _ in CLIPS:
        pcm = clip_pcm(seconds)
        ref = reference(pcm)
        out["max_abs_diff"][str(seconds)] = float(np.max(np.abs(fn(pcm).astype(np.float64) - ref)))
        out["ref_max_abs"][str(seconds)] = float(np.max(np.abs(ref)))
    if impl == "PyTorch eager":
        import torch

        out["threads"] = torch.get_num_threads()
    return out


def child_stream(model_path: str) -> dict:
    """The four streaming rows, in one process with ONNX Runtime and librosa."""
    warnings.filterwarnings("ignore")
    from edgetune.edge.audio.features import FeatureRing
    from edgetune.contract.manifest import MfccParams

    params = MfccParams()
    ort_features, librosa_features = ort_impl(model_path), librosa_impl()
    hop = RATE_HZ * HOP_MS // 1000
    clip = RATE_HZ
    lookback = params.lookback_samples
    hops = test_signal(STREAM_S, seed=1).reshape(-1, hop)
    ring_new = hop // params.frame_hop_samples
    need = lookback + params.n_fft + (ring_new - 1) * params.frame_hop_samples
    frames_per_clip = params.n_frames(clip + lookback)

    class Ring:
        """edgetune's streaming front-end: the graph runs on only the samples the new frames read."""

        def __init__(self) -> None:
            self.ring = FeatureRing(ort_features, params, clip, hop)

        def step(self, h: np.ndarray) -> None:
            self.ring.advance(h)

        def window(self) -> np.ndarray:
            return self.ring.window()

    class WholeWindow:
        """The simple script: keep the last 1 s (+ look-back sample), recompute all its frames."""

        def __init__(self, fn) -> None:
            self.fn = fn
            self.buf = np.zeros((1, lookback + clip), dtype=np.float32)
            self.out = None

        def step(self, h: np.ndarray) -> None:
            self.buf = np.concatenate([self.buf[:, hop:], h[None, :]], axis=1)
            self.out = self.fn(self.buf)[0]

        def window(self) -> np.ndarray:
            return self.out

    class LibrosaNewFrames:
        """The ring's trick done with librosa: the 10 new frames, appended to a frame buffer."""

        # The window's last frames end `excess` samples before its end (frames never cover its tail).
        start = (frames_per_clip - ring_new) * params.frame_hop_samples
        excess = lookback + clip - (start + need)

        def __init__(self) -> None:
            self.tail = np.zeros((1, need + self.excess), dtype=np.float32)
            self.frames = librosa_features(np.zeros((1, lookback + clip), dtype=np.float32))[0]

        def step(self, h: np.ndarray) -> None:
            self.tail = np.concatenate([self.tail[:, hop:], h[None, :]], axis=1)
            new = librosa_features(self.tail[:, :need])[0]
            self.frames = np.concatenate([self.frames, new])[-frames_per_clip:]

        def window(self) -> np.ndarray:
            return self.frames

    makers = {
        "edgetune FeatureRing (ORT, new frames only)": Ring,
        "librosa, whole 1 s window each hop": lambda: WholeWindow(librosa_features),
        "edgetune ORT graph, whole window each hop": lambda: WholeWindow(ort_features),
        "librosa, new frames only": LibrosaNewFrames,
    }
    names = list(makers)
    hop_times: dict[str, list[float]] = {name: [] for name in names}
    finals: dict[str, np.ndarray] = {}
    for r in range(STREAM_ROUNDS + 1):  # round 0 is a warm-up; then each streams in turn, rotating
        k = r % len(names)
        for name in names[k:] + names[:k]:
            impl = makers[name]()
            times = []
            for h in hops:
                t0 = time.perf_counter()
                impl.step(h)
                times.append(1000.0 * (time.perf_counter() - t0))
            if r:
                hop_times[name] += times
            finals[name] = impl.window().copy()
    reference = finals["librosa, whole 1 s window each hop"]
    return {"hop": hop, "new_frames": ring_new, "need": need, "hops": len(hops),
            "times": hop_times,
            "final_diff": {n: float(np.max(np.abs(finals[n].astype(np.float64) - reference))) for n in names}}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parent --------------------------------------------------------------------------------

def main() -> None:
    warnings.filterwarnings("ignore")
    import librosa
    import onnxruntime as ort
    import torch
    from edgetune.contract import tensors
    from edgetune.contract.manifest import MfccParams
    from edgetune.export.audio.frontend import MfccFrontend
    from edgetune.export.onnx_export import export_frontend

    print("MFCC front-end, batch 1 (ms per call; median of N calls after warm-up; each implementation in its own "
          f"process, {ROUNDS} processes each in rotating order)")
    print(machine_info(numpy=np.__version__, onnxruntime=ort.__version__, torch=torch.__version__,
                       librosa=librosa.__version__))
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-frontend-") as tmp:
        # MfccParams(): the defaults every bundle uses (512/400/160, 40 mels, 13 MFCC, 20-7600 Hz).
        path = str(export_frontend(MfccFrontend(MfccParams()).eval(), Path(tmp) / tensors.AUDIO_FRONTEND_FILE))
        results: dict[str, list[dict]] = {name: [] for name in IMPLS}
        for r in range(ROUNDS):
            order = IMPLS[r % 3:] + IMPLS[:r % 3]
            for name in order:
                results[name].append(run_child("clips", name, path))
        stream = run_child("stream", path)
    print(f"threads: onnxruntime its default intra-op pool, torch {results['PyTorch eager'][0]['threads']}")
    print()

    header = f"{'clip':>5}  {'implementation':<15} {'median ms':>10} {'p90 ms':>8} {'N':>5}  {'vs librosa':>10}  parity"
    print(header)
    print("-" * len(header))
    for seconds, _ in CLIPS:
        key = str(seconds)
        stats = {name: summary([t for run in runs for t in run["times"][key]]) for name, runs in results.items()}
        peer = stats["librosa"][0]
        for name in IMPLS:
            med, p90 = stats[name]
            n = sum(len(run["times"][key]) for run in results[name])
            run = results[name][0]
            parity = ("reference" if name == "librosa" else
                      f"max|diff| {run['max_abs_diff'][key]:.1e} (features up to {run['ref_max_abs'][key]:.0f})")
            print(f"{seconds:>4}s  {name:<15} {med:>10.3f} {p90:>8.3f} {n:>5}  {peer / med:>9.2f}x  {parity}")
    print("(vs librosa: librosa's time / this one's; > 1 means faster than librosa)")
    print()

    print(f"Streaming: {HOP_MS} ms hops ({stream['hop']} samples, {stream['new_frames']} new frames; the ring's "
          f"graph call reads {stream['need']} samples) over a 1 s window; {STREAM_ROUNDS} x {stream['hops']} hops "
          f"({STREAM_S} s of audio) each, one process (ONNX Runtime + librosa)")
    header = (f"{'implementation':<45} {'median ms/hop':>13} {'p90 ms':>8}  {'vs librosa whole':>16}"
              "  final window max|diff|")
    print(header)
    print("-" * len(header))
    peer = summary(stream["times"]["librosa, whole 1 s window each hop"])[0]
    for name, times in stream["times"].items():
        med, p90 = summary(times)
        print(f"{name:<45} {med:>13.3f} {p90:>8.3f}  {peer / med:>15.2f}x  {stream['final_diff'][name]:.1e}")
    print("(vs librosa whole: time of librosa recomputing the whole window / this one's; the last column compares"
          " the window's features after the last hop with librosa's whole-window features)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind = sys.argv[2]
        result = child_clips(sys.argv[3], sys.argv[4]) if kind == "clips" else child_stream(sys.argv[3])
        print(json.dumps(result))
    else:
        main()
