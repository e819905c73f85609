"""DLRM and DLRM-DCNv2: layer formulas, forward equal to TorchRec's ``DLRM`` / ``DLRM_DCN`` on the same weights,
clear errors, and learning planted interactions that logistic regression cannot see."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.models.dlrm import DLRM as TorchRecDLRM
from torchrec.models.dlrm import DLRM_DCN as TorchRecDLRM_DCN
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.dlrm import DotInteraction, LowRankCrossNet, mlp
from dist_ctr.models import MODEL_REGISTRY, ModelConfigError, build_model
from dist_ctr.models.dlrm import DLRM, DLRM_DCNv2, DLRM_DCNv2Config, DLRMConfig
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import materialize
from tests.models.planted import PlantedData, auc, planted_interactions

D = 4


# ---- layers -------------------------------------------------------------------------------------------------
def test_dot_interaction_is_the_pairwise_dot_products_in_torchrec_order():
    g = torch.Generator().manual_seed(0)
    dense, sparse = torch.randn(5, D, generator=g), torch.randn(5, 3, D, generator=g)
    out = DotInteraction(3)(dense, sparse)
    z = [dense] + [sparse[:, f] for f in range(3)]
    pairs = [(z[i] * z[j]).sum(-1, keepdim=True) for i, j in itertools.combinations(range(4), 2)]
    assert out.shape == (5, D + 6)
    torch.testing.assert_close(out, torch.cat([dense] + pairs, dim=1))
    assert DotInteraction(0)(dense, sparse[:, :0]) is dense


def test_low_rank_cross_layer_formula():
    torch.manual_seed(0)
    net = LowRankCrossNet(6, num_layers=2, low_rank=3)
    with torch.no_grad():
        for b in net.bias:
            b.normal_()
    x0 = torch.randn(4, 6)
    x = x0
    for W, V, b in zip(net.W_kernels, net.V_kernels, net.bias):
        assert W.shape == (6, 3) and V.shape == (3, 6)
        x = x0 * (x @ V.t() @ W.t() + b) + x
    torch.testing.assert_close(net(x0), x)
    with pytest.raises(ValueError, match="low_rank"):
        LowRankCrossNet(6, 1, 0)


def test_mlp_relu_placement():
    kinds = [type(m) for m in mlp(3, (5, 2))]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert [type(m) for m in mlp(3, (5, 2), last_activation=False)] == [nn.Linear, nn.ReLU, nn.Linear]


# ---- equal to TorchRec's models -----------------------------------------------------------------------------
def _schema() -> FeatureSchema:
    return FeatureSchema((
        SparseFeat("a", 10, D), SparseFeat("b", 7, D),
        VarLenSparseFeat(SparseFeat("c", 9, D), maxlen=3, combiner="mean"),
        DenseFeat("x"), DenseFeat("y"), DenseFeat("z"),
    ))


def _input(B: int = 6) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.cat([torch.ones(2 * B, dtype=torch.int32), torch.randint(0, 4, (B,), generator=g).int()])
    vocab = [10] * B + [7] * B + [9] * int(lengths[2 * B:].sum())  # host sync
    values = torch.cat([torch.randint(0, v, (1,), generator=g) for v in vocab])
    return torch.randn(B, 3, generator=g), KeyedJaggedTensor.from_lengths_sync(["a", "b", "c"], values, lengths)


def _torchrec_ebc() -> EmbeddingBagCollection:
    return EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name="a", embedding_dim=D, num_embeddings=10, feature_names=["a"]),
        EmbeddingBagConfig(name="b", embedding_dim=D, num_embeddings=7, feature_names=["b"]),
        EmbeddingBagConfig(name="c", embedding_dim=D, num_embeddings=9, feature_names=["c"], pooling=PoolingType.MEAN),
    ])


def _linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def _copy_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Ours -> TorchRec's: tables by name, bottom / top MLP Linear layers in order, the cross net by name."""
    with torch.no_grad():
        for name, bag in theirs.sparse_arch.embedding_bag_collection.embedding_bags.items():
            bag.weight.copy_(ours.sparse_arch.ebc.embedding_bags[name].weight)
        for mine, other in [(ours.dense_arch, theirs.dense_arch), (ours.over_arch, theirs.over_arch)]:
            a, b = _linears(mine), _linears(other)
            assert [x.weight.shape for x in a] == [x.weight.shape for x in b]
            for x, y in zip(a, b):
                y.weight.copy_(x.weight)
                y.bias.copy_(x.bias)
        if hasattr(theirs.inter_arch, "crossnet"):
            theirs.inter_arch.crossnet.load_state_dict(ours.inter_arch.crossnet.state_dict())


def test_dlrm_forward_equals_torchrec_dlrm():
    cfg = DLRMConfig(dense_arch_layer_sizes=(8, D), over_arch_layer_sizes=(16, 8, 1))
    ours = materialize(build_model("DLRM", _schema(), cfg), seed=3)
    theirs = TorchRecDLRM(_torchrec_ebc(), dense_in_features=3, dense_arch_layer_sizes=[8, D],
                          over_arch_layer_sizes=[16, 8, 1])
    _copy_weights(ours, theirs)
    dense, kjt = _input()
    want = theirs(dense, kjt)
    assert want.shape == (6, 1)
    torch.testing.assert_close(ours(dense, kjt), want)


def test_dlrm_dcnv2_forward_equals_torchrec_dlrm_dcn():
    cfg = DLRM_DCNv2Config(dense_arch_layer_sizes=(8, D), over_arch_layer_sizes=(16, 8, 1), dcn_num_layers=3,
                           dcn_low_rank_dim=5)
    ours = materialize(build_model("DLRM_DCNv2", _schema(), cfg), seed=3)
    with torch.no_grad():  # non-zero biases, so their copy is checked too
        for b in ours.inter_arch.crossnet.bias:
            b.normal_(0, 0.1)
    theirs = TorchRecDLRM_DCN(_torchrec_ebc(), dense_in_features=3, dense_arch_layer_sizes=[8, D],
                              over_arch_layer_sizes=[16, 8, 1], dcn_num_layers=3, dcn_low_rank_dim=5)
    _copy_weights(ours, theirs)
    dense, kjt = _input()
    torch.testing.assert_close(ours(dense, kjt), theirs(dense, kjt))


def test_defaults_are_mlperf_dlrm_dcnv2():
    c = DLRM_DCNv2Config()
    assert (c.dense_arch_layer_sizes, c.over_arch_layer_sizes, c.dcn_num_layers, c.dcn_low_rank_dim) == (
        (512, 256, 128), (1024, 1024, 512, 256, 1), 3, 512)
    s = FeatureSchema((SparseFeat("a", 10, 128), SparseFeat("b", 10, 128), DenseFeat("x")))
    m = build_model("DLRM_DCNv2", s)
    assert m.inter_arch.crossnet.W_kernels[0].shape == (3 * 128, 512)
    assert {"DLRM", "DLRM_DCNv2"} <= set(MODEL_REGISTRY)


# ---- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DLRM", "DLRM_DCNv2"])
def test_clear_errors(name):
    ok = FeatureSchema((SparseFeat("a", 10, D), SparseFeat("b", 10, D), DenseFeat("x")))
    small = {"dense_arch_layer_sizes": (8, D), "over_arch_layer_sizes": (8, 1)}
    odd = FeatureSchema((SparseFeat("a", 10, D), SparseFeat("wide", 10, 8), DenseFeat("x")))
    with pytest.raises(ValueError, match=f"{name}: sparse feature 'wide' has embedding_dim 8"):
        build_model(name, odd, small)
    no_dense = FeatureSchema((SparseFeat("a", 10, D),))
    with pytest.raises(ValueError, match=f"{name} needs at least one dense feature"):
        build_model(name, no_dense, small)
    with pytest.raises(ValueError, match=f"{name} needs at least one sparse feature"):
        build_model(name, FeatureSchema((DenseFeat("x"),)), small)
    with pytest.raises(ValueError, match="over_arch_layer_sizes\\[-1\\] is 2"):
        build_model(name, ok, {**small, "over_arch_layer_sizes": (8, 2)})
    with pytest.raises(ModelConfigError, match="unknown config key"):
        build_model(name, ok, {**small, "dnn_hidden_units": (8,)})


# ---- learning -----------------------------------------------------------------------------------------------
MARGIN = 0.05
EPOCHS = 3
CONFIGS = {
    "DLRM": {"dense_arch_layer_sizes": (16, 8), "over_arch_layer_sizes": (64, 32, 1)},
    "DLRM_DCNv2": {"dense_arch_layer_sizes": (16, 8), "over_arch_layer_sizes": (64, 32, 1), "dcn_num_layers": 2,
                   "dcn_low_rank_dim": 16},
}


@functools.lru_cache(maxsize=1)
def _data() -> PlantedData:  # the recipe of test_interaction_models_learning: Bayes AUC 0.90, LR 0.66
    return planted_interactions(n_train=16_000, n_test=4_000, batch_size=256, n_fields=6, vocab=20, n_pairs=3,
                                rank=1, pair_scale=1.5, seed=0)


def _train_and_auc(name: str, config: object, lr: float = 5e-3) -> float:
    data = _data()
    torch.manual_seed(0)
    model = materialize(build_model(name, data.schema, config), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(EPOCHS):
        for b in data.train:
            loss = F.binary_cross_entropy_with_logits(model(b.dense, b.sparse), b.labels)
            extra = model.pop_losses()
            if extra:
                loss = loss + sum(extra.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(b.dense, b.sparse)[:, 0] for b in data.test])
    return auc(scores, torch.cat([b.labels[:, 0] for b in data.test]))


@functools.lru_cache(maxsize=1)
def _lr_auc() -> float:
    return _train_and_auc("LogisticRegression", None)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_beats_logistic_regression_on_planted_interactions(name):
    lr = _lr_auc()
    got = _train_and_auc(name, CONFIGS[name])
    assert got > lr + MARGIN, f"{name}: held-out AUC {got:.3f} vs LR {lr:.3f} (Bayes {_data().bayes_auc:.3f})"
