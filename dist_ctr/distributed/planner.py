"""Sharding planner: topology, constraints, sharders, offline (hypothetical cluster) and collective plans.

Two uses of one planner:

- :func:`plan_offline` plans for a cluster that need not exist (``--world-size 16 --device cuda --hbm-gb 80`` on
  a laptop): the embedding modules are built on ``meta``, the sparse optimizer is marked on their parameters (the
  planner sizes optimizer state from that mark), TorchRec's ``planner.plan`` runs with no process group, and
  the result is a :class:`~dist_ctr.distributed.memory.PlanReport` (per-device memory, per-table placement,
  or a clear message when nothing fits). :func:`run_plan_command` is the ``dist-ctr plan`` command.
- :func:`plan_collective` is for the engine: rank 0 plans and broadcasts, so every rank applies the same plan.

TorchRec facts this relies on: planning for a CUDA topology needs no GPU; on CPU pooled tables have no
``row_wise`` / ``table_row_wise``; the planner reads the optimizer from ``_optimizer_classes`` set by
``apply_optimizer_in_backward`` (mark before planning); fused params of the sharders are merged under the
per-parameter optimizer kwargs.

>>> from dist_ctr.schema import TableSpec
>>> topo = make_topology(2, "cpu")
>>> rep = plan_offline([TableSpec("a", 100, 8, ("a",)), TableSpec("b", 50, 8, ("b",))], ShardingConfig(), topo,
...                    batch_size=32, optimizer="rowwise_adagrad", pooled={"a", "b"})
>>> rep.fits, sorted(t.sharding_type in ("table_wise", "column_wise") for t in rep.tables)
(True, [True, True])
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import torch
from torch import nn

from dist_ctr.distributed.memory import (
    GIB,
    PlanReport,
    no_fit_message,
    placements_from_options,
    rank_memory,
)
from dist_ctr.distributed.sharding_config import ShardingConfig
from dist_ctr.strict import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.types import ShardingPlan

    from dist_ctr.schema import FeatureSchema, TableSpec

OPTIMIZERS = ("rowwise_adagrad", "adagrad", "adam", "sgd")
_PLANNER_LOGGERS = ("torchrec.distributed.planner", "torchrec.distributed.planner.storage_reservations",
                    "torchrec.distributed.planner.planners", "torchrec.distributed.planner.types")
META = torch.device("meta")


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer: unknown sparse optimizer {optimizer!r} (known: {', '.join(OPTIMIZERS)})")


def make_topology(
    world_size: int,
    device: str,
    hbm_gb: Optional[float] = None,
    ddr_gb: Optional[float] = None,
    local_world_size: Optional[int] = None,
) -> "Topology":
    """TorchRec ``Topology`` of ``world_size`` ranks of one device kind (real or hypothetical).

    Args:
        world_size (int): ranks.
        device (str): "cpu" | "cuda". A CUDA topology needs no GPU on this machine.
        hbm_gb (float | None): device memory per rank in GiB (cuda only). Default: the memory of this machine's
            GPU when there is one, else TorchRec's default (32 GiB).
        ddr_gb (float | None): host memory per rank in GiB. Default: TorchRec's (128 GiB).
        local_world_size (int | None): ranks per host. Default: ``world_size`` on CPU, ``min(world_size, 8)``
            on CUDA (8 GPUs per host).
    """
    from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig

    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device: must be 'cpu' or 'cuda', got {device!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size: must be an integer >= 1, got {world_size!r}")
    if hbm_gb is not None and device != "cuda":
        raise ConfigError("hbm_gb: device memory applies to --device cuda only")
    for name, v in (("hbm_gb", hbm_gb), ("ddr_gb", ddr_gb)):
        if v is not None and v <= 0:
            raise ConfigError(f"{name}: must be > 0, got {v}")
    if local_world_size is None:
        local_world_size = world_size if device == "cpu" else min(world_size, 8)
    if local_world_size < 1 or world_size % local_world_size:
        raise ConfigError(f"local_world_size: {local_world_size} must divide world_size {world_size}")
    hbm = None
    if device == "cuda":
        if hbm_gb is not None:
            hbm = int(hbm_gb * GIB)
        elif torch.cuda.is_available():
            hbm = int(torch.cuda.get_device_properties(0).total_memory)
    ddr = int(ddr_gb * GIB) if ddr_gb is not None else None
    return TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size, local_world_size=local_world_size, hbm_cap_bytes=hbm, ddr_cap_bytes=ddr),
        kernel_config=KernelConfig(compute_device=device),
    )


def fused_params_for(optimizer: str, cache_load_factor: Optional[float] = None) -> dict[str, Any]:
    """Fused params for the sharders: the FBGEMM optimizer type (and the default UVM cache load factor).

    The per-parameter marks of ``apply_optimizer_in_backward`` (learning rate, eps) take precedence over these
    when DMP shards; the engine and the planner pass the same dict so the plan matches what DMP builds.

    >>> fused_params_for("rowwise_adagrad")["optimizer"].name
    'EXACT_ROWWISE_ADAGRAD'
    """
    from torchrec.distributed.utils import optimizer_type_to_emb_opt_type

    cls, _ = _optimizer_spec(optimizer)
    out: dict[str, Any] = {"optimizer": optimizer_type_to_emb_opt_type(cls)}
    if cache_load_factor is not None:
        out["cache_load_factor"] = float(cache_load_factor)
    return out


def make_sharders(fused_params: Optional[dict[str, Any]] = None) -> list:
    """Sharders for EmbeddingBagCollection (pooled tables) and EmbeddingCollection (sequence tables)."""
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    fp = dict(fused_params or {})
    return [EmbeddingBagCollectionSharder(fused_params=dict(fp)), EmbeddingCollectionSharder(fused_params=dict(fp))]


def make_planner(
    tables: list["TableSpec"],
    sharding: ShardingConfig,
    topology: "Topology",
    batch_size: int,
    optimizer: str,
    pooled: Iterable[str],
    callbacks: Optional[list[Callable[[list[Any]], list[Any]]]] = None,
    quiet: bool = False,
    storage_reservation: Any = None,
) -> "EmbeddingShardingPlanner":
    """An ``EmbeddingShardingPlanner`` with this job's constraints (checked against ``tables`` first).

    Args:
        tables (list[TableSpec]): every table of the model (TorchRec names).
        sharding (ShardingConfig): constraints; ``batch_size_hint`` there overrides ``batch_size``.
        topology (Topology): from :func:`make_topology`.
        batch_size (int): per-rank batch size.
        optimizer (str): sparse optimizer, one of ``OPTIMIZERS`` (the planner reads it from the parameters'
            ``apply_optimizer_in_backward`` mark; this argument is checked and used for reporting).
        pooled (Iterable[str]): names of bag tables; the others are sequence tables.
        callbacks: TorchRec planner callbacks (receive the chosen ``ShardingOption``s).
        quiet (bool): no TorchRec stats table in the log.
        storage_reservation: a TorchRec ``StorageReservation`` (default: :func:`make_reservation`).
    """
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.stats import NoopEmbeddingStats

    _check_optimizer(optimizer)
    if not isinstance(sharding, ShardingConfig):
        raise TypeError(f"sharding: expected a ShardingConfig, got {type(sharding).__name__}")
    constraints = sharding.to_parameter_constraints(tables, topology.compute_device, set(pooled))
    reservation = storage_reservation if storage_reservation is not None else make_reservation(sharding)
    return EmbeddingShardingPlanner(
        topology=topology,
        batch_size=sharding.batch_size_hint or batch_size,
        constraints=constraints,
        storage_reservation=reservation,
        stats=[NoopEmbeddingStats()] if quiet else None,
        debug=not quiet,
        callbacks=callbacks,
    )


def make_reservation(sharding: ShardingConfig) -> Any:
    """TorchRec's heuristic reservation: ``storage_reserve`` of each device, the dense model, input batches."""
    from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchRec's notice about its heuristic reservation
        return HeuristicalStorageReservation(percentage=sharding.storage_reserve)


def plan_collective(planner: "EmbeddingShardingPlanner", module: nn.Module, sharders: list, pg: Any) -> "ShardingPlan":
    """Plan on rank 0 of ``pg`` and broadcast: every rank gets the same ``ShardingPlan``."""
    return planner.collective_plan(module, sharders, pg)


# ---- modules ---------------------------------------------------------------------------------------------------
def tables_of_module(module: nn.Module) -> tuple[list["TableSpec"], set[str]]:
    """TableSpecs of every TorchRec table in ``module`` and the names of the pooled (bag) ones."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    from dist_ctr.schema import TableSpec

    specs: list[TableSpec] = []
    pooled: set[str] = set()
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            for c in m.embedding_bag_configs():
                specs.append(TableSpec(c.name, c.num_embeddings, c.embedding_dim, tuple(c.feature_names)))
                pooled.add(c.name)
        elif isinstance(m, EmbeddingCollection):
            for c in m.embedding_configs():
                specs.append(TableSpec(c.name, c.num_embeddings, c.embedding_dim, tuple(c.feature_names)))
    return specs, pooled


class _MetaTables(nn.Module):
    """Holder of meta-device EBC (pooled tables) / EC (sequence tables) for offline planning."""

    def __init__(self, tables: list["TableSpec"], pooled: set[str]) -> None:
        super().__init__()
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection, EmbeddingConfig

        def feats(t: "TableSpec") -> list[str]:
            return list(t.feature_names) or [t.name]

        bags = [EmbeddingBagConfig(num_embeddings=t.num_embeddings, embedding_dim=t.embedding_dim, name=t.name,
                                   feature_names=feats(t)) for t in tables if t.name in pooled]
        seqs = [EmbeddingConfig(num_embeddings=t.num_embeddings, embedding_dim=t.embedding_dim, name=t.name,
                                feature_names=feats(t)) for t in tables if t.name not in pooled]
        self.ebc = EmbeddingBagCollection(tables=bags, device=META) if bags else None
        self.ec = EmbeddingCollection(tables=seqs, device=META) if seqs else None


def _optimizer_spec(optimizer: str) -> tuple[type, dict[str, Any]]:
    from dist_ctr.config import SparseOptimConfig
    from dist_ctr.distributed.optim import sparse_optimizer_spec

    _check_optimizer(optimizer)
    return sparse_optimizer_spec(SparseOptimConfig(name=optimizer))  # type: ignore[arg-type]


def _mark_optimizer(module: nn.Module, optimizer: str) -> None:
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    cls, kwargs = _optimizer_spec(optimizer)
    params = list(module.parameters())
    if params:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            apply_optimizer_in_backward(cls, params, kwargs)


# ---- offline plan ----------------------------------------------------------------------------------------------
def plan_offline(
    tables: list["TableSpec"],
    sharding: ShardingConfig,
    topology: "Topology",
    batch_size: int,
    optimizer: str,
    pooled: Iterable[str],
) -> PlanReport:
    """Plan ``tables`` for ``topology`` with no process group (the cluster may be hypothetical).

    Returns a :class:`PlanReport`; when TorchRec finds no plan (``PlannerError``) the report has ``fits=False``
    and a message naming the total needed vs usable, the largest tables and what would fit.
    Bad constraints (unknown table, a type the device lacks) raise ``ConfigError``.
    """
    from torchrec.distributed.planner.types import PlannerError

    pooled = set(pooled)
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ConfigError(f"tables: duplicate table names in {names}")
    chosen: list[Any] = []

    def capture(options: list[Any]) -> list[Any]:
        chosen[:] = options
        return options

    reservation = make_reservation(sharding)
    planner = make_planner(tables, sharding, topology, batch_size, optimizer, pooled, callbacks=[capture], quiet=True,
                           storage_reservation=reservation)
    module = _MetaTables(tables, pooled)
    _mark_optimizer(module, optimizer)
    fused = fused_params_for(optimizer)
    sharders = make_sharders(fused)
    batch = sharding.batch_size_hint or batch_size
    device = topology.compute_device
    world = topology.world_size
    dev0 = topology.devices[0].storage
    pfs = {t.name: _pooling_factor(sharding, t.name) for t in tables}
    report = PlanReport(
        fits=False, device=device, world_size=world, local_world_size=topology.local_world_size,
        hbm_cap=int(dev0.hbm), ddr_cap=int(dev0.ddr), batch_size=batch, optimizer=optimizer,
        storage_reserve=sharding.storage_reserve, num_tables=len(tables),
        total_rows=sum(t.num_embeddings for t in tables),
    )
    start = time.perf_counter()
    quiet_loggers = [logging.getLogger(n) for n in _PLANNER_LOGGERS]
    levels = [lg.level for lg in quiet_loggers]
    try:
        for lg in quiet_loggers:
            lg.setLevel(logging.ERROR)
        plan = planner.plan(module, sharders)
    except PlannerError as e:
        report.seconds = time.perf_counter() - start
        kernels = sorted({k for t in tables for k in sharding.allowed(t.name, t.name in pooled, device)[1]})
        report.message = no_fit_message(
            tables, pooled, optimizer, batch, world, device, report.hbm_cap, report.ddr_cap,
            sharding.storage_reserve, pfs, kernels, str(e),
        )
        return report
    finally:
        for lg, lv in zip(quiet_loggers, levels):
            lg.setLevel(lv)
    report.seconds = time.perf_counter() - start
    report.fits = True
    report.plan = plan
    nfeat = {t.name: max(1, len(t.feature_names)) for t in tables}
    report.tables = placements_from_options(chosen, optimizer, batch, world, device, pfs, nfeat)
    reserved = getattr(reservation, "last_reserved_topology", None)
    caps = [(int(d.storage.hbm), int(d.storage.ddr)) for d in topology.devices]
    usable = [(int(d.storage.hbm), int(d.storage.ddr)) for d in reserved.devices] if reserved is not None else caps
    report.ranks = rank_memory(report.tables, world, caps, usable)
    return report


def _pooling_factor(sharding: ShardingConfig, table: str) -> float:
    key = sharding.resolve_table(table)
    if key is not None and sharding.tables[key].pooling_factor is not None:
        return float(sharding.tables[key].pooling_factor)  # type: ignore[arg-type]
    return sharding.pooling_factor_hint


def schema_tables(schema: "FeatureSchema") -> tuple[list["TableSpec"], set[str]]:
    """Tables of a schema as the sparse arch builds them (bags vs sequence tables), TorchRec names.

    Only the main embedding tables: a model's linear part (``linear__*``, dim 4) adds ``4 / D`` of their memory.
    """
    from dist_ctr.sparse.arch import SparseArch

    return tables_of_module(SparseArch(schema))


def run_plan_command(
    schema: "FeatureSchema",
    world_size: int,
    device: str,
    hbm_gb: Optional[float],
    ddr_gb: Optional[float],
    batch_size: int,
    optimizer: str,
    sharding: Optional[ShardingConfig],
    local_world_size: Optional[int] = None,
) -> tuple[int, str]:
    """``dist-ctr plan``: (exit code, text). 0 a plan fits; 1 nothing fits (the text says why); 2 bad input."""
    try:
        cfg = sharding if sharding is not None else ShardingConfig()
        topo = make_topology(world_size, device, hbm_gb=hbm_gb, ddr_gb=ddr_gb, local_world_size=local_world_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
        tables, pooled = schema_tables(schema)
        if not tables:
            return 2, "error: the schema has no sparse features, so there is nothing to shard"
        report = plan_offline(tables, cfg, topo, batch_size, optimizer, pooled)
    except ConfigError as e:
        return 2, f"error: {e}"
    return (0 if report.fits else 1), report.render()
