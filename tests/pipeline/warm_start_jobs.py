"""Helpers of the warm-start tests (importable by spawned processes): a tiny job on synthetic daily data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dist_ctr.config import JobConfig
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
from dist_ctr.strict import from_dict


def tiny_schema(u_rows: int = 200) -> FeatureSchema:
    return FeatureSchema((SparseFeat("u", u_rows, 8), SparseFeat("i", 100, 8), SparseFeat("c", 50, 8),
                          DenseFeat("x"), DenseFeat("y")))


def tiny_job(root: Path, data: str, schema: FeatureSchema, name: str = "j", model: str = "DeepFM",
             dim_hidden: int = 16, train_max: str = "2026-11-01") -> JobConfig:
    sp = root / f"{name}_schema.yaml"
    sp.write_text(schema.to_yaml())
    return from_dict(JobConfig, {
        "name": name, "schema": {"path": str(sp)},
        "data": {"train": {"url": data, "batch_size": 256, "partitions": {"date": {"max": train_max}}}},
        "model": {"name": model, "config": {"dnn_hidden_units": [dim_hidden]} if model == "DeepFM" else {}},
        "train": {"progress": False, "log_every": 0, "max_steps": 6,
                  "checkpoint": {"dir": str(root / name / "ck"), "resume": False}},
        "output_dir": str(root / "runs")})


def warm_and_save(env: Any, job: JobConfig, parent: str, out_root: str) -> dict[str, Any]:
    """Build the job's trainer, warm-start it from ``parent``, save a checkpoint without training."""
    from dist_ctr.config import load_schema
    from dist_ctr.train.job import make_trainer
    from dist_ctr.train.warm_start import warm_start

    schema = load_schema(job.schema)
    trainer = make_trainer(job, schema, env, batch_size=256)
    grown = warm_start(trainer, parent)
    url = trainer.save(out_root)
    return {"grown": grown, "url": url, "step": trainer.global_step}
