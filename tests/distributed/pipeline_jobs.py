"""Worker functions for the train-pipeline tests (importable by spawned processes).

Each model trains the same global batches twice from the same seeds: in the plain loop and under TorchRec's
``TrainPipelineSparseDist`` (``Trainer(pipeline="sparse_dist")``), through ``Trainer.fit`` with a loss logged every
step.
"""

from __future__ import annotations

from typing import Any

import torch
from torchrec.distributed.types import ShardedModule

from dist_ctr.distributed.env import DistEnv
from dist_ctr.models import MODEL_REGISTRY, build_model
from dist_ctr.train.engine import Trainer
from tests.distributed.equivalence_jobs import SCHEMAS, global_batches, model_config, split

TABLE_WISE = {"default_types": ["table_wise"]}


def buildable_models() -> list[tuple[str, str]]:
    """(model, schema kind) for every registered model that one of the equivalence schemas can feed."""
    out = []
    for name, entry in sorted(MODEL_REGISTRY.items()):
        reqs = set(getattr(entry.cls, "schema_requirements", ()))
        kind = "sequence" if "sequence" in reqs else "multitask" if "multitask" in reqs else "tiny"
        try:
            build_model(name, SCHEMAS[kind](), model_config(name, SCHEMAS[kind]() if kind != "tiny" else None))
        except Exception:  # noqa: BLE001 - models needing other inputs are covered by their own tests
            continue
        out.append((name, kind))
    return out


def _fit_losses(env: DistEnv, name: str, kind: str, pipeline: str, steps: int, batch: int) -> list[float]:
    schema = SCHEMAS[kind]()
    torch.manual_seed(0)
    model = build_model(name, schema, model_config(name, schema if kind != "tiny" else None))
    trainer = Trainer(model, env, sharding=TABLE_WISE, batch_size=batch // env.world_size, seed=1, pipeline=pipeline)
    assert trainer.pipeline == pipeline
    data = [split(b, env.rank, env.world_size) for b in global_batches(schema, steps, batch)]
    torch.manual_seed(123)  # dropout masks, in-batch negatives: the same draws in both loops
    history = trainer.fit(data, epochs=1, log_every=1, progress=False)
    assert trainer.global_step == steps
    if pipeline == "sparse_dist":  # every sharded embedding module runs through the pipeline's input dist
        sharded = sum(isinstance(m, ShardedModule) for m in trainer.dmp.modules())
        assert trainer.pipelined_modules == sharded > 0, (trainer.pipelined_modules, sharded)
    return [s["loss"] for s in history.steps]


def compare_loops(env: DistEnv, pairs: list[tuple[str, str]], steps: int, batch: int) -> dict[str, Any]:
    """``{model: {"none": losses, "sparse_dist": losses}}`` (this rank's per-step losses), or the error text."""
    out: dict[str, Any] = {}
    for name, kind in pairs:
        try:
            out[name] = {p: _fit_losses(env, name, kind, p, steps, batch) for p in ("none", "sparse_dist")}
        except Exception as e:  # noqa: BLE001 - reported per model by the test
            out[name] = f"{type(e).__name__}: {e}"
    return out
