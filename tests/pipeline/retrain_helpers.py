"""Helpers of the retraining tests: a tiny pipeline file over drifting daily partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.pipeline.warm_start_jobs import tiny_schema

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]


def write_pipeline(root: Path, data_root: str, registry: str, extra: dict[str, Any] | None = None,
                   registry_options: dict[str, Any] | None = None) -> Path:
    """A pipeline YAML under ``root``: DeepFM on the tiny schema, small steps, a permissive gate."""
    (root / "schema.yaml").write_text(tiny_schema().to_yaml())
    cfg: dict[str, Any] = {
        "name": "tiny", "schema": {"path": str(root / "schema.yaml")},
        "data": {"train": {"batch_size": 256}},
        "model": {"name": "DeepFM", "config": {"dnn_hidden_units": [16]}},
        "optim": {"sparse": {"name": "rowwise_adagrad", "lr": 0.1}, "dense": {"name": "adam", "lr": 0.003}},
        "train": {"progress": False, "log_every": 0, "epochs": 2},
        "output_dir": str(root / "runs"),
        "retrain": {"data_root": data_root, "registry": registry, "model_name": "ctr",
                    "registry_storage_options": registry_options or {},
                    "gate": {"min_auc": 0.55, "max_auc_drop": 0.02}, "work_dir": str(root / "work")},
    }
    for dotted, value in (extra or {}).items():
        node = cfg
        *head, last = dotted.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = value
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
