"""The seed's baselines on the same split: MFCC + linear model, MFCC + decision tree.

Each clip's MFCC map ``[T, F]`` is pooled over time into ``segments`` equal stretches (mean per
stretch and coefficient), giving ``segments * F`` numbers per clip, then standardised with the
training set's statistics. Pooling keeps the word's coarse time course and makes both models
fit in seconds. Needs scikit-learn (``export`` extra).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgetune.errors import missing_extra

log = logging.getLogger(__name__)


def pooled_features(features: np.ndarray, segments: int = 10) -> np.ndarray:
    """float32 ``[n, T, F]`` -> float32 ``[n, segments * F]``: the mean of each of ``segments`` time stretches."""
    n, t, f = features.shape
    if not 1 <= segments <= t:
        raise ValueError(f"segments is {segments!r}; expected 1..{t} (the number of frames)")
    edges = np.linspace(0, t, segments + 1).round().astype(int)
    parts = [features[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])]  # segments x [n, F]
    return np.concatenate(parts, axis=1).astype(np.float32)


def run_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  seed: int = 0) -> dict[str, Any]:
    """Fit the baselines on ``train_*`` (features ``[n, T, F]``, labels ``[n]``); accuracy on ``test_*``."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:
        raise missing_extra("scikit-learn", "export") from None
    a, b = pooled_features(train_x), pooled_features(test_x)
    mean, std = a.mean(axis=0), a.std(axis=0) + 1e-6
    a, b = (a - mean) / std, (b - mean) / std
    models = {
        "mfcc_logistic_regression": LogisticRegression(max_iter=500, C=1.0),
        "mfcc_decision_tree": DecisionTreeClassifier(random_state=seed, min_samples_leaf=2),
    }
    out = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(a, train_y)
        accuracy = float(np.mean(model.predict(b) == test_y))
        out[name] = {"accuracy": accuracy, "n": int(test_y.size), "fit_seconds": round(time.perf_counter() - start, 3),
                     "features": "MFCC mean over 10 time segments, standardised"}
        log.info("baseline %s: test accuracy %.3f", name, accuracy)
    return out
