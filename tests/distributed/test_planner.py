"""Sharding planner: Criteo 1TB on hypothetical GPU clusters, CPU plans, constraints, memory formulas."""

from __future__ import annotations

import time

import pytest

from dist_ctr.distributed.memory import GIB, io_bytes_estimate, optimizer_state_bytes
from dist_ctr.distributed.planner import (
    fused_params_for,
    make_planner,
    make_sharders,
    make_topology,
    plan_collective,
    plan_offline,
    run_plan_command,
    schema_tables,
    tables_of_module,
)
from dist_ctr.distributed.sharding_config import ShardingConfig
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, TableSpec, VarLenSparseFeat
from dist_ctr.strict import ConfigError

# MLPerf DLRM / TorchRec DLRM example: Criteo 1TB sparse cardinalities with max_ind_range 40M.
CRITEO_1TB_ROWS = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)


def criteo_1tb_schema(embedding_dim: int = 128) -> FeatureSchema:
    """The data helper's preset when present, else the 26 MLPerf tables + 13 dense features built here."""
    try:
        from dist_ctr.data.presets import criteo_1tb_schema as preset
    except ImportError:
        preset = None
    if preset is not None:
        return preset(embedding_dim=embedding_dim)
    sparse = tuple(SparseFeat(f"C{i + 1}", n, embedding_dim) for i, n in enumerate(CRITEO_1TB_ROWS))
    return FeatureSchema(sparse + tuple(DenseFeat(f"I{i + 1}") for i in range(13)))


def small_schema() -> FeatureSchema:
    return FeatureSchema((
        SparseFeat("u", 1000, 16),
        SparseFeat("i", 500, 16),
        VarLenSparseFeat(SparseFeat("hist", 500, 16, embedding_name="i"), maxlen=5, combiner="mean"),
        VarLenSparseFeat(SparseFeat("tags", 64, 16), maxlen=4, combiner="max"),  # max -> sequence table (EC)
        DenseFeat("x"),
    ))


# ---- Criteo 1TB, dim 128, row-wise Adagrad --------------------------------------------------------------------
def test_criteo_1tb_fits_8x80gb():
    schema = criteo_1tb_schema(128)
    tables, pooled = schema_tables(schema)
    assert len(tables) == 26
    topo = make_topology(8, "cuda", hbm_gb=80)
    t0 = time.perf_counter()
    rep = plan_offline(tables, ShardingConfig(), topo, batch_size=8192, optimizer="rowwise_adagrad", pooled=pooled)
    seconds = time.perf_counter() - t0
    assert rep.fits, rep.message
    assert seconds < 30
    # every table placed, its shards tiling exactly rows x dim
    assert sorted(t.name for t in rep.tables) == sorted(t.name for t in tables)
    spec = {t.name: t for t in tables}
    for t in rep.tables:
        assert (t.rows, t.dim) == (spec[t.name].num_embeddings, spec[t.name].embedding_dim)
        assert sum(s.rows * s.cols for s in t.shards) == t.rows * t.dim
        assert t.compute_kernel == "fused"
    # weights and row-wise Adagrad state against the formulas; memory per rank within the device
    assert rep.total_weights == sum(t.num_embeddings * 128 * 4 for t in tables)
    assert sum(r.optimizer for r in rep.ranks) == sum(t.num_embeddings for t in tables) * 4
    assert len(rep.ranks) == 8
    for r in rep.ranks:
        assert r.hbm <= r.hbm_usable <= 80 * GIB
        assert r.ddr == 0  # fused kernel: nothing in host memory
    # TorchRec's IO estimate of a table-wise shard equals this module's own formula
    tw = [t for t in rep.tables if t.sharding_type == "table_wise"]
    assert tw
    for t in tw:
        assert t.shards[0].io == io_bytes_estimate("table_wise", t.dim, 8192, 8, 1, 1.0, pooled=True)
    text = rep.render()
    assert all(t.name in text for t in tables) and "Per device" in text and "Per table" in text


def test_criteo_1tb_plan_command_8x80gb_under_30s():
    t0 = time.perf_counter()
    rc, text = run_plan_command(criteo_1tb_schema(128), 8, "cuda", 80, None, 8192, "rowwise_adagrad", None)
    assert time.perf_counter() - t0 < 30
    assert rc == 0, text
    assert "8 x cuda" in text and "rowwise_adagrad" in text


def test_criteo_1tb_does_not_fit_one_80gb_device():
    schema = criteo_1tb_schema(128)
    rows = sum(t.num_embeddings for t in schema.tables())
    rc, text = run_plan_command(schema, 1, "cuda", 80, None, 8192, "rowwise_adagrad", None)
    assert rc == 1
    assert text.splitlines()[3].startswith("Does not fit")
    assert f"weights {rows * 128 * 4 / GIB:.2f}" in text  # total needed, from the formula
    assert "leave 68.00 GiB usable" in text  # 80 GiB less TorchRec's 15 % reservation
    biggest = max(schema.tables(), key=lambda t: t.num_embeddings).name
    assert f"  {biggest}: " in text  # the largest tables are named
    assert "more devices: at least 2 x 80.00 GiB" in text
    assert "fused_uvm_caching" in text and "use_hash=True" in text and "embedding_dim" in text
    assert "Traceback" not in text


def test_criteo_1tb_on_2x80gb_fits_with_rowwise_adagrad_but_not_with_adam():
    # Row-wise Adagrad: ~97.4 GiB of weights + 0.8 GiB of state fit 2 x 68 GiB usable.
    # Adam keeps two floats per value: ~292 GiB do not.
    schema = criteo_1tb_schema(128)
    rc, text = run_plan_command(schema, 2, "cuda", 80, None, 8192, "rowwise_adagrad", None)
    assert rc == 0, text
    rc, text = run_plan_command(schema, 2, "cuda", 80, None, 8192, "adam", None)
    assert rc == 1
    assert "Does not fit" in text and "adam state" in text
    assert "a lighter optimizer: rowwise_adagrad" in text and "fits)." in text


def test_criteo_1tb_on_one_80gb_device_fits_with_uvm_caching():
    # The no-fit message suggests the UVM caching kernel; allowing it, the planner moves large tables to host memory.
    cfg = ShardingConfig.from_dict({"compute_kernels": ["fused", "fused_uvm_caching"]})
    tables, pooled = schema_tables(criteo_1tb_schema(128))
    rep = plan_offline(tables, cfg, make_topology(1, "cuda", hbm_gb=80), 8192, "rowwise_adagrad", pooled)
    assert rep.fits, rep.message
    cached = [t for t in rep.tables if t.compute_kernel == "fused_uvm_caching"]
    assert cached and all(t.rows >= 1_000_000 for t in cached)
    (r,) = rep.ranks
    assert r.ddr >= sum(t.weights for t in cached)  # cached tables' weights live in host memory
    assert r.cache == sum(round(0.2 * s.weights) for t in cached for s in t.shards)  # 20 % of rows on the device
    assert r.hbm <= r.hbm_usable and r.ddr <= r.ddr_cap


# ---- CPU plans and constraints --------------------------------------------------------------------------------
def test_cpu_two_ranks_plans_table_and_column_wise_only():
    schema = small_schema()
    tables, pooled = schema_tables(schema)
    assert pooled == {"u", "i"} and {t.name for t in tables} == {"u", "i", "tags"}
    rep = plan_offline(tables, ShardingConfig(), make_topology(2, "cpu"), 64, "rowwise_adagrad", pooled)
    assert rep.fits, rep.message
    assert {t.sharding_type for t in rep.tables} <= {"table_wise", "column_wise"}
    assert {t.compute_kernel for t in rep.tables} == {"fused"}
    assert all(r.hbm == 0 for r in rep.ranks)  # CPU: everything in host memory
    assert rep.total_weights == sum(t.num_embeddings * t.embedding_dim * 4 for t in tables)


def test_row_wise_only_on_cpu_is_an_error_naming_the_table():
    tables, pooled = schema_tables(small_schema())
    cfg = ShardingConfig.from_dict({"tables": {"u": {"sharding_types": ["row_wise"]}}})
    with pytest.raises(ConfigError, match=r"sharding\.tables\.u\.sharding_types: table 'u'.*cpu"):
        plan_offline(tables, cfg, make_topology(2, "cpu"), 64, "rowwise_adagrad", pooled)


def test_forced_column_wise_is_honoured():
    tables = [TableSpec("a", 1000, 16, ("a",)), TableSpec("b", 800, 16, ("b",))]
    cfg = ShardingConfig.from_dict({
        "default_types": ["table_wise"],
        "tables": {"a": {"sharding_types": ["column_wise"], "min_partition": 8}},
    })
    rep = plan_offline(tables, cfg, make_topology(2, "cpu"), 64, "rowwise_adagrad", {"a", "b"})
    assert rep.fits, rep.message
    by = {t.name: t for t in rep.tables}
    assert by["a"].sharding_type == "column_wise" and by["b"].sharding_type == "table_wise"
    assert sorted((s.col_offset, s.cols, s.rows) for s in by["a"].shards) == [(0, 8, 1000), (8, 8, 1000)]
    ps = rep.plan.plan[""]["a"] if "" in rep.plan.plan else next(v["a"] for v in rep.plan.plan.values() if "a" in v)
    assert ps.sharding_type == "column_wise"


def test_unknown_table_in_constraints_is_an_error_naming_it():
    schema = small_schema()
    cfg = ShardingConfig.from_dict({"tables": {"nope": {"sharding_types": ["table_wise"]}}})
    tables, pooled = schema_tables(schema)
    with pytest.raises(ConfigError, match=r"unknown table 'nope' \(tables: u, i, tags\)"):
        make_planner(tables, cfg, make_topology(2, "cpu"), 64, "rowwise_adagrad", pooled)
    rc, text = run_plan_command(schema, 2, "cpu", None, None, 64, "rowwise_adagrad", cfg)
    assert rc == 2 and "'nope'" in text and "Traceback" not in text


def test_sharding_config_is_strict():
    with pytest.raises(ConfigError, match=r"sharding: unknown key 'default_type'"):
        ShardingConfig.from_dict({"default_type": ["table_wise"]})
    with pytest.raises(ConfigError, match=r"sharding\.tables\.a\.compute_kernels\[0\]: must be one of"):
        ShardingConfig.from_dict({"tables": {"a": {"compute_kernels": ["fast"]}}})
    with pytest.raises(ConfigError, match=r"cache_load_factor.*fused_uvm_caching"):
        ShardingConfig.from_dict({"tables": {"a": {"cache_load_factor": 0.1}}}).allowed("a", True, "cuda")
    assert ShardingConfig.from_dict(None) == ShardingConfig()


def test_prefixed_tables_take_the_constraint_of_their_schema_table():
    cfg = ShardingConfig.from_dict({"tables": {"u": {"sharding_types": ["column_wise"]}}})
    tables = [TableSpec("u", 100, 8, ("u",)), TableSpec("linear__u", 100, 4, ("u",))]
    cons = cfg.to_parameter_constraints(tables, "cpu", {"u", "linear__u"})
    assert cons["u"].sharding_types == ["column_wise"] and cons["linear__u"].sharding_types == ["column_wise"]


# ---- memory formulas against TorchRec's estimates -----------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad", "adam", "sgd"])
def test_memory_breakdown_matches_torchrec_storage(optimizer):
    # TorchRec's per-shard storage = weights + optimizer state + IO; with our optimizer formula the remainder must
    # equal our own IO formula (so both formulas agree with TorchRec's estimator).
    tables = [TableSpec("a", 1000, 16, ("a",)), TableSpec("b", 300, 8, ("b",))]
    cfg = ShardingConfig.from_dict({"default_types": ["table_wise"]})
    rep = plan_offline(tables, cfg, make_topology(2, "cpu"), 64, optimizer, {"a", "b"})
    assert rep.fits, rep.message
    for t in rep.tables:
        (s,) = t.shards
        assert s.source == "torchrec"
        assert s.weights == t.rows * t.dim * 4
        assert s.optimizer == optimizer_state_bytes(optimizer, t.rows, t.dim)
        assert s.io == io_bytes_estimate("table_wise", t.dim, 64, 2, 1, 1.0, pooled=True)


def test_optimizer_state_formulas():
    assert optimizer_state_bytes("rowwise_adagrad", 10, 8) == 10 * 4
    assert optimizer_state_bytes("adagrad", 10, 8) == 10 * 8 * 4
    assert optimizer_state_bytes("adam", 10, 8) == 2 * 10 * 8 * 4
    assert optimizer_state_bytes("sgd", 10, 8) == 0
    with pytest.raises(ValueError, match="'lamb'"):
        optimizer_state_bytes("lamb", 1, 1)


# ---- sharders, topology, collective plan ----------------------------------------------------------------------
def test_sharders_carry_fused_params():
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    fp = fused_params_for("adam", cache_load_factor=0.3)
    sharders = make_sharders(fp)
    assert {s.module_type for s in sharders} == {EmbeddingBagCollection, EmbeddingCollection}
    for s in sharders:
        assert s.fused_params["optimizer"] == EmbOptimType.ADAM and s.fused_params["cache_load_factor"] == 0.3


def test_topology_validation():
    topo = make_topology(16, "cuda", hbm_gb=80)
    assert topo.world_size == 16 and topo.local_world_size == 8 and topo.devices[0].storage.hbm == 80 * GIB
    with pytest.raises(ConfigError, match="hbm_gb"):
        make_topology(2, "cpu", hbm_gb=80)
    with pytest.raises(ConfigError, match="device"):
        make_topology(2, "tpu")
    with pytest.raises(ConfigError, match="local_world_size"):
        make_topology(6, "cuda", local_world_size=4)


def test_plan_collective_single_rank():
    import torch.distributed as dist

    from dist_ctr.distributed.env import DistEnv, destroy_process_group, init_process_group
    from dist_ctr.distributed.optim import mark_fused_sparse
    from dist_ctr.config import SparseOptimConfig
    from dist_ctr.sparse.arch import SparseArch

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    arch = SparseArch(small_schema())
    mark_fused_sparse(arch, SparseOptimConfig())
    tables, pooled = tables_of_module(arch)
    init_process_group(DistEnv())
    try:
        planner = make_planner(tables, ShardingConfig(), make_topology(1, "cpu"), 32, "rowwise_adagrad", pooled,
                               quiet=True)
        plan = plan_collective(planner, arch, make_sharders(fused_params_for("rowwise_adagrad")),
                               dist.GroupMember.WORLD)
    finally:
        destroy_process_group()
    planned = {name: ps for per_module in plan.plan.values() for name, ps in per_module.items()}
    assert set(planned) == {"u", "i", "tags"}
    assert all(ps.ranks == [0] for ps in planned.values())
