"""Typed sharding constraints of a job (the ``distributed.sharding`` section) and their TorchRec form.

A job says which sharding types and compute kernels each table may use; the planner chooses among them.
Unknown keys and unknown table names are errors that name the key / table, never silently ignored.

Sharding types (TorchRec's names): ``table_wise`` (a table on one rank), ``column_wise`` (columns split over
ranks), ``table_column_wise``, ``row_wise`` (rows split over all ranks), ``table_row_wise`` (rows split over the
ranks of one host), ``data_parallel`` (replicated, updated through DDP; its kernel is ``dense``).
Compute kernels: ``fused`` (FBGEMM TBE, weights in device memory, optimizer fused in backward), ``fused_uvm``
(weights in host memory reached through UVM), ``fused_uvm_caching`` (host weights + a device cache holding
``cache_load_factor`` of the rows), ``dense`` (plain autograd; data-parallel tables).

Device support is taken from TorchRec's sharders: on CPU, pooled tables (EmbeddingBagCollection) have no
``row_wise`` / ``table_row_wise`` and no UVM kernels. ``default_types`` are filtered to what the device offers
(one job config plans on CPU and on GPU; on CPU the row-wise types are dropped from the defaults for sequence
tables too); a table whose *own* list leaves nothing on the device is an error naming it.

>>> cfg = ShardingConfig.from_dict(
...     {"default_types": ["table_wise"], "tables": {"C1": {"sharding_types": ["column_wise"]}}}
... )
>>> cfg.tables["C1"].sharding_types
('column_wise',)
>>> ShardingConfig.from_dict({"tables": {"C1": {"sharding_type": ["column_wise"]}}})
Traceback (most recent call last):
...
dist_ctr.strict.ConfigError: sharding.tables.C1: unknown key 'sharding_type' (allowed: sharding_types, ...)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Optional

from dist_ctr.strict import ConfigError, from_dict

if TYPE_CHECKING:  # pragma: no cover
    from torchrec.distributed.planner import ParameterConstraints

    from dist_ctr.schema import TableSpec

ShardingTypeName = Literal[
    "table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "data_parallel"
]
KernelName = Literal["fused", "dense", "fused_uvm", "fused_uvm_caching"]

SHARDING_TYPES: tuple[str, ...] = (
    "table_wise", "column_wise", "table_column_wise", "row_wise", "table_row_wise", "data_parallel"
)
COMPUTE_KERNELS: tuple[str, ...] = ("fused", "dense", "fused_uvm", "fused_uvm_caching")
DEFAULT_TYPES: tuple[str, ...] = ("table_wise", "column_wise", "row_wise", "table_row_wise")
# Offered by TorchRec's CPU sequence-table sharder but not verified to train on CPU here: used on CPU only when a
# table names them itself, never through ``default_types``.
CPU_UNVERIFIED: frozenset[str] = frozenset({"row_wise", "table_row_wise"})


@dataclass(frozen=True)
class TableConstraint:
    """Constraints of one table; ``None`` fields fall back to the :class:`ShardingConfig` defaults.

    Args:
        sharding_types (tuple[str, ...] | None): sharding types the planner may choose for this table.
        compute_kernels (tuple[str, ...] | None): compute kernels it may choose.
        cache_load_factor (float | None): fraction of rows cached in device memory (``fused_uvm_caching`` only).
        pooling_factor (float | None): mean ids per row of each feature of the table (sizes the I/O buffers).
        min_partition (int | None): smallest column block of ``column_wise`` shards (a multiple of 4).
    """

    sharding_types: Optional[tuple[ShardingTypeName, ...]] = None
    compute_kernels: Optional[tuple[KernelName, ...]] = None
    cache_load_factor: Optional[float] = None
    pooling_factor: Optional[float] = None
    min_partition: Optional[int] = None

    def __post_init__(self) -> None:
        if self.sharding_types is not None and not self.sharding_types:
            raise ConfigError("sharding_types: give at least one sharding type (or leave it out)")
        if self.compute_kernels is not None and not self.compute_kernels:
            raise ConfigError("compute_kernels: give at least one compute kernel (or leave it out)")
        if self.cache_load_factor is not None and not 0.0 < self.cache_load_factor <= 1.0:
            raise ConfigError(f"cache_load_factor: must lie in (0, 1], got {self.cache_load_factor}")
        if self.pooling_factor is not None and self.pooling_factor <= 0:
            raise ConfigError(f"pooling_factor: must be > 0, got {self.pooling_factor}")
        if self.min_partition is not None and (self.min_partition < 4 or self.min_partition % 4):
            raise ConfigError(f"min_partition: must be a multiple of 4 (>= 4), got {self.min_partition}")


@dataclass(frozen=True)
class ShardingConfig:
    """The ``distributed.sharding`` section of a job.

    Args:
        default_types (tuple[str, ...]): sharding types allowed for every table without its own list.
        compute_kernels (tuple[str, ...]): compute kernels allowed for every table without its own list.
            ``fused`` alone (the default) keeps every table in device memory, so a plan that does not fit says so
            instead of silently moving tables to host memory.
        tables (dict[str, TableConstraint]): per-table constraints, keyed by table name (the schema's
            ``embedding_name``; it also applies to prefixed copies such as the linear part's ``linear__<name>``).
        batch_size_hint (int | None): per-rank batch size to plan for (default: the job's batch size).
        pooling_factor_hint (float): mean ids per row of a feature, for tables without their own.
        storage_reserve (float): fraction of each device's memory kept back for the dense model, input batches
            and buffers (TorchRec's heuristic reservation; 0.15 is TorchRec's default).
    """

    default_types: tuple[ShardingTypeName, ...] = DEFAULT_TYPES  # type: ignore[assignment]
    compute_kernels: tuple[KernelName, ...] = ("fused",)
    tables: dict[str, TableConstraint] = field(default_factory=dict)
    batch_size_hint: Optional[int] = None
    pooling_factor_hint: float = 1.0
    storage_reserve: float = 0.15

    def __post_init__(self) -> None:
        if not self.default_types:
            raise ConfigError("sharding.default_types: give at least one sharding type")
        if not self.compute_kernels:
            raise ConfigError("sharding.compute_kernels: give at least one compute kernel")
        if self.batch_size_hint is not None and self.batch_size_hint < 1:
            raise ConfigError(f"sharding.batch_size_hint: must be >= 1, got {self.batch_size_hint}")
        if self.pooling_factor_hint <= 0:
            raise ConfigError(f"sharding.pooling_factor_hint: must be > 0, got {self.pooling_factor_hint}")
        if not 0.0 <= self.storage_reserve < 1.0:
            raise ConfigError(f"sharding.storage_reserve: must lie in [0, 1), got {self.storage_reserve}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ShardingConfig":
        """Strict construction from the YAML mapping (``None`` / ``{}`` gives the defaults)."""
        if isinstance(data, ShardingConfig):
            return data
        return from_dict(cls, data or {}, "sharding")

    # ---- resolution ----------------------------------------------------------------------------------------
    def resolve_table(self, table: str) -> Optional[str]:
        """Key of ``tables`` that applies to TorchRec table ``table`` (exact name, else a ``<prefix>__<key>``)."""
        if table in self.tables:
            return table
        for key in self.tables:
            if table.endswith("__" + key):
                return key
        return None

    def check_table_names(self, names: Iterable[str]) -> None:
        """Every key of ``tables`` must name a table (exactly or as the suffix of a prefixed copy)."""
        names = list(names)
        for key in self.tables:
            if key not in names and not any(n.endswith("__" + key) for n in names):
                raise ConfigError(f"sharding.tables: unknown table {key!r} (tables: {', '.join(names)})")

    def allowed(self, table: str, pooled: bool, device: str) -> tuple[list[str], list[str]]:
        """(sharding types, compute kernels) allowed for ``table`` on ``device``, after device filtering.

        ``data_parallel`` needs the ``dense`` kernel, which is added when that type is allowed.
        """
        key = self.resolve_table(table)
        tc = self.tables[key] if key is not None else TableConstraint()
        own_types = tc.sharding_types is not None
        types = list(tc.sharding_types if own_types else self.default_types)  # type: ignore[arg-type]
        kernels = list(tc.compute_kernels if tc.compute_kernels is not None else self.compute_kernels)
        if "data_parallel" in types and "dense" not in kernels:
            kernels.append("dense")
        where = f"sharding.tables.{key}" if key is not None else "sharding"
        offered = _device_offer(device, pooled)
        if device == "cpu" and not own_types:
            types = [t for t in types if t not in CPU_UNVERIFIED]
        ok_types = [t for t in types if t in offered]
        if not ok_types:
            kind = "pooled (EmbeddingBagCollection)" if pooled else "sequence (EmbeddingCollection)"
            src = f"{where}.sharding_types" if own_types else "sharding.default_types"
            raise ConfigError(
                f"{src}: table {table!r}: none of {types} is available on {device} for {kind} tables "
                f"(available: {', '.join(offered)})"
            )
        ok_kernels = [k for k in kernels if any(k in offered[t] for t in ok_types)]
        if not ok_kernels:
            src = f"{where}.compute_kernels" if tc.compute_kernels is not None else "sharding.compute_kernels"
            avail = sorted({k for t in ok_types for k in offered[t]} & set(COMPUTE_KERNELS))
            raise ConfigError(
                f"{src}: table {table!r}: none of {kernels} is available on {device} for sharding types "
                f"{ok_types} (available: {', '.join(avail)})"
            )
        if tc.cache_load_factor is not None and "fused_uvm_caching" not in ok_kernels:
            raise ConfigError(
                f"{where}.cache_load_factor: table {table!r}: needs 'fused_uvm_caching' among its compute kernels "
                f"(allowed here: {ok_kernels})"
            )
        return ok_types, ok_kernels

    def to_parameter_constraints(
        self, tables: list["TableSpec"], device: str, pooled: Iterable[str]
    ) -> dict[str, "ParameterConstraints"]:
        """TorchRec ``ParameterConstraints`` per table name (checks table names first).

        Args:
            tables (list[TableSpec]): every table of the model, TorchRec names.
            device (str): "cpu" | "cuda", the planned compute device.
            pooled (Iterable[str]): names of the tables that are bags (EmbeddingBagCollection); the others are
                sequence tables (EmbeddingCollection).
        """
        from torchrec.distributed.planner import ParameterConstraints
        from torchrec.distributed.types import CacheParams

        names = [t.name for t in tables]
        self.check_table_names(names)
        pooled = set(pooled)
        out: dict[str, ParameterConstraints] = {}
        for t in tables:
            types, kernels = self.allowed(t.name, t.name in pooled, device)
            key = self.resolve_table(t.name)
            tc = self.tables[key] if key is not None else TableConstraint()
            pf = tc.pooling_factor if tc.pooling_factor is not None else self.pooling_factor_hint
            out[t.name] = ParameterConstraints(
                sharding_types=types,
                compute_kernels=kernels,
                min_partition=tc.min_partition,
                pooling_factors=[pf] * max(1, len(t.feature_names)),
                cache_params=CacheParams(load_factor=tc.cache_load_factor) if tc.cache_load_factor else None,
            )
        return out


@functools.lru_cache(maxsize=None)
def _device_offer_cached(device: str, pooled: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    sharder = EmbeddingBagCollectionSharder() if pooled else EmbeddingCollectionSharder()
    return tuple(
        (st, tuple(sharder.compute_kernels(st, device)))
        for st in sharder.sharding_types(device)
        if st in SHARDING_TYPES
    )


def _device_offer(device: str, pooled: bool) -> dict[str, tuple[str, ...]]:
    """Sharding type -> compute kernels that TorchRec's sharder offers on ``device`` (pooled: EBC, else EC)."""
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device: must be 'cpu' or 'cuda', got {device!r}")
    return dict(_device_offer_cached(device, pooled))
