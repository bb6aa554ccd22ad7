"""An audio-visual bundle: an audio bundle and an image bundle side by side, plus fused heads.

:func:`write_av_bundle` takes two verified single-modality bundles (each written by its own
exporter: ``export train`` and ``export train --modality image``), copies their graphs and heads
unchanged (same bytes, same parity figures), and adds the fused heads that read both embeddings
side by side (``contract/manifest.py`` :class:`FusionSpec`; the heads from
:mod:`edgetune.export.fusion.heads`). The device then runs the microphone, the camera and the
fused heads from one bundle, and enrolment on either modality works as in its own bundle.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgetune.contract import tensors
from edgetune.contract.manifest import FusionSpec, Manifest, verify_bundle

from .bundle import HeadArrays, all_graphs, write_bundle
from .signing import SigningKey, sign_bundle


def _heads_of(directory: Path, manifest: Manifest) -> list[HeadArrays]:
    out = []
    for spec in manifest.heads:
        if spec.input == "fused":
            raise ValueError(f"bundle {manifest.bundle_id} already has fused head {spec.name}; combine single-modality "
                             "bundles")
        with np.load(directory / spec.file, allow_pickle=False) as arrays:
            weight, bias = arrays[tensors.HEAD_WEIGHT], arrays[tensors.HEAD_BIAS]
        replay = {}
        if spec.replay_file:
            with np.load(directory / spec.replay_file, allow_pickle=False) as r:
                replay = {"replay_embeddings": r[tensors.REPLAY_EMBEDDINGS], "replay_labels": r[tensors.REPLAY_LABELS]}
        out.append(HeadArrays(spec.name, spec.labels, weight, bias, input=spec.input, **replay))
    return out


def _copier(directory: Path, files: Sequence[str], parity: Mapping[str, Any]):
    def write(staging: Path) -> dict[str, Any]:
        for file in files:
            shutil.copyfile(directory / file, staging / file)
        return {file: dict(parity[file]) for file in files if file in parity}

    return write


def write_av_bundle(out_dir: Path, *, audio_bundle: Path, image_bundle: Path, fused: Sequence[HeadArrays],
                    window_s: float = 1.0, bundle_id: str, bundle_version: str,
                    metrics: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
                    overwrite: bool = False, key: SigningKey | None = None) -> Manifest:
    """Write the audio-visual bundle to ``out_dir``: ``audio_bundle``'s graphs and heads,
    ``image_bundle``'s, and the ``fused`` heads (input ``fused``) over [audio; image] paired
    within ``window_s`` seconds on the device; signed with ``key`` (default: the exporter's)."""
    a_dir, i_dir = Path(audio_bundle), Path(image_bundle)
    a, i = verify_bundle(a_dir), verify_bundle(i_dir)
    if a.audio is None or i.image is None:
        raise ValueError(f"write_av_bundle needs an audio bundle and an image bundle; got modalities "
                         f"{list(a.modalities)} and {list(i.modalities)}")
    heads = _heads_of(a_dir, a) + _heads_of(i_dir, i)
    names = [h.name for h in heads] + [h.name for h in fused]
    if len(set(names)) != len(names):
        raise ValueError(f"head names {names} repeat; rename the image or fused heads")
    if any(h.input != "fused" for h in fused):
        raise ValueError(f"fused heads must read 'fused'; got {[(h.name, h.input) for h in fused]}")
    manifest = write_bundle(
        out_dir, bundle_id=bundle_id, bundle_version=bundle_version, audio=a.audio, image=i.image,
        fusion=FusionSpec(("audio", "image"), window_s),
        write_graphs=all_graphs(_copier(a_dir, a.audio.files, a.parity), _copier(i_dir, i.image.files, i.parity)),
        heads=[*heads, *fused],
        metrics={"audio": dict(a.metrics), "image": dict(i.metrics), **dict(metrics or {}),
                 "l2": a.metrics.get("l2")},
        provenance={"audio_bundle": {"bundle_id": a.bundle_id, "bundle_version": a.bundle_version,
                                     "provenance": dict(a.provenance)},
                    "image_bundle": {"bundle_id": i.bundle_id, "bundle_version": i.bundle_version,
                                     "provenance": dict(i.provenance)},
                    "backbones": list(a.provenance.get("backbones", [])) + list(i.provenance.get("backbones", [])),
                    **dict(provenance or {})},
        overwrite=overwrite)
    sign_bundle(out_dir, key)
    return manifest
