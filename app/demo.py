"""``edgetune demo``: every program on one machine, on embedded defaults.

1. The exporter synthesises speech with espeak-ng, trains a keyword head (the ten digits and a
   dozen commands) on Google's pretrained ``speech_embedding`` backbone, tests it on held-out
   voices beside the baselines (MFCC + linear model / decision tree, a DS-CNN from scratch), and
   exports the audio bundle.
2. It trains an image head on handwritten digits (scikit-learn's, held-out writers) over the
   ImageNet-pretrained EfficientNet-Lite0, and fused heads (concat and gated) on spoken +
   handwritten digit pairs, reports them clean and with one modality corrupted, and exports one
   signed bundle with both modalities and the fusion (``demo_av.py``).
3. A locked Mosquitto broker on a free port and the server (SQLite in the work folder, HTTP on
   a free port) start.
4. The device verifies the bundle, measures its keyword head on held-out clips that include
   three words the source model never heard, fine-tunes it on a few clips of them spoken by the
   site's voices, and measures again.
5. The device streams a WAV of held-out clips and, as its camera, a folder of frames showing
   each spoken digit handwritten: three pipelines (microphone, camera, fused) publish their
   detections and metrics over MQTT; the server stores them.
6. A summary: accuracies, the fusion table, events published and stored, the dashboard's address.

Everything lands in a temporary folder, or in ``--out DIR``, which is kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEVICE_ID = "demo-jetson-01"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run exporter, device, broker and server on this machine",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", metavar="DIR", help="keep everything the demo makes in DIR (bundle, database, logs)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the DS-CNN baseline (default: the exporter's)")
    parser.add_argument("--serve", type=float, default=0.0, metavar="S",
                        help="keep the dashboard up for S seconds after the summary (default 0)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.verbose:  # the numbered steps and the summary say what happens; -v shows the logs
        logging.getLogger().setLevel(logging.WARNING)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary = run_demo(out, epochs=args.epochs, serve_s=args.serve)
    else:
        with tempfile.TemporaryDirectory(prefix="edgetune-demo-") as tmp:
            summary = run_demo(Path(tmp), epochs=args.epochs, serve_s=args.serve)
        summary["database"] += " (deleted with the work folder; --out DIR keeps it)"
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    ok = summary["telemetry"]["events_stored"] == summary["telemetry"]["events_published"]
    return 0 if ok else 1


class _Steps:
    """Numbered progress lines on stderr, with the time each step took."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {what} (t={time.perf_counter() - self.t0:.0f} s)", file=sys.stderr, flush=True)


def run_demo(out: Path, *, epochs: int | None = None, serve_s: float = 0.0) -> dict[str, Any]:
    """Run the whole path in ``out`` and return the summary (see :func:`render`)."""
    from edgetune.contract.signing import TrustPolicy
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.enroll import enroll
    from edgetune.export.signing import load_signing_key
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.dataset import embed_folder
    from edgetune.edge.evaluate import evaluate_embeddings
    from edgetune.edge.head_store import HeadStore
    from edgetune.export.train import TrainConfig
    from edgetune.export.transfer import TransferConfig, train_transfer_bundle
    from edgetune.localbroker import LocalBroker

    from . import demo_av, demo_data

    step = _Steps(8)
    t_start = time.perf_counter()
    state_dir = _fresh(out / "device-state")  # a rerun in the same --out starts a new device
    for old in ("server.db", "server.db-wal", "server.db-shm"):
        (out / old).unlink(missing_ok=True)

    step("exporter: synthesising speech, training a head on the pretrained speech_embedding backbone")
    config = TransferConfig() if epochs is None else TransferConfig(ds_cnn=TrainConfig(epochs=epochs, baselines=False))
    trained = train_transfer_bundle(out / "audio-bundle", config, progress=True, overwrite=True)
    host = trained.metrics["test"]

    step("exporter: handwritten digits on the pretrained EfficientNet-Lite0 (export train --modality image)")
    photos = demo_av.digit_photos(seed=config.seed)
    image = _train_images(out, photos, config.seed)

    step("exporter: fused heads (concat, gated) on spoken + handwritten digit pairs; one bundle for both")
    fusion = _fuse(out, config, photos, image)

    step("on-site data: new keywords from the site's voices, held-out voices for testing")
    site = demo_data.write_site_data(_fresh(out / "site-data"), config.data.test_voices, seed=config.seed)
    eval_dir = demo_data.merge_label_folders(_fresh(out / "eval"), trained.test_data_dir, site / "test")

    step("device: verifying the bundle and measuring the bundle's head on held-out clips")
    # The exporter signed the bundle with its key (export/signing.py); the demo's device trusts that key.
    bundle = load_bundle(out / "bundle", trust=TrustPolicy.of([load_signing_key().public]), state_dir=state_dir)
    store = HeadStore(bundle, state_dir)
    models = AudioModels(bundle, state_dir=state_dir)
    held_out = embed_folder(models, eval_dir)  # embedded once, scored by both heads
    before = evaluate_embeddings(held_out.embeddings, held_out.labels, bundle.head)

    step("device: fine-tuning the head on the site's clips (new labels allowed)")
    report = enroll(bundle, site / "train", store, models=models)
    head = store.head()
    after = evaluate_embeddings(held_out.embeddings, held_out.labels, head)

    step("broker + server + device: microphone, camera and fused pipelines, publishing over MQTT")
    with LocalBroker(workdir=out / "broker", devices=[DEVICE_ID]) as broker:  # locked: a user per client, an ACL
        stream = _stream(out, bundle, models, eval_dir, broker, serve_s, photos["test"])

    step("done")
    return {
        "host": {"test_accuracy": host["accuracy"], "n": host["n"], "voices": host["voices"],
                 "backbone": config.backbone, "recipe": trained.metrics["recipe"],
                 "baselines": {k: v.get("accuracy") for k, v in trained.metrics.get("baselines", {}).items()},
                 "timings_s": trained.timings_s},
        "device": {"new_labels": list(demo_data.NEW_WORDS), "enrolled_files": report.n_files,
                   "accuracy_before": before.accuracy, "accuracy_after": after.accuracy, "n": after.n,
                   "old_words": {"before": _accuracy_on(before, demo_data.NEW_WORDS, False),
                                 "after": _accuracy_on(after, demo_data.NEW_WORDS, False)},
                   "new_words": {"before": _accuracy_on(before, demo_data.NEW_WORDS, True),
                                 "after": _accuracy_on(after, demo_data.NEW_WORDS, True)},
                   "head_version": store.current_version, "promoted": report.promoted},
        "image": {"test_accuracy": image.metrics["test"]["accuracy"], "n": image.metrics["test"]["n"],
                  "backbone": image.manifest.provenance["config"]["backbone"],
                  "baselines": {k: v.get("accuracy") for k, v in image.metrics.get("baselines", {}).items()},
                  "parity": image.manifest.parity.get("image_embedder.onnx", {}).get("max_rel_error")},
        "fusion": fusion,
        **stream,
        "out": str(out),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def _accuracy_on(result, labels: tuple[str, ...], inside: bool) -> float | None:
    """Accuracy over the confusion rows whose true label is (``inside``) or is not in ``labels``."""
    rows = [i for i, name in enumerate(result.row_labels) if (name in labels) == inside]
    total = sum(sum(result.confusion[i]) for i in rows)
    correct = sum(result.confusion[i][result.labels.index(result.row_labels[i])] for i in rows
                  if result.row_labels[i] in result.labels)
    return correct / total if total else None


def _fresh(path: Path) -> Path:
    import shutil

    if path.exists():
        shutil.rmtree(path)
    return path


def _train_images(out: Path, photos, seed: int):
    """The image bundle: the photos as a folder per label, through ``export train --modality image``."""
    from edgetune.export.image_transfer import ImageTransferConfig, train_image_bundle

    from . import demo_av

    folder = demo_av.write_photo_folder(_fresh(out / "photos"), photos)
    return train_image_bundle(out / "image-bundle", folder, ImageTransferConfig(seed=seed, bundle_id="edgetune-digits"),
                              overwrite=True)


def _fuse(out: Path, config, photos, image) -> dict[str, Any]:
    """Fused heads on pairs of the audio bundle's own clips and the photos, embedded by the two
    bundles' graphs; the audio-visual bundle at ``out/bundle``. Returns the fusion report."""
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.image.models import ImageModels
    from edgetune.edge.runtime.providers import ProviderSettings
    from edgetune.export.av_bundle import write_av_bundle
    from edgetune.export.data.speech import synthesize_splits

    from . import demo_av

    every_core = ProviderSettings(providers=("cpu",), intra_op_threads=0)
    audio = AudioModels.from_files(config.audio_spec(), out / "audio-bundle", every_core)
    images = ImageModels.from_files(image.manifest.image, out / "image-bundle", every_core)
    pairs = demo_av.fusion_pairs(synthesize_splits(config.data), photos, seed=config.seed)
    study = demo_av.train_fused_heads(pairs, audio.embed_clips, images.embed, seed=config.seed)
    write_av_bundle(out / "bundle", audio_bundle=out / "audio-bundle", image_bundle=out / "image-bundle",
                    fused=[study.heads["concat"].head_arrays("digits_concat"),
                           study.heads["gated"].head_arrays("digits_gated")],
                    window_s=0.5, bundle_id="edgetune-demo-av", bundle_version="1.0.0",
                    metrics={"fusion": study.table.to_dict()}, overwrite=True)
    return {"table": study.table.accuracy, "gates": study.table.gates, "n": study.table.n,
            "rendered": study.table.render(), "timings_s": study.timings_s}


def _stream(out: Path, bundle, models, eval_dir: Path, broker, serve_s: float, photos) -> dict[str, Any]:
    """The device as ``edge run`` runs it (:class:`~edgetune.edge.wiring.Device` from a config),
    streaming a WAV of held-out clips and a camera of handwritten digits to the broker, and the
    server storing what arrives."""
    from edgetune.edge.config import DaemonConfig
    from edgetune.edge.sinks import CollectingSink
    from edgetune.edge.wiring import Device
    from edgetune.export.signing import load_signing_key
    from edgetune.localbroker import SERVER_USER
    from edgetune.server.ingest_config import IngestConfig
    from edgetune.server.service import Server, ServerConfig

    from . import demo_av, demo_data

    truth = demo_data.write_stream(eval_dir, out / "stream.wav")
    stream_s = truth[-1].start_s + 2.0
    shown = demo_av.write_camera(truth, photos, _fresh(out / "camera"), stream_s)
    host, port = broker.address
    token = secrets.token_urlsafe(16)
    server = Server(ServerConfig(db=str(out / "server.db"), http_port=0, token=token,
                                 ingest=IngestConfig(host=host, port=port, client_id="edgetune-demo-server",
                                                     username=SERVER_USER, password=broker.password(SERVER_USER))))
    server.start()
    try:
        if not server.wait_subscribed(10.0):
            raise RuntimeError(f"the server did not subscribe to the broker at {host}:{port} within 10 s")
        config = DaemonConfig(device_id=DEVICE_ID, bundle=bundle.directory, state_dir=out / "device-state",
                              audio={"source": f"wav:{out / 'stream.wav'}"},
                              camera={"source": f"images:{out / 'camera'}", "folder_fps": demo_av.CAMERA_FPS,
                                      "rate_hz": demo_av.CAMERA_FPS, "threshold": demo_av.CAMERA_THRESHOLD},
                              mqtt={"host": host, "port": port, "username": DEVICE_ID,
                                    "password_file": broker.password_file(DEVICE_ID)},
                              metrics={"interval_s": 5.0},
                              trusted_keys=(load_signing_key().public.to_text(),))
        collected = CollectingSink()
        device = Device.from_config(config, sinks=[collected], models=models)
        try:
            device.telemetry.wait_connected(10.0)
            summaries = {s.pipeline: s for s in device.run()}
            summary = summaries["audio"]
            flushed = device.telemetry.flush(30.0)
            sent = device.telemetry.counters
        finally:
            device.close(5.0)
        events = len(collected.events)
        stored = _wait_stored(server, DEVICE_ID, "event", events, timeout_s=20.0)
        stats = server.store.stats()
        clip_s = bundle.manifest.audio.clip_samples / bundle.manifest.audio.sample_rate_hz
        scored = demo_data.score_stream(truth, [(d.detection.label, d.detection.offset_s)
                                                for d in collected.events if d.pipeline == "audio"], clip_s)
        seen = {}
        for name, head in (("camera", "objects"), ("fused", "digits_concat"), ("fused", "digits_gated")):
            seen[f"{name}:{head}"] = demo_data.score_stream(
                shown, [(d.detection.label, d.detection.offset_s) for d in collected.events
                        if d.pipeline == name and d.head == head], demo_av.SHOW_S)
        if serve_s > 0:
            print(f"dashboard: {server.url}?token={token}  (serving for {serve_s:g} s)", file=sys.stderr, flush=True)
            time.sleep(serve_s)
        url = f"{server.url}?token={token}"
    finally:
        server.stop()
    pipeline = device.pipelines[0]
    return {
        "stream": {"audio_s": round(summary.stream_s, 1), "hops": summary.steps, "provider": summary.provider,
                   "hop_ms": pipeline.info["hop_ms"], "backbone": pipeline.info["backbone"],
                   "latency_ms": summary.latency_ms, "errors": summary.errors, **scored},
        "camera": {"frames": summaries["camera"].steps, "fused_steps": summaries["fused"].steps,
                   "latency_ms": summaries["camera"].latency_ms, "errors": summaries["camera"].errors,
                   "fused_errors": summaries["fused"].errors, "digits_shown": len(shown), "scored": seen},
        "telemetry": {"events_published": events, "events_stored": stored, "flushed": flushed,
                      "acked": sent.acked, "pending": sent.pending, "duplicates": stats.get("duplicates"),
                      "rejected": stats.get("rejected"), "stored_by_type": stats.get("stored")},
        "dashboard": url,
        "database": str(out / "server.db"),
    }


def _wait_stored(server, device: str, type_: str, expected: int, timeout_s: float) -> int:
    """Events the server has stored for ``device``, waiting up to ``timeout_s`` for ``expected``."""
    deadline = time.monotonic() + timeout_s
    while True:
        n = server.store.stats()["stored"].get(type_, 0)
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def render(s: dict[str, Any]) -> str:
    """The summary as a person reads it."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    base = ", ".join(f"{k} {pct(v)}" for k, v in s["host"]["baselines"].items())
    d, st, t = s["device"], s["stream"], s["telemetry"]
    lines = [
        "",
        "edgetune demo summary",
        f"  exporter, {s['host']['backbone']} + linear head, held-out voices: {pct(s['host']['test_accuracy'])} "
        f"(n={s['host']['n']})" + (f"; baselines on the same split: {base}" if base else ""),
        f"  device, held-out clips incl. new words {', '.join(d['new_labels'])}:",
        f"    before on-device fine-tuning:  {pct(d['accuracy_before'])} (n={d['n']}; source words "
        f"{pct(d['old_words']['before'])}, new words {pct(d['new_words']['before'])})",
        f"    after  on-device fine-tuning:  {pct(d['accuracy_after'])} (source words {pct(d['old_words']['after'])}, "
        f"new words {pct(d['new_words']['after'])}; head v{d['head_version']}, promoted: {d['promoted']}, "
        f"{d['enrolled_files']} site clips)",
        f"  streaming {st['audio_s']} s of audio ({st['hop_ms']:g} ms hops) on {st['provider']}: "
        f"{st['hits']}/{st['keywords']} keywords detected, "
        f"{st['wrong_label']} wrong label, {st['spurious']} spurious; hop latency p50 "
        f"{st['latency_ms'].get('p50', 0):.2f} ms, p99 {st['latency_ms'].get('p99', 0):.2f} ms",
        f"  exporter, image: {s['image']['backbone']} + linear head, held-out writers: "
        f"{pct(s['image']['test_accuracy'])} (n={s['image']['n']}); pixels + logistic regression "
        f"{', '.join(pct(v) for v in s['image']['baselines'].values())}",
        "  exporter, fusion on held-out pairs (spoken digit + handwritten digit; accuracy per head):",
        *("    " + line for line in s["fusion"]["rendered"].splitlines()),
        f"  camera: {s['camera']['frames']} frames, {s['camera']['digits_shown']} digits shown; "
        + "; ".join(f"{k} {v['hits']}/{v['keywords']} ({v['wrong_label']} wrong, {v['spurious']} spurious)"
                    for k, v in s["camera"]["scored"].items())
        + f"; fused steps skipped for stale audio: {s['camera']['fused_errors'].get('fusion_missing_audio', 0)}",
        f"  events published: {t['events_published']}   events stored by the server: {t['events_stored']}"
        f"   (duplicates {t['duplicates']}, rejected {t['rejected']})",
        f"  dashboard (while running): {s['dashboard']}",
        f"  database: {s['database']}",
        f"  wall time: {s['wall_s']} s",
    ]
    return "\n".join(lines)
