"""Worker functions for the loader-resume tests across world sizes (importable by spawned processes).

A real ``Trainer`` reads a real Parquet set (the data tests' tiny set, with a ``row_id`` column) through
``ParquetLoader``; :class:`~tests.distributed.ray_jobs.LedgerCallback` writes the row ids each step trained.
"""

from __future__ import annotations

from typing import Any

import torch

from dist_ctr.data.config import DataConfig
from dist_ctr.data.loader import build_loader
from dist_ctr.distributed.env import DistEnv
from dist_ctr.models import build_model
from dist_ctr.train import checkpoint as ckpt
from dist_ctr.train.engine import Trainer
from tests.data.conftest import tiny_schema
from tests.distributed.ray_jobs import TABLE_WISE, LedgerCallback

DATA_SEED = 7


def fit_parquet(env: DistEnv, data_dir: str, ck_root: str, ledger_dir: str, batch: int, max_steps: int,
                resume: bool, pipeline: str = "none") -> dict[str, Any]:
    """Train one epoch of ``data_dir`` (stopping after ``max_steps`` global steps when > 0), checkpointing under
    ``ck_root``; with ``resume``, load the latest checkpoint (and loader cursor) first, whatever its world size.
    ``pipeline``: the Trainer's training loop (``"none"`` or ``"sparse_dist"``, which reads the loader ahead).

    Returns the step, epoch and loader length seen by this rank (plain values: they cross the spawn queue).
    """
    schema = tiny_schema()
    cfg = DataConfig(url=data_dir, batch_size=batch, shuffle_buffer_rows=20, prefetch=2)
    loader = build_loader(schema, cfg, rank=env.rank, world_size=env.world_size, seed=DATA_SEED)
    torch.manual_seed(0)
    trainer = Trainer(build_model("LogisticRegression", schema, None), env, sharding=TABLE_WISE, batch_size=batch,
                      seed=1, pipeline=pipeline)
    trainer.meta = {"schema": schema.to_dict(), "model": "LogisticRegression", "model_config": {}}
    loaded_world = 0
    if resume:
        latest = ckpt.latest_checkpoint(ck_root)
        assert latest is not None, f"no committed checkpoint under {ck_root}"
        loaded_world = int(trainer.load(latest.url, loader)["world_size"])
    start = {"step": trainer.global_step, "epoch": trainer.epoch, "len": len(loader)}
    trainer.fit(loader, epochs=1, max_steps=max_steps, log_every=1, progress=False, checkpoint_root=ck_root,
                callbacks=[LedgerCallback(ledger_dir)])
    return {"start": start, "loaded_world": loaded_world, "step": trainer.global_step, "epoch": trainer.epoch}
