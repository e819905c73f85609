"""The facade's metrics: DeepCTR-Torch's metric names, computed exactly over whole sets, and which of them the
engine's ``evaluate`` already reports.

Notation: ``N`` rows.
"""

from __future__ import annotations

import numpy as np
import torch

from dist_ctr.train.metrics import exact_auc, logloss

__all__ = ["ENGINE_KEY", "METRICS", "metric_value"]

METRICS = ("binary_crossentropy", "logloss", "auc", "mse", "mae", "accuracy", "acc")
# compat metric -> key of the engine's evaluate() for a task type
ENGINE_KEY = {
    ("binary", "binary_crossentropy"): "logloss",
    ("binary", "logloss"): "logloss",
    ("binary", "auc"): "auc",
    ("regression", "mse"): "mse",
    ("regression", "mae"): "mae",
}


def metric_value(name: str, preds: np.ndarray, labels: np.ndarray) -> float:
    """One compat metric of predictions ``(N,)`` against labels ``(N,)`` (exact, whole set).

    >>> metric_value("accuracy", np.array([0.2, 0.7, 0.6]), np.array([0.0, 1.0, 0.0]))
    0.6666666666666666
    """
    p, y = torch.from_numpy(np.asarray(preds, np.float64)), torch.from_numpy(np.asarray(labels, np.float64))
    if name in ("binary_crossentropy", "logloss"):
        return logloss(p, y)
    if name == "auc":
        return exact_auc(p, y)
    if name == "mse":
        return float(((p - y) ** 2).mean())
    if name == "mae":
        return float((p - y).abs().mean())
    if name in ("accuracy", "acc"):
        return float(((p > 0.5).double() == y).double().mean())
    raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")
