"""Score an exported model on a labelled Parquet partition: the one code path the gate uses for candidate and
published model alike.

Per binary task: exact AUC (:func:`dist_ctr.auc.exact_auc`), logloss (probabilities clipped to ``[1e-7, 1-1e-7]``),
label rate, mean prediction and calibration = mean prediction / label rate. Per regression task: MSE and the
means. Keys are ``<task>/<metric>``; a single-task model also gets them unprefixed (``auc``, ``logloss``, ...).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["score_model", "score_arrays"]

_EPS = 1e-7


def score_arrays(preds: np.ndarray, labels: np.ndarray, task_names: list[str],
                 task_types: list[str]) -> dict[str, Any]:
    """Metrics of predictions ``(N, T)`` against labels ``(N, T)`` (see the module docstring).

    >>> m = score_arrays(np.array([[0.2], [0.8], [0.6], [0.4]]), np.array([[0.], [1.], [1.], [0.]]), ["y"], ["binary"])
    >>> m["auc"], round(m["logloss"], 4), m["label_rate"], m["calibration"]
    (1.0, 0.367, 0.5, 1.0)
    """
    from dist_ctr.auc import exact_auc

    out: dict[str, Any] = {"rows": int(preds.shape[0])}
    for t, (name, kind) in enumerate(zip(task_names, task_types)):
        p, y = preds[:, t].astype(np.float64), labels[:, t].astype(np.float64)
        if kind == "binary":
            q = np.clip(p, _EPS, 1 - _EPS)
            rate, mean = float(y.mean()) if y.size else math.nan, float(p.mean()) if p.size else math.nan
            m = {"auc": exact_auc(p, y) if y.size else math.nan,
                 "logloss": float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()) if y.size else math.nan,
                 "label_rate": rate, "mean_prediction": mean,
                 "calibration": mean / rate if rate > 0 else math.nan}
        else:
            m = {"mse": float(((p - y) ** 2).mean()) if y.size else math.nan,
                 "label_mean": float(y.mean()) if y.size else math.nan,
                 "mean_prediction": float(p.mean()) if p.size else math.nan}
        for k, v in m.items():
            out[f"{name}/{k}"] = v
            if len(task_names) == 1:
                out[k] = v
    return out


@torch.no_grad()
def score_model(model_path: str, data_url: str, *, storage_options: Optional[dict[str, Any]] = None,
                model_storage_options: Optional[dict[str, Any]] = None, batch_size: int = 8192) -> dict[str, Any]:
    """Load the exported model at ``model_path`` and score it on every row of ``data_url``.

    ``storage_options`` are the data store's; ``model_storage_options`` the model file's (a registry on another
    store), default the same.

    The loader uses the model's own training data config (dense transform, vocabularies, bad-input policies), so a
    candidate and an older published model each see the partition as they were trained to.

    Returns:
        dict: ``rows`` and the per-task metrics (see the module docstring).

    Raises:
        ModelFileError, DataError, StorageError: the model file, the partition or the store (one line each).
    """
    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader
    from dist_ctr.schema import FeatureSchema
    from dist_ctr.train.export import _inference_data_config, _no_fx_tracing_notice, load_exported

    task, meta = load_exported(model_path, storage_options if model_storage_options is None
                               else model_storage_options)
    schema = FeatureSchema.from_dict(meta["schema"])
    cfg = _inference_data_config(DataConfig, data_url, batch_size, storage_options, meta.get("data_config") or {},
                                 require_labels=True)
    loader = build_loader(schema, cfg, rank=0, world_size=1, epoch=0, seed=0, device=torch.device("cpu"))
    preds, labels = [], []
    for b in _no_fx_tracing_notice(loader):
        p = task.predict_proba(task.model(b.dense, b.sparse))  # (B, T)
        y = b.labels  # (B, T)
        if b.row_ids is not None:
            keep = b.row_ids >= 0  # padded rows carry -1
            p, y = p[keep], y[keep]
        preds.append(p.double().numpy())
        labels.append(y.double().numpy())
    T = len(meta["task_names"])
    P = np.concatenate(preds) if preds else np.zeros((0, T))
    Y = np.concatenate(labels) if labels else np.zeros((0, T))
    return score_arrays(P, Y, list(meta["task_names"]), list(task.task_types))
