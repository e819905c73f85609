"""Field-interaction models: build by name, forward / backward on tiny batches, clear errors on bad schemas."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.models import build_model
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import materialize

MODELS = ["CCPM", "PNN", "MLR", "NFM", "AFM", "AutoInt", "ONN", "FiBiNET", "IFM", "DIFM", "AFN", "FGCNN", "FwFM",
          "FLEN"]
# Small widths keep the test fast; every other argument keeps DeepCTR's default.
SMALL = {
    "CCPM": {"dnn_hidden_units": (8,)},
    "PNN": {"dnn_hidden_units": (8,), "use_outter": True},
    "NFM": {"dnn_hidden_units": (8,)},
    "AutoInt": {"dnn_hidden_units": (8,), "att_layer_num": 2},
    "ONN": {"dnn_hidden_units": (8,)},
    "FiBiNET": {"dnn_hidden_units": (8,)},
    "IFM": {"dnn_hidden_units": (8,)},
    "DIFM": {"dnn_hidden_units": (8,), "att_head_num": 2},
    "AFN": {"afn_dnn_hidden_units": (8,), "ltl_hidden_size": 4},
    "FGCNN": {"dnn_hidden_units": (8,), "conv_filters": (2, 2), "conv_kernel_width": (3, 3), "new_maps": (2, 2),
              "pooling_width": (2, 2)},
    "FwFM": {"dnn_hidden_units": (8,), "fm_group": ("user", "item", "ctx")},
    "FLEN": {"dnn_hidden_units": (8,)},
}
D = 4


def _schema(dense: bool = True, labels: tuple[LabelSpec, ...] = (LabelSpec("y"),)) -> FeatureSchema:
    feats = [
        SparseFeat("a", 10, D, group_name="user"),
        SparseFeat("b", 12, D, group_name="item"),
        VarLenSparseFeat(SparseFeat("m", 9, D, group_name="item"), maxlen=3, combiner="mean"),
        SparseFeat("c", 10, D, embedding_name="a", group_name="ctx"),
    ]
    if dense:
        feats.append(DenseFeat("x", 2))
    return FeatureSchema(tuple(feats), labels)


def _batch(B: int, n_dense: int, empty_bags: bool = False, seed: int = 0) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.cat([
        torch.ones(B, dtype=torch.int32),
        torch.ones(B, dtype=torch.int32),
        torch.zeros(B, dtype=torch.int32) if empty_bags else torch.randint(0, 4, (B,), generator=g, dtype=torch.int32),
        torch.ones(B, dtype=torch.int32),
    ])
    values = torch.randint(0, 9, (int(lengths.sum()),), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b", "m", "c"], values, lengths)
    return torch.randn(B, n_dense, generator=g), kjt


def _build(name: str, schema: FeatureSchema):
    return materialize(build_model(name, schema, SMALL.get(name)), seed=0)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter(name):
    schema = _schema()
    model = _build(name, schema)
    model.train()
    dense, kjt = _batch(6, schema.n_dense)
    out = model(dense, kjt)
    assert out.shape == (6, 1) and torch.isfinite(out).all()
    losses = model.pop_losses()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.ones_like(out)) + sum(losses.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    if name != "PNN":  # PNN has no linear part; every other model penalises looked-up embeddings
        assert "l2_embedding" in losses


@pytest.mark.parametrize("name", MODELS)
def test_batch_of_one_no_dense_empty_bags_two_tasks(name):
    schema = _schema(dense=False, labels=(LabelSpec("y"), LabelSpec("z", "regression")))
    model = _build(name, schema).eval()
    dense, kjt = _batch(1, 0, empty_bags=True)
    out = model(dense, kjt)
    assert out.shape == (1, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [m for m in MODELS if m != "MLR"])
def test_unequal_dims_error_names_the_feature(name):
    schema = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("wide", 10, 8), SparseFeat("b", 10, 4)))
    with pytest.raises(ValueError, match="'wide'"):
        build_model(name, schema, SMALL.get(name))


@pytest.mark.parametrize("name", [m for m in MODELS if m != "MLR"])
def test_no_sparse_features_is_a_clear_error(name):
    schema = FeatureSchema((DenseFeat("x", 3),))
    with pytest.raises(ValueError, match=f"{name} needs"):
        build_model(name, schema, SMALL.get(name))


def test_mlr_runs_on_dense_only_and_on_chosen_columns():
    schema = _schema()
    model = materialize(build_model("MLR", schema, {"region_feature_names": ("a", "x"),
                                                    "base_feature_names": ("b", "m"),
                                                    "bias_feature_names": ("c",)}), seed=0)
    dense, kjt = _batch(5, schema.n_dense)
    p = torch.sigmoid(model(dense, kjt))
    assert p.shape == (5, 1) and ((p > 0) & (p < 1)).all()
    dense_only = FeatureSchema((DenseFeat("x", 3),))
    out = build_model("MLR", dense_only)(torch.randn(4, 3), KeyedJaggedTensor.from_lengths_sync(
        [], torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.int32), stride=4))
    assert out.shape == (4, 1)


def test_unknown_feature_name_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        build_model("NFM", _schema(), {"dnn_feature_names": ("a", "nope")})


def test_onn_pairs_multiply_each_feature_embedding_for_its_partner_field():
    # e_i^(j) is partner j's D-vector in feature i's wide row; the row holds every field but i's own when one
    # feature reads the table ("b", "m"), every field when several do ("a" and "c" share table "a").
    import itertools

    schema = _schema()
    model = _build("ONN", schema).train()
    with torch.no_grad():
        for w in model.field_aware.parameters():  # O(1) values: init_std's 1e-4 would pass any tolerance
            w.normal_(generator=torch.Generator().manual_seed(1))
    names = model.sparse_names
    assert names == ["a", "b", "m", "c"]
    Fn = len(names)
    widths = {c.name: c.embedding_dim for c in model.field_aware.ebc.embedding_bag_configs()}
    assert widths == {"onn__a": Fn * D, "onn__b": (Fn - 1) * D, "onn__m": (Fn - 1) * D}
    partners = {"a": list(range(Fn)), "c": list(range(Fn)), "b": [0, 2, 3], "m": [0, 1, 3]}
    dense, kjt = _batch(5, schema.n_dense)
    flat = model.field_aware(kjt).pooled_flat.detach()
    rows, start = {}, 0
    for n in names:
        rows[n] = flat[:, start:start + len(partners[n]) * D].view(5, -1, D)
        start += len(partners[n]) * D

    def e(i: int, j: int) -> torch.Tensor:
        return rows[names[i]][:, partners[names[i]].index(j)]

    want = torch.cat([e(i, j) * e(j, i) for i, j in itertools.combinations(range(Fn), 2)]
                     + [dense], dim=1)  # DeepCTR's DNN input: pair products in combinations order, then dense
    seen = []
    model.dnn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    model(dense, kjt)
    torch.testing.assert_close(seen[0], want)
    # the embedding L2 covers each field-aware vector in use once
    vectors = torch.stack([e(i, j) for i in range(Fn) for j in range(Fn) if i != j], dim=1)  # (B, F (F-1), D)
    l2 = model.pop_losses()["l2_embedding"]
    torch.testing.assert_close(l2, model.config.l2_reg_embedding * vectors.pow(2).sum() / 5)


def test_mlr_probability_is_the_region_mixture_of_sigmoids():
    schema = _schema()
    model = materialize(build_model("MLR", schema, {"region_num": 3}), seed=0).eval()
    dense, kjt = _batch(5, schema.n_dense)
    region, _, _ = model.region(dense, kjt)
    base, _, _ = model.base(dense, kjt)
    want = (torch.softmax(region, -1) * torch.sigmoid(base)).sum(-1, keepdim=True)
    torch.testing.assert_close(torch.sigmoid(model(dense, kjt)), want)
    # distinct tables per learner group: regions start different
    assert not torch.allclose(region[:, 0], region[:, 1])
