"""InteractingLayer, SENETLayer and LogTransformLayer against their formulas."""

from __future__ import annotations

import pytest
import torch

from dist_ctr.layers.field_attention import InteractingLayer, LogTransformLayer, SENETLayer

B, Fn, D = 3, 5, 6


@pytest.fixture()
def e() -> torch.Tensor:
    return torch.randn(B, Fn, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(("heads", "use_res", "scaling"), [(2, True, False), (3, False, True), (1, True, True)])
def test_interacting_layer_matches_per_head_loop(e, heads, use_res, scaling):
    layer = InteractingLayer(D, heads, use_res, scaling).double()
    Wq, Wk, Wv = (t.detach() for t in (layer.W_Query, layer.W_key, layer.W_Value))
    d = D // heads
    outs = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        q, k, v = e @ Wq[:, cols], e @ Wk[:, cols], e @ Wv[:, cols]  # (B, F, d)
        s = torch.einsum("bid,bjd->bij", q, k) / (d**0.5 if scaling else 1.0)
        outs.append(torch.softmax(s, dim=-1) @ v)
    want = torch.cat(outs, dim=-1)
    if use_res:
        want = want + e @ layer.W_Res.detach()
    torch.testing.assert_close(layer(e), torch.relu(want))
    assert layer.normalized_att_scores.shape == (B, heads, Fn, Fn)


def test_interacting_layer_rejects_heads_not_dividing_dim():
    with pytest.raises(ValueError, match="not a multiple of head_num 4"):
        InteractingLayer(6, 4)


def test_senet_reweights_each_field(e):
    layer = SENETLayer(Fn, reduction_ratio=2).double()
    assert layer.reduction_size == 2
    W1, W2 = layer.excitation[0].weight.detach(), layer.excitation[2].weight.detach()
    a = torch.relu(torch.relu(e.mean(-1) @ W1.T) @ W2.T)  # (B, F)
    torch.testing.assert_close(layer(e), e * a.unsqueeze(-1))


def test_log_transform_neurons_are_products_of_powers(e):
    N = 3
    layer = LogTransformLayer(Fn, D, N).double().eval()  # fresh running stats: BN(x) = x / sqrt(1 + eps)
    W, b = layer.ltl_weights.detach(), layer.ltl_biases.detach()
    c = 1.0 / (1.0 + layer.bn[0].eps) ** 0.5
    out = layer(e).view(B, D, N)
    for n in range(N):
        # exp(c * sum_f W_fn log|e_f| + b_n) = exp(b_n) * prod_f |e_f| ** (c W_fn), per dim
        want = torch.exp(b[0, 0, n]) * torch.prod(e.abs() ** (c * W[:, n]).view(1, Fn, 1), dim=1)  # (B, D)
        torch.testing.assert_close(out[:, :, n], c * want)
    assert layer(e).shape == (B, D * N)


def test_log_transform_is_finite_on_zero_embeddings():
    layer = LogTransformLayer(Fn, D, 4).train()
    out = layer(torch.zeros(2, Fn, D))
    assert torch.isfinite(out).all()
