"""Subcommands of ``edgetune edge``. Imports nothing heavy at import time.

- ``run``: run the device's pipelines (a microphone, a camera, their fusion) and print (and send) detections.
- ``enroll``: fine-tune a head on a folder of labelled recordings or photos; a new head version.
- ``evaluate``: accuracy and confusion matrix of the current head on a labelled folder.
- ``heads``: list head versions; ``--rollback N`` makes version N current.

Every subcommand loads the bundle the same way: it must carry a signature by one of the trusted
keys (``--trusted-key``, else ``trusted_keys`` in ``--config``, else ``$EDGETUNE_TRUSTED_KEYS``,
comma-separated); ``--allow-unsigned-bundles`` (or ``allow_unsigned_bundles = true``) lets an
unsigned one through, for development, with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

#: Trusted public keys when neither the flags nor the config name any (comma-separated).
TRUSTED_KEYS_ENV = "EDGETUNE_TRUSTED_KEYS"


def _trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-key", action="append", metavar="KEY|FILE",
                   help="a public key whose bundle signatures are accepted: 'ed25519:<base64>' or a .pub file "
                        "(repeatable; default: trusted_keys in --config, else $EDGETUNE_TRUSTED_KEYS)")
    p.add_argument("--allow-unsigned-bundles", action="store_true",
                   help="accept a bundle without a signature (development only; logged as a warning)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("edge", help="the device: streaming inference, on-device fine-tuning",
                            description="The device: streaming inference, on-device fine-tuning, head versions.")
    parser.set_defaults(func=lambda args: parser.print_help())
    cmds = parser.add_subparsers(dest="edge_command", metavar="{run,enroll,evaluate,heads}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bundle", metavar="DIR",
                       help="the bundle directory (holds manifest.json) or its .tar (or `bundle` in --config)")
        p.add_argument("--config", metavar="FILE.toml",
                       help="the daemon's TOML config: its bundle, state_dir and trusted keys")
        _trust_options(p)
        p.add_argument("--state-dir", metavar="DIR", help="device state (head versions, engine cache); default "
                       "$EDGETUNE_STATE_DIR, else $XDG_STATE_HOME/edgetune, else ~/.local/state/edgetune")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--head", metavar="NAME", help="which of the bundle's heads (default: the first)")

    def runtime(p: argparse.ArgumentParser) -> None:
        p.add_argument("--providers", metavar="LIST",
                       help="'auto' (TensorRT > CUDA > CPU) or a list such as 'cuda,cpu' (default: auto)")
        p.add_argument("--require-accelerator", action="store_true",
                       help="fail instead of running on the CPU alone")
        p.add_argument("--threads", type=int, metavar="N",
                       help="ONNX Runtime intra-op threads (default 1; 0: ONNX Runtime decides)")

    run = cmds.add_parser("run", help="classify a microphone and/or camera continuously")
    run.add_argument("--bundle", metavar="DIR", help="the bundle directory or its .tar (or `bundle` in --config)")
    run.add_argument("--state-dir", metavar="DIR", help="device state (outbox, head versions, engine cache)")
    run.add_argument("--json", action="store_true", help="one JSON object per detection on stdout")
    runtime(run)
    run.add_argument("--audio", metavar="URI",
                     help="wav:PATH (or a path), - (raw s16le mono PCM on stdin), mic:[DEVICE], alsa:[DEVICE]")
    run.add_argument("--camera", metavar="URI",
                     help="v4l2:0, rtsp://..., gst:PIPELINE, video:FILE or images:DIR (a bundle with images)")
    run.add_argument("--camera-rate", type=float, metavar="HZ", help="camera frames scored per second (default 5)")
    run.add_argument("--raw-rate", type=int, metavar="HZ",
                     help="sample rate of raw PCM on stdin (default: the bundle's); declared, never guessed")
    run.add_argument("--config", metavar="FILE.toml", help="the daemon's TOML config")
    _trust_options(run)
    run.add_argument("--device-id", help="this device's id in telemetry topics")
    run.add_argument("--broker", metavar="HOST:PORT", help="send telemetry to this MQTT broker")
    run.add_argument("--threshold", type=float, help="smoothed score that fires a detection (default 0.5)")
    run.add_argument("--smoothing-hops", type=int, help="hops the scores are averaged over (default 3)")
    run.add_argument("--refractory-ms", type=float, help="quiet time after a detection (default: one clip)")
    run.add_argument("--hop-ms", type=float,
                     help="audio per inference in ms (default: the bundle's, about 100; 80 for speech_embedding)")
    run.add_argument("--metrics-interval", type=float, metavar="S",
                     help="seconds of audio between metrics reports (default 10)")
    run.add_argument("--flush-timeout", type=float, default=10.0, metavar="S",
                     help="at the end, seconds to wait for the broker to acknowledge telemetry (default 10)")
    run.set_defaults(func=_cmd_run)

    enroll = cmds.add_parser("enroll", help="fine-tune a head on DIR/<label>/* (recordings or photos, as the "
                             "head reads); saves a new head version")
    common(enroll)
    runtime(enroll)
    enroll.add_argument("--data", required=True, metavar="DIR",
                        help="one subfolder per label of audio files (an audio head) or photos (an image head)")
    enroll.add_argument("--holdout", type=float, default=0.25, metavar="F",
                        help="fraction of each label's files held out to compare old and new head (default 0.25)")
    enroll.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the augmentation (default 0)")
    enroll.add_argument("--copies", type=int, default=None, metavar="N",
                        help="augmented copies of each file (audio: speed, shift, gain, noise; photos: mirror, "
                             "crops, exposure; default 4; 0: none)")
    enroll.add_argument("--l2", type=float, default=None, metavar="X",
                        help="a fixed L2 strength (default: chosen by cross-validation on your clips)")
    enroll.set_defaults(func=_cmd_enroll)

    evaluate = cmds.add_parser("evaluate", help="accuracy and confusion matrix on DIR/<label>/*.wav")
    common(evaluate)
    runtime(evaluate)
    evaluate.add_argument("--data", required=True, metavar="DIR",
                          help="one subfolder per label of audio files or photos (as the head reads)")
    evaluate.add_argument("--head-version", type=int, metavar="N", help="head version to evaluate (default: current)")
    evaluate.set_defaults(func=_cmd_evaluate)

    heads = cmds.add_parser("heads", help="list head versions, or roll back to one")
    common(heads)
    heads.add_argument("--rollback", type=int, metavar="N", help="make version N current (0 = the bundle's head)")
    heads.set_defaults(func=_cmd_heads)


def _provider_settings(args: argparse.Namespace):
    from .runtime.providers import ProviderSettings

    given = {"providers": args.providers, "intra_op_threads": args.threads}
    return ProviderSettings(require_accelerator=args.require_accelerator,
                            **{k: v for k, v in given.items() if v is not None})


def _env_trusted_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(TRUSTED_KEYS_ENV, "").split(",") if k.strip()]


def _trust_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"trusted_keys": args.trusted_key or None,
            "allow_unsigned_bundles": True if args.allow_unsigned_bundles else None}


def _with_env_keys(cfg):
    """``cfg`` with ``$EDGETUNE_TRUSTED_KEYS`` as its trusted keys when it names none."""
    import dataclasses

    from .config import ConfigError

    env = _env_trusted_keys()
    if cfg.trusted_keys or not env:
        return cfg
    try:
        return dataclasses.replace(cfg, trusted_keys=tuple(env))
    except ConfigError as exc:
        raise ConfigError(f"${TRUSTED_KEYS_ENV}: {exc}", "trusted_keys") from None


def _bundle_settings(args: argparse.Namespace):
    """(bundle path, state dir or None, trust policy) from the flags, on top of ``--config``."""
    from edgetune.contract import ContractError
    from edgetune.contract.signing import TrustPolicy
    from edgetune.errors import UsageError

    if args.config is not None:
        from .config_file import load_config

        cfg = _with_env_keys(load_config(args.config, {"bundle": args.bundle, "state_dir": args.state_dir,
                                                       **_trust_overrides(args)}))
        return cfg.bundle, cfg.state_dir, cfg.bundle_trust()
    if args.bundle is None:
        raise UsageError("--bundle is missing; pass the bundle directory or its .tar (or --config FILE.toml "
                         "that sets bundle)")
    keys = args.trusted_key or _env_trusted_keys()
    try:
        trust = TrustPolicy.of(keys, allow_unsigned=args.allow_unsigned_bundles)
    except ContractError as exc:
        where = "--trusted-key" if args.trusted_key else f"${TRUSTED_KEYS_ENV}"
        raise UsageError(f"{where}: {exc}") from None
    return args.bundle, args.state_dir, trust


def _open_store(args: argparse.Namespace):
    from .bundle import load_bundle
    from .head_store import HeadStore
    from .state import resolve_state_dir

    bundle_path, state_dir, trust = _bundle_settings(args)
    state_dir = resolve_state_dir(state_dir)
    bundle = load_bundle(bundle_path, trust=trust, state_dir=state_dir)
    return bundle, HeadStore(bundle, state_dir, args.head), state_dir


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _daemon_config(args: argparse.Namespace):
    """One :class:`~.config.DaemonConfig` from the TOML file (if any) with the flags on top."""
    from .config_file import default_device_id, load_config, parse_broker

    host, port = parse_broker(args.broker) if args.broker else (None, None)
    overrides = {
        "device_id": args.device_id, "bundle": args.bundle, "state_dir": args.state_dir,
        "audio": {"source": args.audio, "hop_ms": args.hop_ms, "threshold": args.threshold,
                  "smoothing_hops": args.smoothing_hops, "refractory_ms": args.refractory_ms},
        "camera": {"source": args.camera, "rate_hz": args.camera_rate},
        "runtime": {"providers": args.providers, "require_accelerator": args.require_accelerator or None,
                    "intra_op_threads": args.threads},
        "mqtt": {"host": host, "port": port},
        "metrics": {"interval_s": args.metrics_interval},
        **_trust_overrides(args),
    }
    if args.config is None:
        from edgetune.errors import UsageError

        missing = [flag for flag, value in (("--bundle", args.bundle),
                                            ("--audio or --camera", args.audio or args.camera)) if value is None]
        if missing:
            raise UsageError(f"edge run needs {' and '.join(missing)} (or --config FILE.toml that sets them)")
        overrides["device_id"] = args.device_id or default_device_id()
    return _with_env_keys(load_config(args.config, overrides))


def _cmd_run(args: argparse.Namespace) -> int:
    from .sinks import StreamSink
    from .wiring import Device

    cfg = _daemon_config(args)
    holder: dict[str, Device] = {}
    # Printing is the only output without a broker: a closed stdout (`| head`) then ends the run.
    printer = StreamSink(sys.stdout, as_json=args.json,
                         on_closed=(lambda: holder["device"].stop()) if cfg.mqtt.host is None else None)
    device = holder["device"] = Device.from_config(cfg, raw_rate_hz=args.raw_rate, sinks=[printer])
    stops = []

    def stop(signum: int, frame: Any) -> None:
        stops.append(signum)
        if len(stops) > 1:
            raise KeyboardInterrupt
        log.info("signal %d: stopping after the current chunk (again to abort)", signum)
        device.stop()

    in_main = threading.current_thread() is threading.main_thread()  # signals can only be set there
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        summaries = device.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        device.close(timeout_s=args.flush_timeout)
    for summary in summaries:
        log.info("summary: %s", json.dumps(summary.to_json(), sort_keys=True))
    if printer.closed:  # keep Python's exit-time flush of a closed pipe from complaining
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _head_modality(bundle, store) -> str:
    """What the store's head reads: 'audio', 'image' or 'fused'."""
    return bundle.heads[store.head_name].spec.input


def _models(bundle, modality: str, args: argparse.Namespace, state_dir):
    if modality == "image":
        from .image.models import ImageModels

        return ImageModels(bundle, _provider_settings(args), state_dir=state_dir)
    from .audio.models import AudioModels

    return AudioModels(bundle, _provider_settings(args), state_dir=state_dir)


def _cmd_enroll(args: argparse.Namespace) -> int:
    from .enroll import DEFAULT_COPIES, check_enrolment, enroll

    bundle, store, state_dir = _open_store(args)
    modality = _head_modality(bundle, store)
    copies = DEFAULT_COPIES if args.copies is None else args.copies
    check_enrolment(bundle, store, copies)  # a fused head is refused before any model loads
    models = _models(bundle, modality, args, state_dir)
    if modality == "image":
        from .image.enroll import enroll_images as fit
    else:
        fit = enroll
    report = fit(bundle, args.data, store, holdout_fraction=args.holdout, seed=args.seed, models=models,
                 copies=copies, l2=args.l2)
    if args.json:
        _print_json(report.to_json())
    else:
        print(report.render())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edgetune.errors import UsageError

    from .evaluate import evaluate_folder

    bundle, store, state_dir = _open_store(args)
    modality = _head_modality(bundle, store)
    if modality == "fused":
        raise UsageError(f"head {store.head_name} is fused; a folder of one modality cannot evaluate it "
                         "(the exporter's fusion report does, on paired data)")
    version = store.current_version if args.head_version is None else args.head_version
    head = store.head(version)
    models = _models(bundle, modality, args, state_dir)
    result = evaluate_folder(bundle, args.data, head.weight, head.bias, head.labels, models=models,
                             modality=modality)
    if args.json:
        _print_json(dict(result.to_json(), head_version=version))
    else:
        print(f"head v{version}")
        print(result.render())
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    bundle, store, _ = _open_store(args)
    if args.rollback is not None:
        store.rollback(args.rollback)
    current = store.current_version
    versions = store.versions()
    if args.json:
        _print_json({"bundle_id": bundle.bundle_id, "bundle_version": bundle.bundle_version,
                     "content_id": bundle.content_id, "head": store.head_name, "current": current,
                     "versions": [v.to_json() for v in versions]})
        return 0
    print(f"bundle {bundle.bundle_id} {bundle.bundle_version} (content {bundle.content_id}), head {store.head_name}, "
          f"store {store.root}")
    for v in versions:
        acc = "" if v.accuracy_after is None else (
            f"  held-out {_fraction(v.accuracy_before)} -> {_fraction(v.accuracy_after)}")
        print(f"{'*' if v.version == current else ' '} v{v.version:<3} {v.created_at}  parent "
              f"{'-' if v.parent is None else v.parent}  n={v.n_samples}  "
              f"{'promoted' if v.promoted else 'not promoted'}  labels: {', '.join(v.labels)}{acc}")
    return 0
