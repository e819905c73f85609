"""The one place that turns a single-process task into a sharded one, in this order:

1. fused sparse optimizer marked on the embedding parameters (``apply_optimizer_in_backward``);
2. sharding plan, computed collectively so every rank agrees;
3. ``DistributedModelParallel`` (shards EBC / EC, wraps the rest in DDP), also at world size 1 (one code path;
   there the dense part is only moved to the device: DDP would add a reducer, gradient buckets and a gloo
   all-reduce per step that change nothing with one rank; state-dict keys are the same either way);
4. deterministic embedding init, identical whatever the sharding (so 1 and N workers start from the same model);
5. the combined (fused sparse + dense) optimizer.

The training loop comes after, in ``train/engine.py``: TorchRec's ``TrainPipelineSparseDist`` on CUDA (and on
request on CPU, where tests check it against the plain loop), the plain loop otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DataParallelWrapper, DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.keyed import CombinedOptimizer

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.config import DEFAULT_BATCH_SIZE
from dist_ctr.distributed.env import DistEnv
from dist_ctr.distributed.optim import combined_optimizer, mark_fused_sparse
from dist_ctr.sparse.init import TableInit, table_init, table_inits


def quiet_torchrec() -> None:
    """TorchRec's planner logs advice meant for its own developers on every plan; keep user output readable.

    Only logger levels change here; Python warnings are never filtered process-wide: the known noisy ones are
    silenced by ``warnings.catch_warnings()`` around the calls that raise them (``DistributedModelParallel`` in
    :func:`parallelize`, DCP save / load in ``train/checkpoint.py``, the no-process-group load in
    ``train/export.py``).
    """
    import logging

    for name in ("torchrec", "torchrec.distributed", "torchrec.distributed.planner", "torch.distributed",
                 "torch.fx._symbolic_trace", "torch.fx"):
        logging.getLogger(name).setLevel(logging.ERROR)


class SingleProcessWrapper(DataParallelWrapper):
    """DMP's data-parallel step at world size 1: the unsharded (dense) modules are moved to the device, not
    wrapped in DDP."""

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        if env.world_size != 1:
            raise ValueError(f"SingleProcessWrapper is for world size 1, got {env.world_size}")
        dmp._dmp_wrapped_module = dmp._dmp_wrapped_module.to(device)


@dataclass
class Parallelized:
    dmp: DistributedModelParallel
    optimizer: CombinedOptimizer
    plan: Any


def _table_specs(module: nn.Module):
    """TableSpecs of every TorchRec table in ``module`` (names as TorchRec sees them)."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    from dist_ctr.schema import TableSpec

    specs, pooled = [], set()
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            for c in m.embedding_bag_configs():
                specs.append(TableSpec(c.name, c.num_embeddings, c.embedding_dim, tuple(c.feature_names)))
                pooled.add(c.name)
        elif isinstance(m, EmbeddingCollection):
            for c in m.embedding_configs():
                specs.append(TableSpec(c.name, c.num_embeddings, c.embedding_dim, tuple(c.feature_names)))
    return specs, pooled


def make_plan(module: nn.Module, env: DistEnv, sharding: dict[str, Any], batch_size: int, optimizer_name: str):
    """Collective sharding plan for ``module`` (see ``distributed/planner.py`` for constraints and memory)."""
    from dist_ctr.distributed.planner import (
        fused_params_for,
        make_planner,
        make_sharders,
        make_topology,
        plan_collective,
    )
    from dist_ctr.distributed.sharding_config import ShardingConfig

    if not sharding and env.world_size == 1:
        sharding = {"default_types": ["table_wise"]}  # one rank: splitting a table only adds lookups
    cfg = ShardingConfig.from_dict(sharding) if not isinstance(sharding, ShardingConfig) else sharding
    tables, pooled = _table_specs(module)
    topology = make_topology(env.world_size, env.device.type, local_world_size=env.local_world_size)
    planner = make_planner(tables, cfg, topology, batch_size=batch_size, optimizer=optimizer_name, pooled=pooled,
                           quiet=True)
    sharders = make_sharders(fused_params_for(optimizer_name))
    plan = plan_collective(planner, module, sharders, dist.GroupMember.WORLD)
    return plan, sharders


# Sparse optimizers whose state and update are per element: a table's columns train independently under them.
ELEMENTWISE_SPARSE = frozenset({"adagrad", "adam", "sgd"})


def init_embeddings(dmp: nn.Module, tables: list, seed: int, inits: dict[str, TableInit] | None = None) -> None:
    """Write deterministic initial weights into every (sharded) table of ``dmp``, identical across shardings.

    ``tables`` are the TableSpecs taken from the module *before* sharding (DMP swaps the modules in place);
    ``inits`` maps table names to their init (:func:`dist_ctr.sparse.init.table_inits`; missing or std ``None``:
    uniform, see :func:`dist_ctr.sparse.init.table_init`).
    """
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    by_name = {t.name: t for t in tables}
    written: set[str] = set()
    sd = dmp.state_dict()
    with torch.no_grad():
        for key, value in sd.items():
            if not key.endswith(".weight"):
                continue
            tname = key[: -len(".weight")].split(".")[-1]
            if tname not in by_name or ("embedding_bags." + tname not in key and "embeddings." + tname not in key):
                continue
            t = by_name[tname]
            init = (inits or {}).get(tname, TableInit(None))
            written.add(tname)
            if isinstance(value, ShardedTensor):
                for shard in value.local_shards():
                    r0, c0 = shard.metadata.shard_offsets
                    nr, nc = shard.metadata.shard_sizes
                    w = table_init(seed, tname, t.num_embeddings, t.embedding_dim, r0, r0 + nr, *init)
                    shard.tensor.copy_(w[:, c0 : c0 + nc])
            elif isinstance(value, DTensor):
                from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

                shape, offset = compute_local_shape_and_global_offset(value.shape, value.device_mesh, value.placements)
                local = value.to_local()
                if local.numel():
                    w = table_init(seed, tname, t.num_embeddings, t.embedding_dim, offset[0], offset[0] + shape[0], *init)
                    local.copy_(w[:, offset[1] : offset[1] + shape[1]])
            else:
                value.copy_(table_init(seed, tname, t.num_embeddings, t.embedding_dim, 0, t.num_embeddings, *init))
    missing = set(by_name) - written
    if missing:
        raise RuntimeError(f"deterministic init found no weights for tables {sorted(missing)}")
    dmp.load_state_dict(sd)


def parallelize(
    task: nn.Module,
    env: DistEnv,
    sparse_optim: SparseOptimConfig,
    dense_optim: DenseOptimConfig,
    sharding: dict[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> Parallelized:
    """Shard ``task`` (a ``CTRTask``) over the process group. Needs ``init_process_group`` first."""
    quiet_torchrec()
    if not dist.is_initialized():
        raise RuntimeError("parallelize needs a process group: call dist_ctr.distributed.init_process_group(env)")
    if sparse_optim.name == "adam" and env.device.type == "cpu":
        raise ValueError("optim.sparse.name: 'adam' has no fused CPU kernel in FBGEMM; use rowwise_adagrad, adagrad or "
                         "sgd on CPU (adam works on CUDA)")
    mark_fused_sparse(task, sparse_optim)
    tables, _ = _table_specs(task)
    inits = table_inits(task)
    carried = sorted(n for n, i in inits.items() if i.tail is not None)
    if carried and sparse_optim.name not in ELEMENTWISE_SPARSE:
        raise ValueError(f"model.config.linear_in_embedding_tables: tables {carried} carry the linear weights in their "
                         f"embedding rows, which trains the same model only under an element-wise sparse optimizer "
                         f"({sorted(ELEMENTWISE_SPARSE)}); optim.sparse.name is {sparse_optim.name!r} (its state is "
                         "per row, so the two parts would share it); set linear_in_embedding_tables: false")
    plan, sharders = make_plan(task, env, sharding or {}, batch_size, sparse_optim.name)
    with warnings.catch_warnings():  # TorchRec passes DDP's deprecated ``broadcast_buffers`` itself
        warnings.filterwarnings("ignore", message=r"`broadcast_buffers` is deprecated", category=FutureWarning)
        dmp = DistributedModelParallel(
            module=task,
            env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
            device=env.device,
            plan=plan,
            sharders=sharders,
            data_parallel_wrapper=SingleProcessWrapper() if env.world_size == 1 else DefaultDataParallelWrapper(),
        )
    init_embeddings(dmp, tables, seed, inits)
    optimizer = combined_optimizer(dmp, dense_optim)
    return Parallelized(dmp=dmp, optimizer=optimizer, plan=plan)
