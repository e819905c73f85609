"""Worker functions for the 1-process vs N-process equivalence tests (importable by spawned processes)."""

from __future__ import annotations

from typing import Any

import torch

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv
from dist_ctr.models import build_model
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.train.engine import Trainer
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def tiny_schema() -> FeatureSchema:
    return FeatureSchema((
        SparseFeat("u", 40, 8), SparseFeat("i", 30, 8), SparseFeat("i2", 30, 8, embedding_name="i"),
        VarLenSparseFeat(SparseFeat("tags", 12, 8), maxlen=3, combiner="mean"),
        SparseFeat("c", 25, 8), DenseFeat("x"), DenseFeat("y"),
    ))


def global_batches(schema: FeatureSchema, n: int, batch: int, seed: int = 0) -> list[CTRBatch]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        vals, lens = [], []
        for f in schema.sparse_features:
            ln = torch.randint(0, getattr(f, "maxlen", 1) + 1, (batch,), generator=g) if hasattr(f, "maxlen") \
                else torch.ones(batch, dtype=torch.long)
            lens.append(ln)
            vals.append(torch.randint(0, f.vocabulary_size, (int(ln.sum()),), generator=g))
        kjt = KeyedJaggedTensor.from_lengths_sync(schema.sparse_names, torch.cat(vals), torch.cat(lens).int())
        dense = torch.randn(batch, schema.n_dense, generator=g)
        labels = torch.randint(0, 2, (batch, max(1, len(schema.labels))), generator=g).float()
        out.append(CTRBatch(dense, kjt, labels))
    return out


def split(b: CTRBatch, rank: int, world: int) -> CTRBatch:
    """Rows ``[rank * B/world, (rank+1) * B/world)`` of a global batch."""
    B = b.batch_size
    per = B // world
    lo, hi = rank * per, (rank + 1) * per
    d = b.sparse.to_dict()
    keys = b.sparse.keys()
    vals, lens = [], []
    for k in keys:
        jt = d[k]
        off = jt.offsets()
        vals.append(jt.values()[off[lo]:off[hi]])
        lens.append(jt.lengths()[lo:hi])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys, torch.cat(vals), torch.cat(lens).int())
    return CTRBatch(b.dense[lo:hi], kjt, b.labels[lo:hi])


def sequence_schema() -> FeatureSchema:
    from dist_ctr.schema import LabelSpec

    d = 8
    return FeatureSchema((
        SparseFeat("user", 30, d), SparseFeat("item_id", 40, d), SparseFeat("cate_id", 9, d),
        VarLenSparseFeat(SparseFeat("hist_item_id", 40, d, embedding_name="item_id"), maxlen=6),
        VarLenSparseFeat(SparseFeat("hist_cate_id", 9, d, embedding_name="cate_id"), maxlen=6),
        DenseFeat("x"),
    ), (LabelSpec("label"),))


def multitask_schema() -> FeatureSchema:
    from dist_ctr.schema import LabelSpec

    base = tiny_schema()
    return FeatureSchema(base.features, (LabelSpec("click"), LabelSpec("buy")))


SCHEMAS = {"tiny": tiny_schema, "sequence": sequence_schema, "multitask": multitask_schema}
# Deterministic variants: DIEN's in-batch negative sampling draws from each rank's rows; DSIN's BiLSTM dropout
# masks are per rank. (Batch norms -- Dice in DIN, AFN's log-transform layer -- normalise over the global batch:
# the Trainer's default ``sync_batchnorm``.)
OVERRIDES: dict[str, dict[str, Any]] = {
    "DIEN": {"use_negsampling": False}, "DSIN": {"bilstm_dropout": 0.0},
    # DLRM's bottom MLP must end at the schema's embedding dim (8 in the tiny schema); its defaults end at 64 / 128.
    "DLRM": {"dense_arch_layer_sizes": (16, 8), "over_arch_layer_sizes": (16, 1)},
    "DLRM_DCNv2": {"dense_arch_layer_sizes": (16, 8), "over_arch_layer_sizes": (16, 1), "dcn_num_layers": 2,
                   "dcn_low_rank_dim": 4},
}
# Embeddings (and DNN weights) large enough to move the loss from the first step: with DeepCTR's default 1e-4 the
# outputs of a few steps are ~sigmoid(bias) whatever the tables hold, and a mis-sharded table would go unseen.
VISIBLE_INIT_STD = 0.1


def model_config(name: str, schema: FeatureSchema | None) -> Any:
    """The config the equivalence runs use: example config (``schema`` given), overrides, visible init."""
    import dataclasses

    from dist_ctr.models import MODEL_REGISTRY

    entry = MODEL_REGISTRY[name]
    cfg = entry.cls.example_config(schema) if schema is not None and hasattr(entry.cls, "example_config") else None
    cfg = cfg if cfg is not None else entry.config_cls()
    if name in OVERRIDES:
        cfg = dataclasses.replace(cfg, **OVERRIDES[name])
    if "init_std" in {f.name for f in dataclasses.fields(cfg)}:
        cfg = dataclasses.replace(cfg, init_std=VISIBLE_INIT_STD)
    return cfg


def structured_models() -> list[tuple[str, str]]:
    """(model, schema kind) for sequence and multi-task models without per-rank randomness."""
    from dist_ctr.models import MODEL_REGISTRY

    out = []
    for name, entry in sorted(MODEL_REGISTRY.items()):
        reqs = set(getattr(entry.cls, "schema_requirements", ()))
        kind = "sequence" if "sequence" in reqs else "multitask" if "multitask" in reqs else None
        if kind is None:
            continue
        schema = SCHEMAS[kind]()
        try:
            model = build_model(name, schema, model_config(name, schema))
        except Exception:  # noqa: BLE001
            continue
        if not rank_local_randomness(model):
            out.append((name, kind))
    return out


def run_structured(env: DistEnv, pairs: list[tuple[str, str]], steps: int, batch: int) -> dict[str, list[float]]:
    return {name: run(env, name, {"default_types": ["table_wise"]}, steps, batch, kind) for name, kind in pairs}


def run(env: DistEnv, model_name: str, sharding: dict[str, Any], steps: int, batch: int,
        schema_kind: str = "tiny", sync_batchnorm: bool = True, loss_reduction: str = "mean",
        sgd: bool = False) -> list[float]:
    """Train ``steps`` global batches; returns the global mean loss per step (same on every rank). ``sgd``: plain
    SGD (lr 0.01) on embeddings and dense layers, where the loss's scale is the step's scale."""
    schema = SCHEMAS[schema_kind]()
    torch.manual_seed(0)
    model = build_model(model_name, schema, model_config(model_name, schema if schema_kind != "tiny" else None))
    optim = ({"sparse_optim": SparseOptimConfig("sgd", lr=0.01), "dense_optim": DenseOptimConfig("sgd", lr=0.01)}
             if sgd else {})
    trainer = Trainer(model, env, sharding=sharding, batch_size=batch // env.world_size, seed=1,
                      sync_batchnorm=sync_batchnorm, loss_reduction=loss_reduction, **optim)
    types: dict[str, list[str]] = {}
    for _module_path, params in trainer.plan.plan.items():
        for table, ps in params.items():
            types.setdefault(ps.sharding_type, []).append(table)
    _LAST_PLAN["types"] = types
    losses = []
    for b in global_batches(schema, steps, batch):
        loss, _ = trainer.train_step(split(b, env.rank, env.world_size))
        t = loss.detach().clone()
        if env.world_size > 1:
            torch.distributed.all_reduce(t)
            t /= env.world_size
        losses.append(float(t))
    return losses


def rank_local_randomness(model: torch.nn.Module) -> bool:
    """Dropout masks are drawn per rank: such models cannot match one process bit for bit."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            return True
    return False


def tiny_models() -> list[str]:
    """Registered models that build on the tiny schema with their default config (plus ``OVERRIDES``)."""
    from dist_ctr.models import MODEL_REGISTRY

    names = []
    for name, entry in sorted(MODEL_REGISTRY.items()):
        reqs = set(getattr(entry.cls, "schema_requirements", ()))
        if reqs - {"sparse", "dense"}:
            continue
        try:
            model = build_model(name, tiny_schema(), model_config(name, None))  # defaults + OVERRIDES
        except Exception:  # noqa: BLE001 - models that need extra config are covered by their own tests
            continue
        if rank_local_randomness(model):
            continue
        names.append(name)
    return names


def run_many(env: DistEnv, models: list[str], sharding: dict[str, Any], steps: int, batch: int,
             sync_batchnorm: bool = True, loss_reduction: str = "mean", sgd: bool = False) -> dict[str, Any]:
    losses = {m: run(env, m, sharding, steps, batch, sync_batchnorm=sync_batchnorm, loss_reduction=loss_reduction,
                     sgd=sgd) for m in models}
    return {"losses": losses, "column_wise_tables": _last_plan_types(env).get("column_wise", [])}


_LAST_PLAN: dict[str, Any] = {}


def _last_plan_types(env: DistEnv) -> dict[str, list[str]]:
    return _LAST_PLAN.get("types", {})
