"""Worker functions and callbacks for the Ray, resume-across-world-sizes, distributed-eval and export tests.

Everything here is importable by spawned processes and Ray workers (module-level functions, no closures).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv
from dist_ctr.models import build_model
from dist_ctr.schema import FeatureSchema, VarLenSparseFeat
from dist_ctr.train.engine import Trainer
from tests.distributed.equivalence_jobs import global_batches, split, tiny_schema

TABLE_WISE = {"default_types": ["table_wise"]}


# ---- sharded Trainer on explicit global batches (spawn) ----------------------------------------------------------
def sum_schema() -> FeatureSchema:
    """``tiny_schema`` with the multi-hot feature sum-pooled (see ``make_trainer``)."""
    feats = [VarLenSparseFeat(f.sparsefeat, maxlen=f.maxlen, combiner="sum") if isinstance(f, VarLenSparseFeat) else f
             for f in tiny_schema().features]
    return FeatureSchema(tuple(feats))


def make_trainer(env: DistEnv, model_name: str, batch: int, seed: int = 1, schema: FeatureSchema | None = None
                 ) -> Trainer:
    schema = schema or tiny_schema()
    torch.manual_seed(0)
    trainer = Trainer(build_model(model_name, schema, None), env, sharding=TABLE_WISE,
                      batch_size=max(1, batch // env.world_size), seed=seed)
    trainer.meta = {"schema": schema.to_dict(), "model": model_name, "model_config": {}}
    return trainer


def global_loss(env: DistEnv, loss: torch.Tensor) -> float:
    t = loss.detach().clone()
    if env.world_size > 1:
        torch.distributed.all_reduce(t)
        t /= env.world_size
    return float(t)  # host sync


def predict_global(trainer: Trainer, env: DistEnv, batches: list[CTRBatch]) -> list[np.ndarray]:
    """Per global batch, this rank's slice of predictions ``(B / world, T)`` (rank r holds rows of slice r).

    Numpy, not tensors: tensors returned through the spawn queue are shared memory that dies with the worker.
    """
    return [trainer.predict([split(b, env.rank, env.world_size)]).numpy() for b in batches]


def schema_by_name(name: str) -> FeatureSchema:
    return {"tiny": tiny_schema, "sum": sum_schema}[name]()


def train_save_continue(env: DistEnv, model_name: str, root: str, save_after: int, total: int, batch: int,
                        data_seed: int = 0, schema: str = "tiny") -> dict[str, Any]:
    """Train ``save_after`` global batches, save a checkpoint, predict the eval batches, train on to ``total``."""
    trainer = make_trainer(env, model_name, batch, schema=schema_by_name(schema))
    data = global_batches(tiny_schema(), total, batch, seed=data_seed)
    evals = global_batches(tiny_schema(), 2, batch, seed=data_seed + 100)
    losses = []
    for b in data[:save_after]:
        losses.append(global_loss(env, trainer.train_step(split(b, env.rank, env.world_size))[0]))
    url = trainer.save(root)
    preds = predict_global(trainer, env, evals)
    for b in data[save_after:]:
        losses.append(global_loss(env, trainer.train_step(split(b, env.rank, env.world_size))[0]))
    return {"url": url, "losses": losses, "preds": preds, "step_at_save": save_after}


def load_predict_continue(env: DistEnv, model_name: str, url: str, total: int, batch: int,
                          data_seed: int = 0, schema: str = "tiny") -> dict[str, Any]:
    """Load ``url`` (saved at any world size), predict the eval batches, train the remaining global batches."""
    trainer = make_trainer(env, model_name, batch, seed=12345, schema=schema_by_name(schema))  # another init: the load must overwrite it
    meta = trainer.load(url)
    data = global_batches(tiny_schema(), total, batch, seed=data_seed)
    evals = global_batches(tiny_schema(), 2, batch, seed=data_seed + 100)
    step = trainer.global_step
    preds = predict_global(trainer, env, evals)
    losses = [global_loss(env, trainer.train_step(split(b, env.rank, env.world_size))[0]) for b in data[step:]]
    return {"preds": preds, "losses": losses, "step": step, "saved_world": int(meta["world_size"])}


def join_slices(per_rank: list[list[np.ndarray]]) -> torch.Tensor:
    """Rank-sliced predictions (``per_rank[r][j]`` = rank r's slice of batch j) -> global order ``(N, T)``."""
    n_batches = len(per_rank[0])
    return torch.cat([torch.from_numpy(np.concatenate([per_rank[r][j] for r in range(len(per_rank))]))
                      for j in range(n_batches)])


def train_and_save(env: DistEnv, models: list[str], root: str, steps: int, batch: int) -> dict[str, Any]:
    """For the export test, per model (one checkpoint root each): train, save, predict the eval batches."""
    out = {}
    for m in models:
        r = train_save_continue(env, m, f"{root}/{m}", steps, steps, batch)
        out[m] = {"url": r["url"], "root": f"{root}/{m}", "preds": r["preds"]}
    return out


def save_then_continue_many(env: DistEnv, models: list[str], root: str, save_after: int, total: int, batch: int
                            ) -> dict[str, Any]:
    return {m: train_save_continue(env, m, f"{root}/{m}", save_after, total, batch) for m in models}


def load_then_continue_many(env: DistEnv, urls: dict[str, str], total: int, batch: int) -> dict[str, Any]:
    return {m: load_predict_continue(env, m, url, total, batch) for m, url in urls.items()}


# ---- distributed evaluation (spawn) -----------------------------------------------------------------------------
def eval_rows(n_batches: int = 3, batch: int = 40, seed: int = 5) -> list[CTRBatch]:
    """Global eval batches with row ids ``0 .. n_batches * batch - 1`` in order."""
    out = []
    for j, b in enumerate(global_batches(tiny_schema(), n_batches, batch, seed=seed)):
        ids = torch.arange(j * batch, (j + 1) * batch)
        out.append(CTRBatch(b.dense, b.sparse, b.labels, ids))
    return out


def rank_eval_batches(env: DistEnv, batches: list[CTRBatch]) -> list[CTRBatch]:
    """Disjoint rows per rank: rank r takes slice r of every global batch; the last rank's last batch is padded
    with a row whose row id is -1 (as the loader pads), which must not count."""
    mine = [split(b, env.rank, env.world_size) for b in batches]
    out = []
    for j, (b, full) in enumerate(zip(mine, batches)):
        per = full.batch_size // env.world_size
        ids = full.row_ids[env.rank * per:(env.rank + 1) * per]
        if env.rank == env.world_size - 1 and j == len(mine) - 1:
            ids = ids.clone()
            ids[-1] = -1
        out.append(CTRBatch(b.dense, b.sparse, b.labels, ids))
    return out


def evaluate_job(env: DistEnv, model_name: str, train_steps: int, batch: int) -> dict[str, Any]:
    """Train a few steps on identical global batches, then evaluate this rank's disjoint eval rows."""
    trainer = make_trainer(env, model_name, batch)
    for b in global_batches(tiny_schema(), train_steps, batch, seed=9):
        trainer.train_step(split(b, env.rank, env.world_size))
    mine = rank_eval_batches(env, eval_rows())
    metrics = trainer.evaluate(mine)
    preds = torch.cat([trainer.predict([b]) for b in mine])
    ids = torch.cat([b.row_ids for b in mine])
    labels = torch.cat([b.labels for b in mine])
    return {"metrics": metrics, "preds": preds.numpy(), "row_ids": ids.numpy(), "labels": labels.numpy()}


# ---- Ray: ledger + kill callbacks -------------------------------------------------------------------------------
class LedgerCallback:
    """Test callback for Ray workers: per (attempt, rank) JSON lines with step, loss and the row ids trained.

    Row ids come from ``trainer.last_batch`` (the batch just trained, in either training loop); the job logs every
    step (``log_every=1``). With ``kill_rank``/``kill_step`` set, that rank SIGKILLs itself after logging
    ``kill_step`` on the first attempt only (a marker file under ``out_dir`` says the kill happened).
    """

    def __init__(self, out_dir: str, kill_rank: int = -1, kill_step: int = -1) -> None:
        self.out_dir = out_dir
        self.kill_rank = kill_rank
        self.kill_step = kill_step

    def on_train_begin(self, trainer: Trainer) -> None:
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.env.rank
        attempt = 0
        while (out / f"attempt{attempt}_rank{rank}.jsonl").exists():
            attempt += 1
        self.path = out / f"attempt{attempt}_rank{rank}.jsonl"
        self.path.touch()
        (out / f"pid_attempt{attempt}_rank{rank}").write_text(str(os.getpid()))
        self.attempt = attempt
        self.start_step = trainer.global_step

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        ids = trainer.last_batch.row_ids if trainer.last_batch is not None else None
        rows = [] if ids is None else [int(i) for i in ids.tolist() if i >= 0]  # host sync
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "loss": logs["loss"], "rows": rows}) + "\n")
        marker = Path(self.out_dir) / "KILLED"
        if trainer.env.rank == self.kill_rank and step == self.kill_step and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def make_ledger(out_dir: str, kill_rank: int = -1, kill_step: int = -1):
    """Factory for ``run_ray_job(..., callbacks_factory=...)`` (picklable through functools.partial)."""
    return [LedgerCallback(out_dir, kill_rank, kill_step)]


def read_ledger(out_dir: str) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """``{(attempt, rank): [ {step, loss, rows}, ... ]}``."""
    out = {}
    for p in sorted(Path(out_dir).glob("attempt*_rank*.jsonl")):
        a, r = p.stem.replace("attempt", "").split("_rank")
        out[(int(a), int(r))] = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out
