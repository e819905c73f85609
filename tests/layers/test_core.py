"""DNN (shapes, formula, batch norm, dropout only in training, init std, weights()) and PredictionLayer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dist_ctr.layers.core import DNN, PredictionLayer, activation_layer


def test_dnn_shapes_and_identity_when_empty():
    dnn = DNN(6, (8, 5, 3))
    assert dnn.output_dim == 3
    assert dnn(torch.randn(4, 6)).shape == (4, 3)
    assert dnn(torch.randn(2, 7, 6)).shape == (2, 7, 3)  # (..., N) without BN
    empty = DNN(6, ())
    x = torch.randn(4, 6)
    assert empty.output_dim == 6 and torch.equal(empty(x), x)


def test_dnn_equals_relu_of_affine_maps():
    dnn = DNN(5, (4, 3), activation="relu", init_std=0.5)
    with torch.no_grad():
        for m in dnn.layers:
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    x = torch.randn(6, 5)
    l1, l2 = [m for m in dnn.layers if isinstance(m, nn.Linear)]
    want = torch.relu(torch.relu(x @ l1.weight.t() + l1.bias) @ l2.weight.t() + l2.bias)
    torch.testing.assert_close(dnn(x), want)


def test_dnn_init_is_deepctr_torch_normal_weights_and_linear_default_bias():
    dnn = DNN(400, (300, 200), init_std=0.02)
    ws = dnn.weights()
    assert [tuple(w.shape) for w in ws] == [(300, 400), (200, 300)]
    for w in ws:
        assert float(w.std()) == pytest.approx(0.02, rel=0.05)
        assert abs(float(w.mean())) < 1e-3
    linears = [m for m in dnn.layers if isinstance(m, nn.Linear)]
    for m, fan_in in zip(linears, (400, 300)):  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std bound / sqrt(3)
        bound = fan_in ** -0.5
        assert float(m.bias.abs().max()) <= bound
        assert float(m.bias.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.2)


def test_dnn_batch_norm_normalises_each_unit_in_training():
    dnn = DNN(5, (7,), activation="linear", use_bn=True, init_std=1.0)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in dnn.layers) == 1
    x = torch.randn(64, 5) * 3 + 2
    y = dnn.train()(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(7), atol=1e-3, rtol=0)
    # Eval uses the running statistics: not re-normalised per batch.
    y_eval = dnn.eval()(x)
    assert not torch.allclose(y_eval.mean(0), torch.zeros(7), atol=1e-2)
    # BN's affine parameters are not L2 targets.
    assert len(dnn.weights()) == 1


def test_dnn_dropout_only_in_training():
    dnn = DNN(16, (32, 32), dropout_rate=0.5, init_std=0.5)
    x = torch.randn(8, 16)
    dnn.eval()
    a, b = dnn(x), dnn(x)
    assert torch.equal(a, b)
    l1, l2 = [m for m in dnn.layers if isinstance(m, nn.Linear)]
    torch.testing.assert_close(a, torch.relu(torch.relu(x @ l1.weight.t() + l1.bias) @ l2.weight.t() + l2.bias))
    dnn.train()
    torch.manual_seed(0)
    c = dnn(x)
    d = dnn(x)
    assert not torch.equal(c, d)


@pytest.mark.parametrize(("name", "cls"), [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh),
                                           ("prelu", nn.PReLU), ("linear", nn.Identity)])
def test_activation_names(name, cls):
    assert isinstance(activation_layer(name), cls)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="'swoosh'"):
        DNN(3, (2,), activation="swoosh")


def test_prediction_layer_adds_a_learnable_bias():
    p = PredictionLayer("binary")
    assert p.bias is not None and p.bias.shape == (1,)
    with torch.no_grad():
        p.bias.fill_(0.7)
    x = torch.randn(5, 1)
    torch.testing.assert_close(p(x), x + 0.7)
    assert torch.equal(PredictionLayer("regression", use_bias=False)(x), x)
    y = p(x).sum()
    y.backward()
    assert float(p.bias.grad) == 5.0


def test_prediction_layer_rejects_unknown_task():
    with pytest.raises(ValueError, match="'ranking'"):
        PredictionLayer("ranking")
