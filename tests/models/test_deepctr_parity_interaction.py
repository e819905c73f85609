"""xDeepFM, FiBiNET and AutoInt keep DeepCTR-Torch 0.2.9's parameter conventions: the constructor defaults, the
init rule of every dense weight, and which parameters each ``l2_reg_*`` argument penalises.

DeepCTR-Torch's rules, per parameter:

- DNN linear weights ``N(0, init_std ** 2)``; DNN biases and every final ``Linear`` keep torch's default init
  (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the biases);
- CIN: ``nn.Conv1d(H_{k-1} F, H_k, 1)`` default init (weights and biases in ``±1/sqrt(H_{k-1} F)``);
- FiBiNET's bilinear ``W`` : ``nn.Linear(D, D, bias=False)`` default init (``±1/sqrt(D)``), SENET's two bias-free
  ``nn.Linear`` default init;
- AutoInt's ``W_Query / W_key / W_Value / W_Res``: ``N(0, 0.05 ** 2)``;
- L2: xDeepFM ``l2_reg_cin`` on the CIN conv weights (not biases, not ``cin_linear``), ``l2_reg_dnn`` on the DNN
  kernels and ``dnn_linear``; AutoInt ``l2_reg_dnn`` on the DNN kernels only, no linear L2; ``l2_reg_linear`` on the
  dense linear weight.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dist_ctr.models import build_model
from dist_ctr.models.autoint import AutoIntConfig
from dist_ctr.models.fibinet import FiBiNETConfig
from dist_ctr.models.xdeepfm import xDeepFMConfig
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat
from dist_ctr.sparse import materialize

F_, D_ = 6, 8  # fields, embedding dim

# DeepCTR-Torch 0.2.9's constructor defaults of the arguments the configs share.
PEER_DEFAULTS = {
    xDeepFMConfig: dict(dnn_hidden_units=(256, 256), cin_layer_size=(256, 128), cin_split_half=True,
                        cin_activation="relu", l2_reg_linear=1e-5, l2_reg_embedding=1e-5, l2_reg_dnn=0.0,
                        l2_reg_cin=0.0, init_std=1e-4, dnn_dropout=0.0, dnn_activation="relu", dnn_use_bn=False),
    FiBiNETConfig: dict(bilinear_type="interaction", reduction_ratio=3, dnn_hidden_units=(128, 128),
                        l2_reg_linear=1e-5, l2_reg_embedding=1e-5, l2_reg_dnn=0.0, init_std=1e-4, dnn_dropout=0.0,
                        dnn_activation="relu"),
    AutoIntConfig: dict(att_layer_num=3, att_head_num=2, att_res=True, dnn_hidden_units=(256, 128),
                        dnn_activation="relu", l2_reg_dnn=0.0, l2_reg_embedding=1e-5, dnn_use_bn=False,
                        dnn_dropout=0.0, init_std=1e-4),
}


def _schema() -> FeatureSchema:
    feats = tuple(SparseFeat(f"c{i}", 50, D_) for i in range(F_)) + (DenseFeat("x"), DenseFeat("y"))
    return FeatureSchema(feats, (LabelSpec("label"),))


def _model(name: str, **cfg):
    torch.manual_seed(0)
    return materialize(build_model(name, _schema(), cfg), seed=0).train()


def _in_bound(t: torch.Tensor, bound: float) -> bool:
    return float(t.abs().max()) <= bound + 1e-7  # host sync


def _uniform_std_ok(t: torch.Tensor, bound: float) -> bool:
    """``t`` looks like ``U(-bound, bound)``: inside the bound, std near ``bound / sqrt(3)``."""
    return _in_bound(t, bound) and abs(float(t.std()) - bound / math.sqrt(3)) < 0.15 * bound  # host sync


@pytest.mark.parametrize("cls", list(PEER_DEFAULTS), ids=lambda c: c.__name__)
def test_config_defaults_are_deepctr_torch_defaults(cls):
    cfg = cls()
    for k, v in PEER_DEFAULTS[cls].items():
        assert getattr(cfg, k) == v, k


def test_autoint_has_no_linear_l2_argument():
    assert "l2_reg_linear" not in {f.name for f in dataclasses.fields(AutoIntConfig)}


def _check_dnn_init(dnn, init_std: float) -> None:
    for lin in (m for m in dnn.layers if isinstance(m, torch.nn.Linear)):
        assert abs(float(lin.weight.std()) - init_std) < 0.1 * init_std  # host sync
        assert _uniform_std_ok(lin.bias, 1 / math.sqrt(lin.in_features)) if lin.bias.numel() >= 64 else \
            _in_bound(lin.bias, 1 / math.sqrt(lin.in_features))
        assert float(lin.bias.abs().max()) > 0  # host sync; torch's default, not zeros


def test_xdeepfm_init_follows_deepctr_torch():
    m = _model("xDeepFM", dnn_hidden_units=(64, 64), cin_layer_size=(64, 32), init_std=1e-3)
    _check_dnn_init(m.dnn, 1e-3)
    fan_ins = [F_ * F_, 32 * F_]  # H_{k-1} F channels of each width-1 conv (split_half: 64 // 2 maps go on)
    for conv, fan_in in zip(m.cin.conv1ds, fan_ins):
        assert conv.weight.shape[1] == fan_in
        assert _uniform_std_ok(conv.weight, 1 / math.sqrt(fan_in))
        assert _in_bound(conv.bias, 1 / math.sqrt(fan_in)) and float(conv.bias.abs().max()) > 0  # host sync
    assert _uniform_std_ok(m.cin_linear.weight, 1 / math.sqrt(m.cin.featuremap_num))
    assert m.cin_linear.bias is None and m.dnn_linear.bias is None
    assert m.cin.featuremap_num == 64 // 2 + 32
    assert m.out.bias.shape == (1,) and float(m.out.bias.abs().sum()) == 0  # host sync


def test_fibinet_init_follows_deepctr_torch():
    m = _model("FiBiNET", dnn_hidden_units=(64, 64), init_std=1e-3)
    _check_dnn_init(m.dnn, 1e-3)
    assert m.bilinear.weight.shape == (F_ * (F_ - 1) // 2, D_, D_)
    assert _uniform_std_ok(m.bilinear.weight, 1 / math.sqrt(D_))
    lin1, lin2 = (x for x in m.se.excitation if isinstance(x, torch.nn.Linear))
    assert lin1.bias is None and lin2.bias is None
    assert _in_bound(lin1.weight, 1 / math.sqrt(F_)) and _in_bound(lin2.weight, 1 / math.sqrt(lin2.in_features))
    assert m.dnn.layers[0].in_features == F_ * (F_ - 1) * D_ + 2
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.dnn.layers)


def test_autoint_init_follows_deepctr_torch():
    m = _model("AutoInt", dnn_hidden_units=(64, 64), init_std=1e-3)
    _check_dnn_init(m.dnn, 1e-3)
    ws = torch.cat([p.detach().flatten() for layer in m.int_layers for p in layer.parameters()])
    assert len(ws) == 3 * 4 * D_ * D_
    assert abs(float(ws.std()) - 0.05) < 0.005 and abs(float(ws.mean())) < 0.005  # host sync
    assert m.dnn_linear.in_features == F_ * D_ + 64 and m.dnn_linear.bias is None


def _dense_l2(m, batch_size: int = 4) -> float:
    g = torch.Generator().manual_seed(1)
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    kjt = KeyedJaggedTensor.from_lengths_sync([f"c{i}" for i in range(F_)],
                                              torch.randint(0, 50, (F_ * batch_size,), generator=g),
                                              torch.ones(F_ * batch_size, dtype=torch.int32))
    m(torch.randn(batch_size, 2, generator=g), kjt)
    return float(m.pop_losses().get("l2_dense", 0.0))  # host sync


def _sq(ts) -> float:
    return sum(float(t.detach().pow(2).sum()) for t in ts)  # host sync


def test_xdeepfm_l2_targets():
    m = _model("xDeepFM", dnn_hidden_units=(16,), cin_layer_size=(8, 4), l2_reg_cin=0.1, l2_reg_dnn=0.01,
               l2_reg_linear=0.2)
    want = (0.1 * _sq([c.weight for c in m.cin.conv1ds]) + 0.01 * _sq(m.dnn.weights() + [m.dnn_linear.weight])
            + 0.2 * _sq([m.linear.dense_weight.weight]))
    assert _dense_l2(m) == pytest.approx(want, rel=1e-5)


def test_autoint_l2_targets():
    m = _model("AutoInt", dnn_hidden_units=(16,), l2_reg_dnn=0.01)
    assert _dense_l2(m) == pytest.approx(0.01 * _sq(m.dnn.weights()), rel=1e-5)


def test_fibinet_linear_l2_target():
    m = _model("FiBiNET", dnn_hidden_units=(16,), l2_reg_linear=0.2, l2_reg_dnn=0.0)
    assert _dense_l2(m) == pytest.approx(0.2 * _sq([m.linear.dense_weight.weight]), rel=1e-5)
