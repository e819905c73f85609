"""Linear weights carried in the embedding rows (``linear_in_embedding_tables``): the same model, one lookup.

Under an element-wise sparse optimizer a model that carries its linear weights as extra columns of its embedding
rows must start from the same weights and take the same steps as the model that keeps them in tables of their own;
the sharded engine refuses the layout under row-wise Adagrad; the facade picks it when it compiles with an
element-wise optimizer and splits it back when re-compiled with a row-wise one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import MODEL_REGISTRY, build_model
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import SparseArch
from dist_ctr.sparse.arch import LINEAR_DIM
from dist_ctr.train.engine import Trainer
from tests.distributed.equivalence_jobs import global_batches

# Every model whose linear part can ride in its deep embedding arch (ONN embeds per field pair; MLR keeps
# per-feature linear learners of its own). IFM / DIFM carry their per-feature refined linear weights.
CARRYING = ("DeepFM", "WDL", "DCN", "DCNMix", "xDeepFM", "NFM", "AFM", "AutoInt", "CCPM", "AFN", "FiBiNET", "FwFM",
            "FGCNN", "FLEN", "IFM", "DIFM")


def schema() -> FeatureSchema:
    """Own tables (``u``, ``c``), a table read by two features (``i``, ``i2``), a multi-hot bag, two dense values;
    one embedding dim (FM, CIN, attention need it)."""
    return FeatureSchema((
        SparseFeat("u", 40, 8, group_name="user"), SparseFeat("i", 30, 8, group_name="item"),
        SparseFeat("i2", 30, 8, embedding_name="i", group_name="item"),
        VarLenSparseFeat(SparseFeat("tags", 12, 8, group_name="item"), maxlen=3, combiner="sum"),
        SparseFeat("c", 25, 8, group_name="context"), DenseFeat("x"), DenseFeat("y"),
    ))


@pytest.fixture(scope="module")
def env() -> DistEnv:
    e = DistEnv()
    init_process_group(e)
    return e


def _trainer(env: DistEnv, name: str, carry: bool, sparse: str = "adagrad", **fields: object) -> Trainer:
    s = schema()
    cfg = dataclasses.replace(MODEL_REGISTRY[name].config_cls(), init_std=0.05, linear_in_embedding_tables=carry,
                              **fields)
    if name == "FwFM":
        cfg = dataclasses.replace(cfg, fm_group=("user", "item", "context"))
    torch.manual_seed(3)
    return Trainer(build_model(name, s, cfg), env, sparse_optim=SparseOptimConfig(sparse, lr=0.05, eps=1e-8),
                   dense_optim=DenseOptimConfig("adagrad", lr=0.05), seed=3, loss_reduction="sum")


def _carried_tables(t: Trainer) -> list[str]:
    return sorted(n for m in t.model.modules() if isinstance(m, SparseArch) for n in m.linear_names)


@pytest.mark.parametrize("name", CARRYING)
def test_carrying_trains_the_same_model(env, name):
    """Same start, same steps: the logits of every step and the held-out predictions agree bit for bit, while the
    carrying model reads every linear sparse feature from its embedding rows."""
    apart, carried = _trainer(env, name, False), _trainer(env, name, True)
    assert _carried_tables(apart) == []
    assert _carried_tables(carried) == ["c", "i", "i2", "tags", "u"]
    assert not any(k.split(".")[-2].startswith("linear__") for k in carried.dmp.state_dict() if k.endswith("weight"))
    batches = global_batches(schema(), 6, 32, seed=1)
    for b in batches[:5]:
        l_a, z_a = apart.train_step(b)
        l_c, z_c = carried.train_step(b)
        assert torch.equal(z_c, z_a) and torch.equal(l_c, l_a)
    assert torch.equal(carried.predict(batches[5:]), apart.predict(batches[5:]))


@pytest.mark.parametrize("name", ["DeepFM", "NFM"])
def test_partly_carried_trains_the_same_model(env, name):
    """The deep part reads ``c``, the linear part ``tags`` and ``y`` besides: only ``u``, ``i``, ``i2`` carry,
    ``tags`` keeps a linear table of its own, the columns are picked by index. Same steps to float error."""
    parts = {"dnn_feature_names": ("u", "i", "i2", "c", "x"), "linear_feature_names": ("u", "i", "i2", "tags", "y")}
    apart, carried = _trainer(env, name, False, **parts), _trainer(env, name, True, **parts)
    assert _carried_tables(carried) == ["i", "i2", "u"]
    own = [k for k in carried.dmp.state_dict() if k.endswith(".weight") and "linear__" in k]
    assert [k.split(".")[-2] for k in own] == ["linear__tags"]
    for b in global_batches(schema(), 5, 32, seed=2):
        l_a, z_a = apart.train_step(b)
        l_c, z_c = carried.train_step(b)
        torch.testing.assert_close(z_c, z_a, rtol=1e-5, atol=1e-6)


def test_mlr_base_learners_ride_in_the_region_rows(env):
    """MLR: one lookup per id serves the region and the base learners; same steps bit for bit."""
    apart, carried = _trainer(env, "MLR", False), _trainer(env, "MLR", True)
    tables = [k.split(".")[-2] for k in carried.dmp.state_dict() if ".embedding_bags." in k and k.endswith(".weight")]
    assert tables and not any(t.startswith("mlr_base__") for t in tables)
    batches = global_batches(schema(), 6, 32, seed=3)
    for b in batches[:5]:
        l_a, z_a = apart.train_step(b)
        l_c, z_c = carried.train_step(b)
        assert torch.equal(z_c, z_a)
        torch.testing.assert_close(l_c, l_a, rtol=1e-6, atol=0)  # L2 summed over a strided view: last bits
    assert torch.equal(carried.predict(batches[5:]), apart.predict(batches[5:]))


def test_row_wise_adagrad_refuses_carried_rows(env):
    with pytest.raises(ValueError, match="linear_in_embedding_tables.*rowwise_adagrad"):
        _trainer(env, "DeepFM", True, sparse="rowwise_adagrad")


def test_only_tables_both_parts_read_through_the_same_features_carry():
    """``i`` and ``i2`` share a table: it carries only when the linear part reads it through both of them; a
    table read by a sequence (EmbeddingCollection) never carries."""
    s = schema()
    both = SparseArch(s, ["u", "i", "i2", "c"], linear_features=["u", "i", "i2"])
    assert both.linear_names == ["u", "i", "i2"] and both.ebc.column_tails["i"][1] == LINEAR_DIM
    one = SparseArch(s, ["u", "i", "i2", "c"], linear_features=["u", "i"])
    assert one.linear_names == ["u"]
    seq = SparseArch(s, ["u", "tags"], sequence_features=["tags"], linear_features=["u", "tags"])
    assert seq.linear_names == ["u"]
    widths = {c.name: c.embedding_dim for c in both.ebc.embedding_bag_configs()}
    assert widths == {"u": 8 + LINEAR_DIM, "i": 8 + LINEAR_DIM, "c": 8}


@pytest.mark.parametrize("name", ["DeepFM", "MLR"])
def test_facade_carries_under_adagrad_and_splits_for_row_wise(name):
    """compile("adagrad") picks the carried layout; a re-compile with row-wise Adagrad moves the weights back to
    tables of their own and predicts exactly as before."""
    from dist_ctr.compat import models
    from dist_ctr.compat.inputs import DenseFeat as CDense, SparseFeat as CSparse

    rng = np.random.default_rng(0)
    cols = [CSparse("a", 20, embedding_dim=4), CSparse("b", 15, embedding_dim=4), CDense("x", 1)]
    x = {"a": rng.integers(0, 20, 500), "b": rng.integers(0, 15, 500), "x": rng.normal(size=500).astype("float32")}
    y = ((x["a"] % 3 == 0) ^ (x["b"] % 2 == 0)).astype("float32")
    if name == "DeepFM":
        m = models.DeepFM(cols, cols, dnn_hidden_units=(8,), init_std=0.05)
    else:
        m = models.MLR(cols, init_std=0.05)
    m.compile("adagrad", "binary_crossentropy")
    assert m.config.linear_in_embedding_tables
    m.fit(x, y, batch_size=100, epochs=1, verbose=0)
    before = m.predict(x, batch_size=500)
    m.compile("adagrad", "binary_crossentropy", sparse_optimizer="rowwise_adagrad")
    assert not m.config.linear_in_embedding_tables
    np.testing.assert_allclose(m.predict(x, batch_size=500), before, rtol=1e-6, atol=1e-7)
    m.fit(x, y, batch_size=100, epochs=1, verbose=0)  # trains on in the split layout


def test_tail_columns_start_as_their_own_table_in_any_row_slice():
    """The sharded engine draws any row range of a carried table; each slice is the embedding table's rows beside
    the linear table's (what row- and column-wise shards copy from)."""
    from dist_ctr.sparse.init import ColumnTail, table_init

    tail = ColumnTail("linear__t", LINEAR_DIM, 2e-4)
    whole = table_init(5, "t", 70_000, 8 + LINEAR_DIM, 0, 70_000, 1e-4, tail)
    assert torch.equal(whole[:, :8], table_init(5, "t", 70_000, 8, 0, 70_000, 1e-4))
    assert torch.equal(whole[:, 8:], table_init(5, "linear__t", 70_000, LINEAR_DIM, 0, 70_000, 2e-4))
    assert torch.equal(whole[65_000:66_000], table_init(5, "t", 70_000, 8 + LINEAR_DIM, 65_000, 66_000, 1e-4, tail))
