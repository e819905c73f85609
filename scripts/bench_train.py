"""Training throughput of every registered model through the real engine, and this machine's limit.

For each model: samples/s of forward + backward + optimizer (fused sparse optimizer in backward through
DistributedModelParallel at world size 1, dense Adam) on Criteo-shaped batches (26 sparse features with the demo
preset's vocabularies, 13 dense, embedding dim 16), batches pre-built in memory so the loader is not measured.

The limit for a model is the serial sum of two bare steps on the same machine and batch:
  - the bare fused embedding step: the model's own lookup modules (same tables), same sparse optimizer, through
    DMP, loss = sum of the pooled outputs;
  - the bare dense step of that model: its own forward with every lookup replaced by fixed tensors (the
    lookups' outputs of one real batch, as leaves that take gradients), BCE, backward, Adam on the dense
    parameters: the interaction layers, towers and heads with nothing of the engine around them.
  limit = 1 / (1 / emb_rate + 1 / dense_rate); each model's figure is printed as a fraction of it, so the fraction
  means the same for a model with an interaction layer as for one without. The three steps are timed in
  interleaved rounds (``--rounds``), medians compared. The bare DNN tower (13 + 26 * D ->
  the model's dnn_hidden_units -> 1) is printed for reference.

Prints a table; asserts nothing. Usage:
    python scripts/bench_train.py [--batch 4096] [--steps 30] [--models DeepFM,DCNMix] [--sparse-optim rowwise_adagrad]
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import torch

from dist_ctr.bench.limit import ModelLookups, dense_part_step, limit_rate
from dist_ctr.bench.timing import time_steps
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.layers.core import DNN
from dist_ctr.models import MODEL_REGISTRY, build_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.train.engine import Trainer
from dist_ctr.train.job import quiet_torchrec
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def make_batches(schema: FeatureSchema, batch: int, n: int, seed: int = 0) -> list[CTRBatch]:
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = []
        for f in schema.sparse_features:
            z = g.zipf(1.2, batch) - 1
            ids.append(np.minimum(z, f.vocabulary_size - 1))
        values = torch.from_numpy(np.concatenate(ids).astype(np.int64))
        lengths = torch.ones(batch * len(ids), dtype=torch.int32)
        kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=values, lengths=lengths)
        dense = torch.from_numpy(g.random((batch, schema.n_dense), dtype=np.float32))
        labels = torch.from_numpy(g.integers(0, 2, (batch, 1)).astype(np.float32))
        out.append(CTRBatch(dense, kjt, labels))
    return out


def tower_rate(in_dim: int, hidden: tuple[int, ...], batch: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    tower = torch.nn.Sequential(DNN(in_dim, hidden), torch.nn.Linear(hidden[-1] if hidden else in_dim, 1))
    opt = torch.optim.Adam(tower.parameters(), lr=1e-3)
    x = torch.randn(batch, in_dim)
    y = torch.randint(0, 2, (batch, 1)).float()

    def step(_b):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(tower(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    class _B:
        batch_size = batch

    return time_steps(step, [_B()] * (steps + warmup), warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per model")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--models", default="", help="comma-separated; default: every registered model")
    ap.add_argument("--sparse-optim", default="rowwise_adagrad")
    args = ap.parse_args()
    quiet_torchrec()
    from dist_ctr.data.presets import criteo_kaggle_schema

    schema = criteo_kaggle_schema(embedding_dim=args.dim)
    env = DistEnv()
    init_process_group(env)
    batches = make_batches(schema, args.batch, args.steps + args.warmup)
    sparse_cfg = SparseOptimConfig(name=args.sparse_optim, lr=0.05)  # type: ignore[arg-type]
    dense_cfg = DenseOptimConfig(name="adam", lr=1e-3)

    torch.manual_seed(0)
    in_dim = schema.n_dense + len(schema.sparse_features) * args.dim
    names = [m for m in args.models.split(",") if m] or sorted(MODEL_REGISTRY)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}")
    print(f"Criteo schema: 26 sparse (dim {args.dim}, {sum(t.num_embeddings for t in schema.tables()):,} rows), "
          f"13 dense; batch {args.batch}; sparse optimizer {args.sparse_optim} (fused, DMP), dense Adam")
    print(f"per model: median of {args.rounds} interleaved rounds of the model's engine step, its bare dense step "
          "and the bare fused embedding step")
    print(f"{'model':18s} {'samples/s':>11s} {'dense/s':>10s} {'limit/s':>10s} {'of limit':>9s} {'tower/s':>10s}")
    for name in names:
        try:
            torch.manual_seed(0)
            model = build_model(name, schema, None)
        except Exception as e:  # noqa: BLE001 - models needing sequence / multi-task schemas
            print(f"{name:18s} skipped: {str(e).splitlines()[0][:80]}")
            continue
        cfg = model.config if hasattr(model, "config") else None
        hidden = tuple(getattr(cfg, "dnn_hidden_units", (256, 128)) or (256, 128))
        trainer = Trainer(model, env, sparse_optim=sparse_cfg, dense_optim=dense_cfg, batch_size=args.batch)
        torch.manual_seed(0)
        bare = build_model(name, schema, None)
        Trainer(bare, env, sparse_optim=sparse_cfg, dense_optim=dense_cfg, batch_size=args.batch)  # shards it
        dense_step = dense_part_step(bare, batches[0])
        torch.manual_seed(0)
        emb = Trainer(ModelLookups(build_model(name, schema, None)), env, sparse_optim=sparse_cfg,
                      dense_optim=dense_cfg, batch_size=args.batch)
        rates: dict[str, list[float]] = {"model": [], "dense": [], "emb": []}
        for _ in range(args.rounds):  # interleaved, so that all three see the same load on a shared machine
            rates["model"].append(time_steps(trainer.train_step, batches, args.warmup))
            rates["dense"].append(time_steps(dense_step, [batches[0]] * len(batches), args.warmup))
            rates["emb"].append(time_steps(emb.train_step, batches, args.warmup))
        rate, d_rate, e_rate = (float(np.median(rates[k])) for k in ("model", "dense", "emb"))
        t_rate = tower_rate(in_dim, hidden, args.batch, max(10, args.steps // 2), 3)
        limit = limit_rate(e_rate, d_rate)
        print(f"{name:18s} {rate:11,.0f} {d_rate:10,.0f} {limit:10,.0f} {rate / limit:9.2f} {t_rate:10,.0f}",
              flush=True)
        del trainer, model, bare, emb


if __name__ == "__main__":
    main()
