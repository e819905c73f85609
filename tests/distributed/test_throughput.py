"""The throughput model: byte counts against hand formulas, scaling sanity, and the CLI table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dist_ctr.distributed.memory import ShardPlacement, TablePlacement
from dist_ctr.distributed.throughput import (
    BWD_MULTIPLIER,
    DeviceProfile,
    allreduce_bytes,
    id_a2a_bytes,
    step_cost,
)

PROF = DeviceProfile("test", dense_flops=1e12, hbm_bw=1e11, intra_bw=1e10, inter_bw=1e9, local_world_size=2)


def _shard(rank: int, rows: int, cols: int, row_off: int = 0, col_off: int = 0) -> ShardPlacement:
    return ShardPlacement(rank=rank, row_offset=row_off, col_offset=col_off, rows=rows, cols=cols, weights=0,
                          optimizer=0, io=0, cache=0, hbm=0, ddr=0, source="formula")


def _table(name: str, rows: int, dim: int, kind: str, shards: list[ShardPlacement]) -> TablePlacement:
    return TablePlacement(name=name, rows=rows, dim=dim, pooled=True, sharding_type=kind, compute_kernel="fused",
                          shards=tuple(shards))


def test_table_wise_bytes_match_hand_formula() -> None:
    # W=2, B=3: table a (dim 8) on rank 0, table b (dim 4) on rank 1; rank 0 is the busiest.
    tables = [_table("a", 10, 8, "table_wise", [_shard(0, 10, 8)]), _table("b", 5, 4, "table_wise", [_shard(1, 5, 4)])]
    c = step_cost(tables, {"a": 2.0, "b": 1.0}, batch_per_rank=3, world=2, dense_params=100, profile=PROF)
    assert c.a2a_fwd_bytes == 6 * 8 * 4 * 0.5  # B_g * cols * 4 * (W-1)/W
    assert c.a2a_bwd_bytes == c.a2a_fwd_bytes
    assert c.id_bytes == 3 * ((2 * 8 + 4) + (1 * 8 + 4)) * 0.5
    assert c.allreduce_bytes == 2 * 100 * 4 * 0.5
    assert c.dense_s == pytest.approx(3 * 6 * 100 / 1e12)
    assert c.embedding_s == pytest.approx(6 * 2 * 8 * 4 * (1 + BWD_MULTIPLIER) / 1e11)
    assert c.a2a_s == pytest.approx(2 * 96 / 1e10)  # both ranks on one node: all intra
    assert c.samples_per_s == pytest.approx(6 / c.step_s)


def test_row_wise_and_column_wise_shards() -> None:
    # One table of 8 rows x dim 8 over W=2: row-wise = 2 full-dim shards, column-wise = 2 half-dim shards.
    rw = [_table("t", 8, 8, "row_wise", [_shard(0, 4, 8), _shard(1, 4, 8, row_off=4)])]
    cw = [_table("t", 8, 8, "column_wise", [_shard(0, 8, 4), _shard(1, 8, 4, col_off=4)])]
    c_rw = step_cost(rw, {"t": 4.0}, 2, 2, 0, PROF)
    c_cw = step_cost(cw, {"t": 4.0}, 2, 2, 0, PROF)
    assert c_rw.a2a_fwd_bytes == 4 * 8 * 4 * 0.5  # partial sums of every sample, full dim
    assert c_cw.a2a_fwd_bytes == 4 * 4 * 4 * 0.5  # every sample, half the columns
    # Row-wise: each shard is hit by its share of the ids (rows 4 of 8).
    assert c_rw.embedding_s == pytest.approx(4 * 4 * 0.5 * 8 * 4 * (1 + BWD_MULTIPLIER) / 1e11)
    assert c_cw.embedding_s == pytest.approx(4 * 4 * 4 * 4 * (1 + BWD_MULTIPLIER) / 1e11)


def test_data_parallel_table_is_all_reduced_not_sent() -> None:
    dp = [_table("t", 6, 4, "data_parallel", [_shard(0, 6, 4), _shard(1, 6, 4)])]
    c = step_cost(dp, {"t": 1.0}, 2, 2, 10, PROF)
    assert c.a2a_fwd_bytes == 0 and c.id_bytes == 0
    assert c.allreduce_bytes == allreduce_bytes(10 + 24, 2)


def test_scaling_sanity() -> None:
    assert allreduce_bytes(1000, 1) == 0 and id_a2a_bytes([3.0], 5, 1) == 0
    assert allreduce_bytes(1000, 8) < allreduce_bytes(1000, 64) < 2 * 1000 * 4
    t8 = [_table("t", 64, 8, "table_wise", [_shard(0, 64, 8)])]
    # More ranks: more global rows reach the table owner, so its step is longer; off-node traffic is slower.
    small = step_cost(t8, {"t": 1.0}, 16, 2, 1000, PROF)
    big = step_cost(t8, {"t": 1.0}, 16, 4, 1000, PROF)
    assert big.embedding_s > small.embedding_s and big.a2a_s > small.a2a_s
    assert big.dense_s == small.dense_s  # same local batch
    fast = DeviceProfile("fast", 1e13, 1e12, 1e11, 1e10, 2)
    assert step_cost(t8, {"t": 1.0}, 16, 4, 1000, fast).samples_per_s > big.samples_per_s


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from dist_ctr.cli import main

    job = Path(__file__).resolve().parents[2] / "jobs" / "criteo_1tb_dlrm_dcnv2.yaml"
    assert main(["plan", str(job), "--world-size", "8", "--throughput"]) == 0
    out = capsys.readouterr().out
    rows = {int(m.group(1)): float(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d,]+)",
                                 out, re.M)}
    assert sorted(rows) == [8, 16, 64, 128]
    assert all(v > 0 for v in rows.values())
    assert "MLPerf v4.0" in out and "ratio" in out and "PREDICTIONS" in out


def test_unknown_profile_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    from dist_ctr.cli import main

    job = Path(__file__).resolve().parents[2] / "jobs" / "criteo_1tb_dlrm_dcnv2.yaml"
    assert main(["plan", str(job), "--world-size", "8", "--throughput", "--profile", "tpu"]) == 2
    assert "tpu" in capsys.readouterr().err
