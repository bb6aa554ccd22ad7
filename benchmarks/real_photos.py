"""Real photos the project never made, through the exporter's own path and the device's.

scikit-image ships ``lfw_subset``: 200 real 25 x 25 grey photos, 100 faces (Labeled Faces in
the Wild) and 100 patches of other scenes (not faces). This script writes them as a folder per
label, the way a user would (``DIR/face/*.png``, ``DIR/not_face/*.png``), then:

1. ``export train --modality image --data DIR`` (:func:`~edgetune.export.image_transfer.train_image_bundle`)
   for each backbone asked for: the split is the exporter's (70/15/15 per label, seeded); the
   report gives held-out accuracy with every training photo and the learning curve (1, 2, 5, 10
   ... photos per class), beside logistic regression on the raw pixels;
2. on the device (first backbone only), ``edge enroll`` of a third class the bundle never saw:
   ``cat``, 8 grey 25 x 25 crops of scikit-image's ``chelsea`` photo beside 4 photos of each
   known class, then ``edge evaluate`` before and after on 12 other crops and 4 + 4 photos.

The photos are small (25 px, upscaled by the graph to 224/260): read the figures as a
real-photo transfer test, not as a benchmark of face detection.

    python benchmarks/real_photos.py [--backbones efficientnet_lite0 efficientnet_lite2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info  # noqa: E402


def write_lfw_folder(root: Path) -> dict[str, int]:
    """DIR/face/*.png and DIR/not_face/*.png from scikit-image's lfw_subset (first 100 are faces)."""
    import cv2
    from skimage.data import lfw_subset

    photos = lfw_subset()
    counts = {}
    for i, photo in enumerate(photos):
        label = "face" if i < 100 else "not_face"
        (root / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / label / f"{i:03d}.png"), np.round(photo * 255).astype(np.uint8))
        counts[label] = counts.get(label, 0) + 1
    return counts


def write_cat_crops(root: Path, n: int, seed: int) -> None:
    """``n`` grey 25 x 25 crops of scikit-image's chelsea (a cat) as DIR/cat/*.png, and as many
    of the existing classes from lfw_subset's last photos (the enrolment keeps them in view)."""
    import cv2
    from skimage.data import chelsea

    rng = np.random.default_rng(seed)
    grey = cv2.cvtColor(chelsea(), cv2.COLOR_RGB2GRAY)
    (root / "cat").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        size = int(rng.integers(120, 260))
        top, left = int(rng.integers(0, grey.shape[0] - size)), int(rng.integers(0, grey.shape[1] - size))
        crop = cv2.resize(grey[top:top + size, left:left + size], (25, 25), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "cat" / f"{i:03d}.png"), crop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"])
    parser.add_argument("--keep", metavar="DIR", help="keep the folders and bundles in DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from edgetune.export.image_transfer import ImageTransferConfig, train_image_bundle

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edgetune-photos-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "lfw"
    if data.exists():
        shutil.rmtree(data)
    counts = write_lfw_folder(data)
    results = {"machine": machine_info(), "data": {"source": "scikit-image lfw_subset", "counts": counts}}
    for name in args.backbones:
        t0 = time.perf_counter()
        out = work / f"bundle-{name}"
        result = train_image_bundle(out, data, ImageTransferConfig(backbone=name), overwrite=True)
        m = result.metrics
        curve = {p["per_class"]: p["accuracy"] for p in m["learning_curve"]}
        results[name] = {"test_accuracy": m["test"]["accuracy"], "n_test": m["test"]["n"],
                         "per_class_10": curve.get(10), "learning_curve": m["learning_curve"],
                         "baselines": {k: v["accuracy"] for k, v in m.get("baselines", {}).items()},
                         "l2": m["l2"], "seconds": round(time.perf_counter() - t0, 1),
                         "parity": result.manifest.parity}
        print(f"{name}: held-out {m['test']['accuracy']:.3f} on {m['test']['n']} photos; 10 per class "
              f"{curve.get(10)}; pixels+LR {results[name]['baselines']}; {results[name]['seconds']} s",
              file=sys.stderr)
        if name == args.backbones[0]:
            results["enrolment"] = enrol_cat(out, data, work)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2, default=str) if args.json else render(results))
    return 0


def enrol_cat(bundle_dir: Path, lfw: Path, work: Path) -> dict:
    """The device learns a third class (a cat) from 8 photos; evaluated on 12 others."""
    from edgetune.contract.signing import TrustPolicy
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.evaluate import evaluate_folder
    from edgetune.edge.head_store import HeadStore
    from edgetune.edge.image.enroll import enroll_images

    site, test = work / "site", work / "site-test"
    for d in (site, test):
        if d.exists():
            shutil.rmtree(d)
    write_cat_crops(site, 8, seed=1)
    write_cat_crops(test, 12, seed=2)
    for label in ("face", "not_face"):  # a few of the known classes, as a user's folder would have
        files = sorted((lfw / label).glob("*.png"))
        for d, chosen in ((site, files[-8:-4]), (test, files[-4:])):
            (d / label).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, d / label / f.name)
    from edgetune.export.signing import load_signing_key

    bundle = load_bundle(bundle_dir, trust=TrustPolicy.of([load_signing_key().public]))  # the exporter signed it
    store = HeadStore(bundle, work / "state", "objects")
    if store.root.exists():
        shutil.rmtree(store.root)
        store = HeadStore(bundle, work / "state", "objects")
    h0 = store.head(0)
    before = evaluate_folder(bundle, test, h0.weight, h0.bias, h0.labels, modality="image")
    report = enroll_images(bundle, site, store)
    h1 = store.head(store.current_version)
    after = evaluate_folder(bundle, test, h1.weight, h1.bias, h1.labels, modality="image")
    return {"before": before.accuracy, "after": after.accuracy, "n": after.n, "promoted": report.promoted,
            "per_class_after": after.per_class_recall, "reason": report.reason}


def render(r: dict) -> str:
    lines = [f"real photos: {r['data']['source']} {r['data']['counts']}  ({r['machine']})"]
    def pct(x) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for k, v in r.items():
        if isinstance(v, dict) and "test_accuracy" in v:
            baselines = ", ".join(pct(b) for b in v["baselines"].values())
            lines.append(f"  {k:<20} held-out {pct(v['test_accuracy'])} (n={v['n_test']}), 10/class "
                         f"{pct(v['per_class_10'])}, pixels+LR {baselines}, {v['seconds']} s")
    if "enrolment" in r:
        e = r["enrolment"]
        lines.append(f"  device enrolment of a new class 'cat' (8 photos): {100 * e['before']:.1f}% -> "
                     f"{100 * e['after']:.1f}% on {e['n']} held-out photos, promoted {e['promoted']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
