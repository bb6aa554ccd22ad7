"""``edgetune demo``: every program on one machine, on embedded defaults.

1. The exporter synthesises speech with espeak-ng, trains a keyword head (the ten digits and a
   dozen commands) on Google's pretrained ``speech_embedding`` backbone, tests it on held-out
   voices beside the baselines (MFCC + linear model / decision tree, a DS-CNN from scratch), and
   exports the bundle.
2. A Mosquitto broker on a free port and the server (SQLite in the work folder, HTTP on a free
   port) start.
3. The device verifies the bundle, measures its head on held-out clips that include three
   words the source model never heard, fine-tunes the head on a few clips of them spoken by
   the site's voices, and measures again.
4. The device streams a WAV of held-out clips through the new head and publishes its
   detections and metrics over MQTT; the server stores them.
5. A summary: accuracies, events published and stored, the dashboard's address.

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
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.enroll import enroll
    from edgetune.edge.audio.models import AudioModels
    from edgetune.edge.dataset import embed_folder
    from edgetune.edge.evaluate import evaluate_embeddings
    from edgetune.edge.head_store import HeadStore
    from edgetune.export.train import TrainConfig
    from edgetune.export.transfer import TransferConfig, train_transfer_bundle
    from edgetune.localbroker import LocalBroker

    from . import demo_data

    step = _Steps(6)
    t_start = time.perf_counter()
    state_dir = _fresh(out / "device-state")  # a rerun in the same --out starts a new device
    for old in ("server.db", "server.db-wal", "server.db-shm"):
        (out / old).unlink(missing_ok=True)

    step("exporter: synthesising speech, training a head on the pretrained speech_embedding backbone")
    config = TransferConfig() if epochs is None else TransferConfig(ds_cnn=TrainConfig(epochs=epochs, baselines=False))
    trained = train_transfer_bundle(out / "bundle", config, progress=True, overwrite=True)
    host = trained.metrics["test"]

    step("on-site data: new keywords from the site's voices, held-out voices for testing")
    site = demo_data.write_site_data(_fresh(out / "site-data"), config.data.test_voices, seed=config.seed)
    eval_dir = demo_data.merge_label_folders(_fresh(out / "eval"), trained.test_data_dir, site / "test")

    step("device: verifying the bundle and measuring the bundle's head on held-out clips")
    bundle = load_bundle(out / "bundle", state_dir=state_dir)
    store = HeadStore(bundle, state_dir)
    models = AudioModels(bundle, state_dir=state_dir)
    held_out = embed_folder(models, eval_dir)  # embedded once, scored by both heads
    before = evaluate_embeddings(held_out.embeddings, held_out.labels, bundle.head)

    step("device: fine-tuning the head on the site's clips (new labels allowed)")
    report = enroll(bundle, site / "train", store, models=models)
    head = store.head()
    after = evaluate_embeddings(held_out.embeddings, held_out.labels, head)

    step("broker + server + device: streaming held-out clips, publishing over MQTT")
    with LocalBroker(workdir=out / "broker") as broker:
        stream = _stream(out, bundle, models, eval_dir, broker, serve_s)

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


def _stream(out: Path, bundle, models, eval_dir: Path, broker, serve_s: float) -> dict[str, Any]:
    """The device as ``edge run`` runs it (:class:`~edgetune.edge.wiring.Device` from a config),
    streaming a WAV of held-out clips to the broker, and the server storing what arrives."""
    from edgetune.edge.config import DaemonConfig
    from edgetune.edge.sinks import CollectingSink
    from edgetune.edge.wiring import Device
    from edgetune.server.ingest import IngestConfig
    from edgetune.server.service import Server, ServerConfig

    from . import demo_data

    truth = demo_data.write_stream(eval_dir, out / "stream.wav")
    host, port = broker.address
    token = secrets.token_urlsafe(16)
    server = Server(ServerConfig(db=str(out / "server.db"), http_port=0, token=token,
                                 ingest=IngestConfig(host=host, port=port, client_id="edgetune-demo-server")))
    server.start()
    try:
        if not server.wait_subscribed(10.0):
            raise RuntimeError(f"the server did not subscribe to the broker at {host}:{port} within 10 s")
        config = DaemonConfig(device_id=DEVICE_ID, bundle=bundle.directory, state_dir=out / "device-state",
                              audio={"source": f"wav:{out / 'stream.wav'}"}, mqtt={"host": host, "port": port},
                              metrics={"interval_s": 5.0})
        collected = CollectingSink()
        device = Device.from_config(config, sinks=[collected], models=models)
        try:
            device.telemetry.wait_connected(10.0)
            (summary,) = device.run()
            flushed = device.telemetry.flush(30.0)
            sent = device.telemetry.counters
        finally:
            device.close(5.0)
        events = len(collected.events)
        stored = _wait_stored(server, DEVICE_ID, "event", events, timeout_s=20.0)
        stats = server.store.stats()
        clip_s = bundle.manifest.audio.clip_samples / bundle.manifest.audio.sample_rate_hz
        scored = demo_data.score_stream(truth, [(d.detection.label, d.detection.offset_s)
                                                for d in collected.events], clip_s)
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
        f"  events published: {t['events_published']}   events stored by the server: {t['events_stored']}"
        f"   (duplicates {t['duplicates']}, rejected {t['rejected']})",
        f"  dashboard (while running): {s['dashboard']}",
        f"  database: {s['database']}",
        f"  wall time: {s['wall_s']} s",
    ]
    return "\n".join(lines)
