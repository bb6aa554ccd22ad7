"""Subcommands of ``edgetune export``. Imports nothing heavy at import time.

- ``prepare-data``: synthesise the keyword dataset with espeak-ng as folders (split/label/*.wav).
- ``train``: train the keyword model on synthesised speech (or ``--data DIR``, a folder per
  label), test it on held-out data, write the bundle.
- ``evaluate``: accuracy and confusion matrix of a bundle's own head on a labelled folder.
- ``keys``: the exporter's signing key (created on first use); ``--show-public`` prints its public key.
- ``sign``: check a bundle and write its ``manifest.sig`` (``train`` signs what it writes).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from edgetune.errors import UsageError, missing_extra

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="the workstation: data, training, export to a bundle",
                            description="The workstation: synthesise data, train, export and evaluate bundles.")
    parser.set_defaults(func=lambda args: parser.print_help())
    cmds = parser.add_subparsers(dest="export_command", metavar="{prepare-data,train,evaluate,keys,sign}")

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--words", nargs="+", metavar="WORD",
                       help="keywords (space- or comma-separated; default: the ten digits and twelve commands)")
        p.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
        p.add_argument("--cache-dir", metavar="DIR",
                       help="espeak-ng rendering cache (default $EDGETUNE_CACHE/espeak or ~/.cache/edgetune/espeak)")

    prep = cmds.add_parser("prepare-data", help="synthesise keyword clips as DIR/{train,val,test}/<label>/*.wav")
    prep.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    data_options(prep)
    prep.set_defaults(func=_cmd_prepare_data)

    train = cmds.add_parser(
        "train", help="train the keyword model on synthesised speech or on --data DIR and write its bundle",
        description="Train the keyword model, test it on held-out data and write its bundle. Without --data, "
                    "on speech synthesised with espeak-ng (--words), tested on voices it never heard. With "
                    "--data DIR, on your audio files: DIR/{train,val,test}/<label>/* (the layout prepare-data "
                    "writes; a missing val/ or test/ is split off train/) or DIR/<label>/* (split here 70/15/15 "
                    "per label, seeded by --seed). Labels are the label folders, sorted, with _background_ "
                    "first when present; files that cannot be read are skipped and listed.")
    train.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="the bundle directory to write")
    train.add_argument("--data", metavar="DIR",
                       help="train on this folder per label instead of synthesised speech (not with --words)")
    data_options(train)
    train.add_argument("--modality", choices=("audio", "image"), default="audio",
                       help="audio (default: keyword clips) or image (photos: --data DIR/<label>/*.jpg; whole "
                            "groups held out where DIR/groups.csv or <group>__name.jpg file names say who made them)")
    train.add_argument("--backbone", metavar="NAME",
                       help="audio: speech_embedding (default: Google's, pretrained on real speech; a linear head "
                            "is trained on it) or ds_cnn (a small model trained from scratch on MFCC); image: "
                            "efficientnet_lite0 (default), efficientnet_lite2, resnet18, mobilenet_v3_small, "
                            "mobilenet_v3_large, vgg16, alexnet")
    train.add_argument("--weights", metavar="FILE",
                       help="image: the backbone's weights in torchvision's format (the torchvision backbones)")
    train.add_argument("--allow-download", action="store_true",
                       help="image: let torchvision download its own weights (a machine that is online)")
    train.add_argument("--no-antialias", action="store_true",
                       help="image: plain bilinear resize in the graph, which TensorRT takes whole (its ONNX "
                            "parser refuses the antialiased resize, so that node would run outside the engine)")
    train.add_argument("--epochs", type=int, help="DS-CNN training epochs (default 10)")
    train.add_argument("--no-baselines", action="store_true",
                       help="skip the baselines (MFCC + linear model / decision tree; the DS-CNN from scratch)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing bundle at BUNDLE_DIR")
    train.add_argument("--tar", action="store_true", help="also write BUNDLE_DIR.tar")
    train.add_argument("--json", action="store_true", help="print the metrics as JSON")
    train.set_defaults(func=_cmd_train)

    evaluate = cmds.add_parser("evaluate", help="accuracy of a bundle's head on DIR/<label>/* (recordings or "
                               "photos, as its first head reads; ONNX Runtime)")
    evaluate.add_argument("--bundle", required=True, metavar="DIR", help="the bundle directory (holds manifest.json)")
    evaluate.add_argument("--data", required=True, metavar="DIR",
                          help="one subfolder per label of audio files or photos")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.add_argument("--trusted-key", action="append", metavar="KEY|FILE",
                          help="also accept bundles signed by this public key (default: this exporter's own key)")
    evaluate.set_defaults(func=_cmd_evaluate)

    keys = cmds.add_parser("keys", help="the exporter's bundle signing key: create it, print its public key",
                           description="The Ed25519 key the exporter signs bundles with ($EDGETUNE_KEY_DIR, else "
                                       "~/.config/edgetune/signing), created on first use. Devices list its public "
                                       "key in trusted_keys.")
    keys.add_argument("--key-dir", metavar="DIR", help="where the key is kept (default $EDGETUNE_KEY_DIR, else "
                      "$XDG_CONFIG_HOME/edgetune/signing, else ~/.config/edgetune/signing)")
    keys.add_argument("--show-public", action="store_true",
                      help="print only the public key line (ed25519:<base64>), for a device's trusted_keys")
    keys.set_defaults(func=_cmd_keys)

    sign = cmds.add_parser("sign", help="check a bundle and (re)write its manifest.sig with the exporter's key")
    sign.add_argument("--bundle", required=True, metavar="DIR", help="the bundle directory (holds manifest.json)")
    sign.add_argument("--key-dir", metavar="DIR", help="where the signing key is kept (see `export keys`)")
    sign.set_defaults(func=_cmd_sign)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise missing_extra("torch", "export") from None


def _words(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    words = tuple(w.strip().lower() for value in values for w in value.split(",") if w.strip())
    if not words:
        raise UsageError("--words is empty; expected at least one keyword, e.g. --words yes no stop")
    return words


def _data_config(args: argparse.Namespace):
    from edgetune.export.data.speech import SpeechDataConfig

    changes: dict[str, Any] = {"seed": args.seed, "cache_dir": args.cache_dir}
    words = _words(args.words)
    if words:
        changes["words"] = words
    try:
        return SpeechDataConfig(**changes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_prepare_data(args: argparse.Namespace) -> int:
    from edgetune.export.data.speech import write_dataset_folder

    counts = write_dataset_folder(args.out, _data_config(args), progress=True)
    for split, per_label in counts.items():
        print(f"{split}: {sum(per_label.values())} clips in {len(per_label)} labels -> {args.out}/{split}")
    return 0


def _train_images(args: argparse.Namespace):
    from edgetune.export.image_transfer import ImageTransferConfig, train_image_bundle

    if not args.data:
        raise UsageError("--modality image needs --data DIR: a folder per label of photos (DIR/<label>/*.jpg)")
    if args.words or args.epochs is not None:
        raise UsageError("--words and --epochs are for audio; --modality image trains a linear head on --data")
    config = ImageTransferConfig(backbone=args.backbone or "efficientnet_lite0", weights=args.weights,
                                 allow_download=args.allow_download, antialias=not args.no_antialias, seed=args.seed,
                                 baselines=not args.no_baselines)
    return train_image_bundle(args.out, args.data, config, overwrite=args.overwrite)


def _cmd_train(args: argparse.Namespace) -> int:
    _require_torch()
    from edgetune.export.train import TrainConfig, train_folder_bundle, train_keyword_bundle

    if args.modality == "image":
        return _report_train(args, _train_images(args))
    if args.weights or args.allow_download or args.no_antialias:
        raise UsageError("--weights, --allow-download and --no-antialias are for --modality image")
    args.backbone = args.backbone or "speech_embedding"

    if args.data and args.words:
        raise UsageError("--data and --words conflict: with --data the labels are DIR's label folders; "
                         "drop --words, or drop --data to train on synthesised words")
    from edgetune.export.backbones import backbone

    name = backbone(args.backbone).name
    changes: dict[str, Any] = {"data": _data_config(args), "seed": args.seed, "baselines": not args.no_baselines}
    if args.epochs is not None and name != "ds_cnn":
        changes["ds_cnn"] = TrainConfig(epochs=args.epochs, baselines=False)
    elif args.epochs is not None:
        changes["epochs"] = args.epochs
    try:
        if name == "ds_cnn":
            if args.data:
                changes["bundle_id"] = "edgetune-kws-folder"
            config = TrainConfig(**changes)
        else:
            from edgetune.export.transfer import TransferConfig

            if args.data:
                changes["bundle_id"] = "edgetune-kws-folder"
            config = TransferConfig(**changes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if name != "ds_cnn":
        from edgetune.export.transfer import train_transfer_bundle

        result = train_transfer_bundle(args.out, config, progress=True, data_dir=args.data, overwrite=args.overwrite)
    elif args.data:
        result = train_folder_bundle(args.data, args.out, config, progress=True, overwrite=args.overwrite)
    else:
        result = train_keyword_bundle(args.out, config, progress=True, overwrite=args.overwrite)
    return _report_train(args, result)


def _report_train(args: argparse.Namespace, result) -> int:
    from edgetune.export.bundle import pack_bundle

    tar_path = pack_bundle(result.bundle_dir) if args.tar else None
    metrics = result.metrics
    if args.json:
        print(json.dumps({"bundle": str(result.bundle_dir), "tar": str(tar_path) if tar_path else None,
                          "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                          "test_data": str(result.test_data_dir),
                          "timings_s": result.timings_s, "metrics": metrics}, indent=2, sort_keys=True))
        return 0
    test = metrics["test"]
    print(f"bundle {result.manifest.bundle_id} {result.manifest.bundle_version} -> {result.bundle_dir}")
    held_out = (f"held-out voices ({', '.join(test['voices'])})" if "voices" in test
                else f"the test split of {args.data}")
    unit = "photos" if args.modality == "image" else "clips"
    print(f"test accuracy on {held_out}: {test['accuracy']:.3f} "
          f"on {test['n']} {unit} (chance {metrics['chance_accuracy']:.3f})")
    skipped = result.manifest.provenance["data"].get("skipped", [])
    if skipped:
        print(f"{len(skipped)} file(s) skipped:")
        for item in skipped:
            print(f"  {item['path']}: {item['reason']}")
    print(f"  recipe: {metrics.get('recipe', result.manifest.provenance.get('recipe'))}")
    for base_name, base in metrics.get("baselines", {}).items():
        print(f"  baseline {base_name}: {base['accuracy']:.3f}")
    curve = metrics.get("learning_curve")
    if curve:
        print(f"  learning curve ({unit} per class: test accuracy): "
              + ", ".join(f"{p['per_class']}: {p['accuracy']:.3f}" for p in curve))
    print(f"test {unit}: {result.test_data_dir}" + (f"; checkpoint: {result.checkpoint}" if result.checkpoint else ""))
    if tar_path:
        print(f"tar: {tar_path}")
    print("timings (s): " + ", ".join(f"{k} {v}" for k, v in result.timings_s.items()))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edgetune.edge.bundle import load_bundle
    from edgetune.edge.evaluate import evaluate_folder
    from edgetune.edge.runtime.providers import ProviderSettings

    bundle = load_bundle(args.bundle, trust=_own_trust(args.trusted_key))
    spec = next((h for h in bundle.manifest.heads if h.input != "fused"), None)
    if spec is None:
        raise UsageError(f"bundle {bundle.bundle_id} has only fused heads; a folder of one modality cannot "
                         "evaluate them")
    head = bundle.heads[spec.name].head
    result = evaluate_folder(bundle, args.data, head.weight, head.bias, head.labels,
                             providers=ProviderSettings(providers="cpu"), modality=spec.input)
    if args.json:
        print(json.dumps(dict(result.to_json(), bundle=str(args.bundle)), indent=2, sort_keys=True))
    else:
        print(f"bundle {bundle.bundle_id} {bundle.bundle_version}, its own head")
        print(result.render())
    return 0


def _own_trust(extra: list[str] | None):
    """This exporter's own public key (when it has one) and any ``--trusted-key``."""
    from edgetune.contract import ContractError
    from edgetune.contract.signing import TrustPolicy
    from edgetune.export.signing import KEY_FILE, default_key_dir, load_signing_key

    keys: list = [load_signing_key(create=False).public] if (default_key_dir() / KEY_FILE).exists() else []
    try:
        return TrustPolicy.of(keys + list(extra or ()))
    except ContractError as exc:
        raise UsageError(f"--trusted-key: {exc}") from None


def _cmd_keys(args: argparse.Namespace) -> int:
    from edgetune.export.signing import PUBLIC_KEY_FILE, load_signing_key

    key = load_signing_key(args.key_dir)
    if args.show_public:
        print(key.public.to_text())
        return 0
    print(f"signing key {key.key_id}: {key.path}")
    print(f"public key (put it in each device's trusted_keys, or use {key.path.with_name(PUBLIC_KEY_FILE)}):")
    print(f"  {key.public.to_text()}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from edgetune.export.signing import load_signing_key, sign_bundle

    signature = sign_bundle(args.bundle, load_signing_key(args.key_dir))
    print(f"signed {args.bundle} with key {signature.key_id}")
    return 0
