"""A first-order throughput model for a sharded embedding + data-parallel dense step (``dist-ctr plan --throughput``).

Per training step and per device (rank ``r`` of ``W``, local batch ``B``, global batch ``B_g = W * B``, 4-byte
floats, ``pf_t`` ids per bag of table ``t``):

- pooled all-to-all, forward: every shard on ``r`` (table-, column- or row-wise) produces ``B_g x cols`` pooled
  values (row-wise: partial sums) and sends the ``(W - 1) / W`` of them that belong to other ranks:
  ``sum_shards B_g * cols * 4 * (W - 1) / W``. Backward moves the same bytes (gradients of the pooled outputs).
- id all-to-all: ``B * sum_t pf_t * (8 + 4 / pf_t) * (W - 1) / W`` (int64 ids, int32 lengths) for sharded tables;
  overlapped with compute by the sparse-dist pipeline, so it is reported but not on the step's critical path.
- dense all-reduce (ring): ``2 * P * 4 * (W - 1) / W`` for ``P`` dense parameters, plus every data-parallel table.
- dense compute: ``B * 3 * 2 * P_mm / dense_flops`` (forward ``2 P_mm`` FLOPs per sample for ``P_mm`` matmul
  weights, backward twice that).
- embedding compute: bytes gathered forward ``B_g * pf_t * cols * 4`` per table-/column-wise shard (``B_g * pf_t *
  rows_shard / rows * cols * 4`` row-wise), times ``1 + BWD_MULTIPLIER`` for backward and the fused optimizer
  update, over ``hbm_bw``.
- communication time: the share of peers off the node (``(W - L) / (W - 1)`` for ``L`` devices per node) moves at
  ``inter_bw``, the rest at ``intra_bw``, both links at once.

The step time is ``dense + embedding + pooled a2a (fwd + bwd) + all-reduce``: no overlap of the all-reduce or the
pooled all-to-all with compute is assumed, so the model is a lower bound on a well-pipelined implementation.
TorchRec's ``EmbeddingPerfEstimator`` (``torchrec/distributed/planner/shard_estimators.py``) has the same terms
(input read, lookup, output write over the device's HBM bandwidth; output dist over comms bandwidth; backward as
a multiple of forward, 2x by default); it also adds kernel launch overheads and prefetch costs, omitted here.

Every figure this module prints is a prediction; the device rates below say where they come from.

>>> p = DEVICE_PROFILES["h200"]
>>> round(pooled_a2a_bytes([(4, 128)], batch_per_rank=2, world=2))  # 4 rows of one table-wise shard on a rank
1024
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "BWD_MULTIPLIER",
    "DEVICE_PROFILES",
    "DeviceProfile",
    "REFERENCE_FIGURES",
    "StepCost",
    "allreduce_bytes",
    "bag_sizes",
    "dense_matmul_params",
    "id_a2a_bytes",
    "pooled_a2a_bytes",
    "step_cost",
    "throughput_table",
]

BWD_MULTIPLIER = 2.0  # backward + fused optimizer update, in forward lookups (TorchRec's estimator default: 2)
FLOAT_BYTES = 4


@dataclass(frozen=True)
class DeviceProfile:
    """Achieved rates of one device (bytes/s, FLOP/s), not peak: the model multiplies nothing by an efficiency.

    Args:
        name (str): label.
        dense_flops (float): FLOP/s of the dense forward + backward step (MLPs, cross network) at the benchmark batch.
        hbm_bw (float): bytes/s of embedding gathers and fused updates.
        intra_bw (float): bytes/s per device to peers on its node (NVLink / shared memory).
        inter_bw (float): bytes/s per device to other nodes (InfiniBand / RoCE / Ethernet).
        local_world_size (int): devices per node.
        source (str): where the rates come from.
    """

    name: str
    dense_flops: float
    hbm_bw: float
    intra_bw: float
    inter_bw: float
    local_world_size: int = 8
    source: str = ""


# H200: dense_flops = 1.535M samples/s x 97.4 MFLOP/sample of the DLRM-DCNv2 dense step (torch.compile, bf16) and
# hbm_bw = half of the 4.2 TB/s copy rate, both measured by scripts/gpu_probe.py on one H200 (torch 2.11, CUDA 13);
# NVLink 4 at 450 GB/s per direction x 0.8, 8 x 400 Gb/s InfiniBand per node (50 GB/s per GPU) x 0.8.
# H100: the H200 dense rate (same SM count and clocks), HBM scaled by 3.35 / 4.8 TB/s (spec sheets).
# B200: dense and HBM scaled from the H200 by the spec sheets' dense BF16 (2.25 / 0.99 PFLOP/s) and HBM
# (8 / 4.8 TB/s) ratios, NVLink 5 at 900 GB/s per direction x 0.8: NOT measured.
# A100: dense scaled by 312 / 989 TFLOP/s (BF16 spec), HBM 2.0 TB/s x 0.45, NVLink 3 300 GB/s x 0.8: NOT measured.
# cpu: order of magnitude of the project's 2-core CPU machine (scripts/bench_criteo_1tb.py measured 39-53 GFLOP/s
# dense and 0.4-0.7 GB/s embedding fwd+bwd+update under load); the script predicts from the rates it measures itself.
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    "h200": DeviceProfile("h200", 1.495e14, 2.1e12, 3.6e11, 4.0e10, 8, "scripts/gpu_probe.py on 1x H200 + specs"),
    "h100": DeviceProfile("h100", 1.495e14, 1.47e12, 3.6e11, 4.0e10, 8, "H200 probe scaled by spec sheets"),
    "b200": DeviceProfile("b200", 3.40e14, 3.5e12, 7.2e11, 4.0e10, 8, "H200 probe scaled by spec sheets"),
    "a100": DeviceProfile("a100", 4.7e13, 9.0e11, 2.4e11, 2.5e10, 8, "H200 probe scaled by spec sheets"),
    "cpu": DeviceProfile("cpu", 4.5e10, 6.0e8, 4.0e9, 1.0e9, 1, "bench_criteo_1tb.py rates on 2 CPU cores"),
}

# Published figures the model is checked against (name, profile, world, global batch, samples/s).
REFERENCE_FIGURES: tuple[tuple[str, str, int, int, float], ...] = (
    # MLPerf Training v4.0, 8x H200 (HugeCTR), DLRM-DCNv2: 3.49 min to AUC 0.80309 at 0.75 epoch of 4.2B samples.
    ("MLPerf v4.0 DLRM-DCNv2 8x H200", "h200", 8, 55_296, 0.75 * 4_195_197_692 / (3.49 * 60)),
    # MLPerf Training v5.1, 8x B200: 2.40 min (~2.55M samples/s per GPU).
    ("MLPerf v5.1 DLRM-DCNv2 8x B200", "b200", 8, 55_296, 0.75 * 4_195_197_692 / (2.40 * 60)),
)


def _peer_fraction(world: int) -> float:
    return (world - 1) / world if world > 1 else 0.0


def pooled_a2a_bytes(shards: Iterable[tuple[int, int]], batch_per_rank: int, world: int) -> float:
    """Bytes one rank sends in the forward pooled all-to-all for its ``(rows, cols)`` shards (backward: the same)."""
    b_global = batch_per_rank * world
    return sum(b_global * cols * FLOAT_BYTES for _, cols in shards) * _peer_fraction(world)


def id_a2a_bytes(pooling: Sequence[float], batch_per_rank: int, world: int) -> float:
    """Bytes one rank sends in the id all-to-all: its ``B`` rows' ids (int64) and lengths (int32) per table."""
    return sum(batch_per_rank * (pf * 8 + 4) for pf in pooling) * _peer_fraction(world)


def allreduce_bytes(params: int, world: int) -> float:
    """Bytes one rank sends in a ring all-reduce of ``params`` float32 gradients."""
    return 2.0 * params * FLOAT_BYTES * _peer_fraction(world)


@dataclass(frozen=True)
class StepCost:
    """One step on the busiest rank: bytes sent, seconds per term, global samples/s."""

    world: int
    batch_per_rank: int
    a2a_fwd_bytes: float
    a2a_bwd_bytes: float
    id_bytes: float
    allreduce_bytes: float
    dense_s: float
    embedding_s: float
    a2a_s: float
    allreduce_s: float

    @property
    def step_s(self) -> float:
        return self.dense_s + self.embedding_s + self.a2a_s + self.allreduce_s

    @property
    def samples_per_s(self) -> float:
        return self.world * self.batch_per_rank / self.step_s


def _comm_seconds(nbytes: float, world: int, profile: DeviceProfile) -> float:
    if world <= 1:
        return 0.0
    off = max(0, world - profile.local_world_size) / (world - 1)
    return max(nbytes * (1 - off) / profile.intra_bw, nbytes * off / profile.inter_bw)


def step_cost(tables: Sequence["TablePlacement"], pooling: dict[str, float], batch_per_rank: int, world: int,
              dense_params: int, profile: DeviceProfile) -> StepCost:
    """Cost of one step for a plan's ``tables`` (``TablePlacement``), taken on its busiest rank.

    Args:
        tables: per-table placements (``PlanReport.tables``).
        pooling (dict[str, float]): ids per bag of each table.
        batch_per_rank (int): ``B``.
        world (int): ``W``.
        dense_params (int): matmul weights of the dense part (MLPs, cross network), ``P_mm``.
        profile (DeviceProfile): device rates.

    Returns:
        StepCost: the slowest rank's step.
    """
    b_global = batch_per_rank * world
    a2a = [0.0] * world
    emb = [0.0] * world
    dp_params = 0
    sharded_pf: list[float] = []
    for t in tables:
        pf = float(pooling.get(t.name, 1.0))
        if t.sharding_type == "data_parallel":
            dp_params += t.rows * t.dim
            for r in range(world):
                emb[r] += batch_per_rank * pf * t.dim * FLOAT_BYTES
            continue
        sharded_pf.append(pf)
        for s in t.shards:
            a2a[s.rank] += pooled_a2a_bytes([(s.rows, s.cols)], batch_per_rank, world)
            hit = s.rows / t.rows if "row_wise" in t.sharding_type else 1.0
            emb[s.rank] += b_global * pf * hit * s.cols * FLOAT_BYTES
    busiest = max(range(world), key=lambda r: (emb[r] * (1 + BWD_MULTIPLIER) / profile.hbm_bw
                                              + 2 * _comm_seconds(a2a[r], world, profile)))
    ar = allreduce_bytes(dense_params + dp_params, world)
    return StepCost(
        world=world, batch_per_rank=batch_per_rank, a2a_fwd_bytes=a2a[busiest], a2a_bwd_bytes=a2a[busiest],
        id_bytes=id_a2a_bytes(sharded_pf, batch_per_rank, world), allreduce_bytes=ar,
        dense_s=batch_per_rank * 6.0 * dense_params / profile.dense_flops,
        embedding_s=emb[busiest] * (1 + BWD_MULTIPLIER) / profile.hbm_bw,
        a2a_s=2 * _comm_seconds(a2a[busiest], world, profile), allreduce_s=_comm_seconds(ar, world, profile),
    )


def dense_matmul_params(model: "torch.nn.Module") -> int:
    """Weights of the model's matmuls outside its embedding tables (``dim >= 2`` parameters, no EBC / EC)."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    skip = {id(p) for m in model.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))
            for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip and p.dim() >= 2)


def bag_sizes(schema: "FeatureSchema") -> dict[str, float]:
    """Ids per bag per table: a ``VarLenSparseFeat``'s ``maxlen`` (fixed-size bags), 1 for a ``SparseFeat``."""
    from dist_ctr.schema import VarLenSparseFeat

    out: dict[str, float] = {}
    for f in schema.sparse_features:
        sf = f.sparsefeat if isinstance(f, VarLenSparseFeat) else f
        table = sf.embedding_name or sf.name
        out[table] = out.get(table, 0.0) + (float(f.maxlen) if isinstance(f, VarLenSparseFeat) else 1.0)
    return out


def with_bag_sizes(cfg: "ShardingConfig", pooling: dict[str, float]) -> "ShardingConfig":
    """``cfg`` with each table's pooling factor set from its bag size where the job leaves it unset."""
    from dataclasses import replace

    from dist_ctr.distributed.sharding_config import TableConstraint

    tables = dict(cfg.tables)
    for name, pf in pooling.items():
        key = cfg.resolve_table(name)
        if key is None:
            tables[name] = TableConstraint(pooling_factor=pf)
        elif tables[key].pooling_factor is None:
            tables[key] = replace(tables[key], pooling_factor=pf)
    return replace(cfg, tables=tables)


def throughput_table(schema: "FeatureSchema", dense_params: int, batch_per_rank: int, optimizer: str,
                     profile: DeviceProfile, worlds: Sequence[int] = (8, 16, 64, 128), hbm_gb: float = 141.0,
                     samples: float = 4_195_197_692, sharding: "ShardingConfig | None" = None) -> str:
    """Plan the schema's tables for each world size and render the predicted step costs (text table)."""
    from dist_ctr.distributed.planner import make_topology, plan_offline, schema_tables
    from dist_ctr.distributed.sharding_config import ShardingConfig

    tables, pooled = schema_tables(schema)
    pf = bag_sizes(schema)
    cfg = with_bag_sizes(sharding or ShardingConfig(), pf)
    lines = [f"Throughput model (PREDICTIONS; device {profile.name}: {profile.source})",
             f"dense matmul params {dense_params:,}; local batch {batch_per_rank:,}; ids/row {sum(pf.values()):g}",
             f"{'GPUs':>5} {'a2a fwd+bwd MB':>15} {'ids MB':>7} {'allred MB':>9} {'dense ms':>8} {'emb ms':>7} "
             f"{'a2a ms':>7} {'ar ms':>6} {'samples/s':>12} {'min to 4.2B':>11}"]
    for w in worlds:
        topo = make_topology(w, "cuda", hbm_gb=hbm_gb, local_world_size=min(w, profile.local_world_size))
        rep = plan_offline(tables, cfg, topo, batch_per_rank, optimizer, pooled)
        if not rep.fits:
            lines.append(f"{w:>5} no plan fits: {rep.message.splitlines()[0] if rep.message else ''}")
            continue
        c = step_cost(rep.tables, pf, batch_per_rank, w, dense_params, profile)
        lines.append(f"{w:>5} {(c.a2a_fwd_bytes + c.a2a_bwd_bytes) / 1e6:>15.1f} {c.id_bytes / 1e6:>7.1f} "
                     f"{c.allreduce_bytes / 1e6:>9.1f} {c.dense_s * 1e3:>8.2f} {c.embedding_s * 1e3:>7.2f} "
                     f"{c.a2a_s * 1e3:>7.2f} {c.allreduce_s * 1e3:>6.2f} {c.samples_per_s:>12,.0f} "
                     f"{samples / c.samples_per_s / 60:>11.2f}")
    return "\n".join(lines)
