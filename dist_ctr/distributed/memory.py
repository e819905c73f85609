"""Per-device memory of a sharding plan, a printable report, and a clear message when the tables do not fit.

Notation: ``R`` rows of a shard, ``C`` its columns, ``D`` the table's full embedding dim, ``B`` the per-rank
batch, ``W`` the world size, ``F`` the features reading a table, ``p`` the pooling factor (mean ids per row).

Memory of one shard, in bytes (float32 weights, int64 ids):

- weights: ``R * C * 4``.
- optimizer state (FBGEMM's fused TBE layouts): ``rowwise_adagrad`` one float per row (``R * 4``); ``adagrad``
  one float per value (``R * C * 4``); ``adam`` two (``2 * R * C * 4``); ``sgd`` none.
- activations / IO (the lookup's input ids and output vectors for one batch): taken from TorchRec's planner
  estimate (``ShardingOption.shards[i].storage``) minus weights, optimizer state and cache. Where no planner
  estimate exists, this module's own formula: table-wise / column-wise shards receive every rank's ids and send
  back every rank's outputs, ``B W F p 8 + B W F C 4`` (pooled) or ``B W F p (8 + C 4)`` (sequence); row-wise
  shards see ``1 / S`` of the ids of ``S`` shards and send partial pooled sums for all rows; data-parallel
  replicas see the local batch only (``B F p 8 + B F C 4``).
- cache (``fused_uvm_caching``): ``cache_load_factor * R * C * 4`` in device memory, weights in host memory.

TorchRec keeps ``storage_reserve`` (15 %) of each device's memory, plus room for the dense model and input
batches, out of the plan; the "usable" figures below are what remains for embeddings.

>>> optimizer_state_bytes("rowwise_adagrad", rows=10, cols=8)
40
>>> optimizer_state_bytes("adam", rows=10, cols=8)
640
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

GIB = 1024**3
ID_BYTES = 8  # int64 ids in the KeyedJaggedTensor
FLOAT_BYTES = 4
DEFAULT_CACHE_LOAD_FACTOR = 0.2  # TorchRec's UVM_CACHING_RATIO

OPTIMIZER_STATE = {
    "rowwise_adagrad": "one float per row",
    "adagrad": "one float per value",
    "adam": "two floats per value",
    "sgd": "no state",
}
UVM_KERNELS = ("fused_uvm", "fused_uvm_caching")


def optimizer_state_bytes(optimizer: str, rows: int, cols: int, dtype_bytes: int = FLOAT_BYTES) -> int:
    """Bytes of fused optimizer state for an ``(rows, cols)`` shard (see module docstring)."""
    if optimizer == "rowwise_adagrad":
        return rows * FLOAT_BYTES
    if optimizer == "adagrad":
        return rows * cols * dtype_bytes
    if optimizer == "adam":
        return 2 * rows * cols * dtype_bytes
    if optimizer == "sgd":
        return 0
    raise ValueError(f"optimizer: unknown sparse optimizer {optimizer!r} (known: {', '.join(OPTIMIZER_STATE)})")


def io_bytes_estimate(
    sharding_type: str,
    cols: int,
    batch_size: int,
    world_size: int,
    num_features: int,
    pooling_factor: float,
    pooled: bool,
    num_shards: int = 1,
) -> int:
    """This module's own activation / IO estimate for one shard and one batch (formula in the module docstring).

    >>> io_bytes_estimate("table_wise", cols=4, batch_size=2, world_size=2, num_features=1, pooling_factor=1.0,
    ...                   pooled=True)
    96
    """
    b, w, f, p, c = batch_size, world_size, num_features, pooling_factor, cols
    if sharding_type == "data_parallel":
        ids = b * f * p * ID_BYTES
        out = b * f * c * FLOAT_BYTES * (1 if pooled else p)
    elif sharding_type in ("row_wise", "table_row_wise"):
        ids = b * w * f * p * ID_BYTES / max(1, num_shards)
        out = b * w * f * c * FLOAT_BYTES if pooled else b * w * f * p * c * FLOAT_BYTES / max(1, num_shards)
    else:
        ids = b * w * f * p * ID_BYTES
        out = b * w * f * c * FLOAT_BYTES * (1 if pooled else p)
    return int(math.ceil(ids + out))


@dataclass(frozen=True)
class ShardPlacement:
    """One shard of a table on one rank; byte counts as in the module docstring."""

    rank: int
    row_offset: int
    col_offset: int
    rows: int
    cols: int
    weights: int
    optimizer: int
    io: int
    cache: int
    hbm: int
    ddr: int
    source: str  # "torchrec" (planner storage estimate) or "formula"

    @property
    def total(self) -> int:
        return self.hbm + self.ddr


@dataclass(frozen=True)
class TablePlacement:
    """How one table is sharded: type, kernel, shards."""

    name: str
    rows: int
    dim: int
    pooled: bool
    sharding_type: str
    compute_kernel: str
    shards: tuple[ShardPlacement, ...]

    @property
    def ranks(self) -> list[int]:
        return sorted({s.rank for s in self.shards})

    @property
    def total(self) -> int:
        return sum(s.total for s in self.shards)

    @property
    def weights(self) -> int:
        return sum(s.weights for s in self.shards)


@dataclass(frozen=True)
class RankMemory:
    """Memory of one rank (device), bytes. ``usable`` is what the planner may fill after its reservation."""

    rank: int
    weights: int
    optimizer: int
    io: int
    cache: int
    hbm: int
    ddr: int
    hbm_cap: int
    ddr_cap: int
    hbm_usable: int
    ddr_usable: int


def placements_from_options(
    options: Sequence[Any],
    optimizer: str,
    batch_size: int,
    world_size: int,
    device: str,
    pooling_factors: dict[str, float],
    num_features: dict[str, int],
) -> list[TablePlacement]:
    """TablePlacements from TorchRec's chosen ``ShardingOption``s (one per table)."""
    out: list[TablePlacement] = []
    for so in options:
        rows, dim = int(so.tensor.shape[0]), int(so.tensor.shape[1])
        elem = int(so.tensor.element_size())
        pooled = bool(so.is_pooled) if so.is_pooled is not None else True
        kernel = str(so.compute_kernel)
        caching = kernel == "fused_uvm_caching"
        clf = DEFAULT_CACHE_LOAD_FACTOR
        if caching and so.cache_params is not None and so.cache_params.load_factor:
            clf = float(so.cache_params.load_factor)
        shards: list[ShardPlacement] = []
        for sh in so.shards:
            r, c = int(sh.size[0]), int(sh.size[1])
            w = r * c * elem
            opt = optimizer_state_bytes(optimizer, r, c, elem)
            cache = int(round(clf * w)) if caching else 0
            if sh.storage is not None:
                hbm, ddr = int(sh.storage.hbm), int(sh.storage.ddr)
                io = max(0, hbm + ddr - w - opt - cache)
                source = "torchrec"
            else:
                io = io_bytes_estimate(
                    so.sharding_type, c, batch_size, world_size, num_features.get(so.name, 1),
                    pooling_factors.get(so.name, 1.0), pooled, num_shards=len(so.shards),
                )
                if device == "cpu":
                    hbm, ddr = 0, w + opt + io
                elif kernel in UVM_KERNELS:
                    hbm, ddr = io + cache, w + opt
                else:
                    hbm, ddr = w + opt + io, 0
                source = "formula"
            shards.append(ShardPlacement(int(sh.rank), int(sh.offset[0]), int(sh.offset[1]), r, c, w, opt, io,
                                         cache, hbm, ddr, source))
        out.append(TablePlacement(so.name, rows, dim, pooled, str(so.sharding_type), kernel, tuple(shards)))
    return out


def rank_memory(
    tables: Sequence[TablePlacement],
    world_size: int,
    caps: Sequence[tuple[int, int]],
    usable: Sequence[tuple[int, int]],
) -> list[RankMemory]:
    """Sum shards per rank; ``caps`` / ``usable`` are ``(hbm, ddr)`` bytes per rank."""
    acc = [[0] * 6 for _ in range(world_size)]
    for t in tables:
        for s in t.shards:
            a = acc[s.rank]
            a[0] += s.weights
            a[1] += s.optimizer
            a[2] += s.io
            a[3] += s.cache
            a[4] += s.hbm
            a[5] += s.ddr
    return [RankMemory(r, *acc[r], caps[r][0], caps[r][1], usable[r][0], usable[r][1]) for r in range(world_size)]


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


@dataclass
class PlanReport:
    """Result of an offline plan: the placement and per-device memory, or why no plan fits.

    Attributes:
        fits (bool): a plan was found.
        device (str): "cpu" | "cuda"; ``world_size`` / ``local_world_size`` ranks.
        hbm_cap / ddr_cap (int): bytes per rank.
        tables (list[TablePlacement]): per-table placement (empty when nothing fits).
        ranks (list[RankMemory]): per-rank memory (empty when nothing fits).
        plan: TorchRec ``ShardingPlan`` or ``None``.
        message (str): why nothing fits (empty when it fits).
        seconds (float): planning wall time.
    """

    fits: bool
    device: str
    world_size: int
    local_world_size: int
    hbm_cap: int
    ddr_cap: int
    batch_size: int
    optimizer: str
    storage_reserve: float
    num_tables: int
    total_rows: int
    tables: list[TablePlacement] = field(default_factory=list)
    ranks: list[RankMemory] = field(default_factory=list)
    plan: Any = None
    message: str = ""
    seconds: float = 0.0

    @property
    def total_weights(self) -> int:
        return sum(r.weights for r in self.ranks)

    def header(self) -> str:
        mem = (f"HBM {_gib(self.hbm_cap)} GiB, DDR {_gib(self.ddr_cap)} GiB per rank" if self.device == "cuda"
               else f"DDR {_gib(self.ddr_cap)} GiB per rank")
        return (
            f"Sharding plan: {self.num_tables} tables, {self.total_rows:,} rows, on {self.world_size} x "
            f"{self.device} ({mem}; {self.local_world_size} per host)\n"
            f"batch {self.batch_size} per rank, sparse optimizer {self.optimizer} "
            f"({OPTIMIZER_STATE.get(self.optimizer, '?')}); planned in {self.seconds:.1f} s"
        )

    def render(self) -> str:
        """The printable report: per device (rank) memory and per table placement, or the no-fit message."""
        lines = [self.header()]
        if not self.fits:
            lines += ["", self.message]
            return "\n".join(lines)
        lines.append(
            f"TorchRec keeps {self.storage_reserve:.0%} of each device's memory (plus the dense model and input "
            f"batches) out of the plan; 'usable' is what remains for embeddings."
        )
        lines += ["", "Per device (GiB)"]
        head = f"{'rank':>4}  {'weights':>8}  {'optim':>7}  {'act/IO':>7}  {'cache':>6}  "
        if self.device == "cuda":
            head += f"{'HBM used / usable / cap':>24}  {'DDR used / cap':>16}  tables"
        else:
            head += f"{'DDR used / usable / cap':>24}  tables"
        lines.append(head)
        by_rank: dict[int, list[str]] = {}
        for t in self.tables:
            for r in t.ranks:
                by_rank.setdefault(r, []).append(t.name)
        for r in self.ranks:
            row = f"{r.rank:>4}  {_gib(r.weights):>8}  {_gib(r.optimizer):>7}  {_gib(r.io):>7}  {_gib(r.cache):>6}  "
            if self.device == "cuda":
                used = f"{_gib(r.hbm)} / {_gib(r.hbm_usable)} / {_gib(r.hbm_cap)}"
                row += f"{used:>24}  {_gib(r.ddr) + ' / ' + _gib(r.ddr_cap):>16}  "
            else:
                used = f"{_gib(r.ddr)} / {_gib(r.ddr_usable)} / {_gib(r.ddr_cap)}"
                row += f"{used:>24}  "
            names = by_rank.get(r.rank, [])
            row += ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
            lines.append(row)
        tot = [sum(getattr(r, k) for r in self.ranks) for k in ("weights", "optimizer", "io", "cache", "hbm", "ddr")]
        lines.append(f"{'all':>4}  {_gib(tot[0]):>8}  {_gib(tot[1]):>7}  {_gib(tot[2]):>7}  {_gib(tot[3]):>6}  "
                     + (f"{_gib(tot[4]):>24}  {_gib(tot[5]):>16}" if self.device == "cuda" else f"{_gib(tot[5]):>24}"))
        lines += ["", "Per table"]
        w = max([5] + [len(t.name) for t in self.tables])
        lines.append(f"{'table':<{w}}  {'rows':>13}  {'dim':>4}  {'sharding':<17}  {'kernel':<17}  {'GiB':>7}  ranks")
        for t in self.tables:
            ranks = t.ranks
            rs = ",".join(map(str, ranks)) if len(ranks) <= 8 else f"{ranks[0]}..{ranks[-1]} ({len(ranks)})"
            lines.append(f"{t.name:<{w}}  {t.rows:>13,}  {t.dim:>4}  {t.sharding_type:<17}  {t.compute_kernel:<17}  "
                         f"{_gib(t.total):>7}  {rs}")
        return "\n".join(lines)


# ---- why it does not fit ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableNeed:
    """Estimated bytes of one whole table (weights + optimizer state + table-wise IO), for the no-fit message."""

    name: str
    rows: int
    dim: int
    weights: int
    optimizer: int
    io: int

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.io


def table_needs(
    tables: Iterable[Any],
    pooled: set[str],
    optimizer: str,
    batch_size: int,
    world_size: int,
    pooling_factors: dict[str, float],
    dim: Optional[int] = None,
    row_cap: Optional[int] = None,
) -> list[TableNeed]:
    """Whole-table estimates for ``TableSpec``s, optionally with every dim set to ``dim`` / rows capped."""
    out = []
    for t in tables:
        rows = t.num_embeddings if row_cap is None else min(t.num_embeddings, row_cap)
        d = t.embedding_dim if dim is None else min(t.embedding_dim, dim)
        io = io_bytes_estimate("table_wise", d, batch_size, world_size, max(1, len(t.feature_names)),
                               pooling_factors.get(t.name, 1.0), t.name in pooled)
        out.append(TableNeed(t.name, rows, d, rows * d * FLOAT_BYTES, optimizer_state_bytes(optimizer, rows, d), io))
    return out


def no_fit_message(
    tables: Sequence[Any],
    pooled: set[str],
    optimizer: str,
    batch_size: int,
    world_size: int,
    device: str,
    hbm_cap: int,
    ddr_cap: int,
    storage_reserve: float,
    pooling_factors: dict[str, float],
    kernels: Sequence[str],
    planner_error: str,
) -> str:
    """A clear explanation of a failed plan: total needed vs usable, the largest tables, what to change."""
    cap = hbm_cap if device == "cuda" else ddr_cap
    mem = "HBM" if device == "cuda" else "host memory"
    per_dev = cap * (1.0 - storage_reserve)
    usable = per_dev * world_size
    needs = table_needs(tables, pooled, optimizer, batch_size, world_size, pooling_factors)
    need = sum(n.total for n in needs)
    w = sum(n.weights for n in needs)
    o = sum(n.optimizer for n in needs)
    io = sum(n.io for n in needs)
    lines = []
    if need > usable:
        lines.append(
            f"Does not fit: {len(needs)} tables need about {_gib(need)} GiB (weights {_gib(w)}, {optimizer} state "
            f"{_gib(o)}, activations/IO {_gib(io)}) but {world_size} x {_gib(cap)} GiB {mem} leave "
            f"{_gib(usable)} GiB usable for embeddings ({storage_reserve:.0%} of each device is reserved)."
        )
    else:
        lines.append(
            f"Does not fit: the total fits ({_gib(need)} of {_gib(usable)} GiB usable) but no placement satisfies "
            f"the constraints: each device offers {_gib(per_dev)} GiB usable and tables can only be split by the "
            f"sharding types they allow (row_wise / column_wise split a large table over devices)."
        )
    lines.append("Largest tables:")
    for n in sorted(needs, key=lambda n: -n.total)[:5]:
        lines.append(f"  {n.name}: {n.rows:,} x {n.dim} -> {_gib(n.total)} GiB with optimizer state and IO")
    lines.append("What would fit:")
    more = max(world_size + 1, math.ceil(need / per_dev))
    lines.append(f"  - more devices: at least {more} x {_gib(cap)} GiB (world size {more}).")
    dims = sorted({n.dim for n in needs})
    for d in range(max(dims) - 4, 3, -4):
        if sum(n.total for n in table_needs(tables, pooled, optimizer, batch_size, world_size, pooling_factors,
                                            dim=d)) <= usable * 0.95:
            lines.append(f"  - a smaller embedding_dim: {d} (from {max(dims)}).")
            break
    if device == "cuda" and "fused_uvm_caching" not in kernels:
        host = (w + o) / world_size
        cache = DEFAULT_CACHE_LOAD_FACTOR * w + io
        ok = "fits" if host <= ddr_cap * 0.9 and cache <= usable else "does not fit either"
        lines.append(
            f"  - the UVM caching kernel (sharding.compute_kernels: [fused, fused_uvm_caching]): weights and "
            f"optimizer state in host memory, {_gib(host)} GiB per rank of {_gib(ddr_cap)} GiB DDR, with a device "
            f"cache of {DEFAULT_CACHE_LOAD_FACTOR:.0%} of rows ({_gib(cache)} GiB in all): {ok}."
        )
    biggest = max(n.rows for n in needs)
    lo, hi = 1, biggest
    while lo < hi:  # largest row cap that fits
        mid = (lo + hi + 1) // 2
        tot = sum(n.total for n in table_needs(tables, pooled, optimizer, batch_size, world_size, pooling_factors,
                                               row_cap=mid))
        lo, hi = (mid, hi) if tot <= usable * 0.95 else (lo, mid - 1)
    if lo < biggest and lo > 1:
        cap_rows = int(float(f"{lo:.2g}"))
        lines.append(
            f"  - hashing to fewer rows: at most {cap_rows:,} rows per table (SparseFeat(use_hash=True, "
            f"vocabulary_size={cap_rows})) instead of {biggest:,}."
        )
    if optimizer in ("adagrad", "adam"):
        light = sum(n.total for n in table_needs(tables, pooled, "rowwise_adagrad", batch_size, world_size,
                                                 pooling_factors))
        verdict = "fits" if light <= usable else "still does not fit"
        lines.append(f"  - a lighter optimizer: rowwise_adagrad keeps one float per row ({_gib(light)} GiB in all: "
                     f"{verdict}).")
    first = next((ln.strip() for ln in planner_error.splitlines() if ln.strip()), "")
    if first:
        lines.append(f"TorchRec planner: {first}")
    return "\n".join(lines)
