"""On-device fine-tuning of an image head from a folder of labelled photos.

The same refit, comparison, never-worse promotion, versions and rollback as audio
(:func:`edgetune.edge.enroll.refit_and_promote`); what the image modality brings is its samples:
the photos as the device decodes them (:mod:`.io`), augmented copies (:mod:`.augment`: mirror,
crops, exposure), embedded by the bundle's ``image_embedder.onnx``. A photo and its copies stay
in one cross-validation fold.
"""

from __future__ import annotations

import os

import numpy as np

from ..enroll import DEFAULT_COPIES, EnrollReport, EnrolmentData, check_enrolment, refit_and_promote
from ..head import DEFAULT_STEPS
from ..head_store import HeadStore
from ..bundle import Bundle
from ..runtime.providers import ProviderSettings
from .augment import augment_photos
from .io import read_image_folder
from .models import ImageModels


def enroll_images(bundle: Bundle, data_dir: str | os.PathLike[str], store: HeadStore, *,
                  holdout_fraction: float = 0.25, seed: int = 0, models: ImageModels | None = None,
                  providers: ProviderSettings | None = None, copies: int = DEFAULT_COPIES, l2: float | None = None,
                  steps: int = DEFAULT_STEPS) -> EnrollReport:
    """Refit the image head of ``store`` on ``data_dir/<label>/*.{jpg,png,...}``; save it as a new
    version, current only if not worse on the held-out photos and replay samples."""
    check_enrolment(bundle, store, copies)
    models = models if models is not None else ImageModels(bundle, providers)
    data = read_image_folder(data_dir)
    y = np.asarray(data.labels)

    def samples(idx: np.ndarray):
        photos, groups = augment_photos([data.frames[i] for i in idx], copies, seed)
        x = models.embed(photos)
        return x, y[idx][groups], groups, x[:idx.size]

    def embed(idx: np.ndarray) -> np.ndarray:
        if not idx.size:
            return np.zeros((0, models.embedding_size), np.float32)
        return models.embed([data.frames[i] for i in idx])

    return refit_and_promote(bundle, store, EnrolmentData(data.labels, samples, embed, data.skipped),
                             holdout_fraction=holdout_fraction, seed=seed, copies=copies, l2=l2, steps=steps)
