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


@pytest.mark.parametrize(("b", "f", "d", "heads"), [(3, 5, 6, 2), (1, 2, 4, 4), (2, 2, 3, 1), (1, 4, 8, 8)])
@pytest.mark.parametrize(("use_res", "scaling"), [(True, False), (False, True), (True, True)])
def test_interacting_layer_outputs_gradients_and_scores_match_per_head_loop(b, f, d, heads, use_res, scaling):
    """Outputs and gradients (inputs and every parameter) against a per-head loop, float64, incl. F=2 and B=1."""
    layer = InteractingLayer(d, heads, use_res, scaling).double()
    assert layer.normalized_att_scores is None
    x = torch.randn(b, f, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = d // heads
    ref_scores = []

    def reference(e):
        outs = []
        for h in range(heads):
            cols = slice(h * w, (h + 1) * w)
            q, k, v = e @ layer.W_Query[:, cols], e @ layer.W_key[:, cols], e @ layer.W_Value[:, cols]  # (B, F, w)
            s = torch.einsum("bid,bjd->bij", q, k) / (w**0.5 if scaling else 1.0)  # (B, F, F)
            ref_scores.append(torch.softmax(s, dim=-1))
            outs.append(ref_scores[-1] @ v)
        out = torch.cat(outs, dim=-1)  # (B, F, D)
        return torch.relu(out + e @ layer.W_Res if use_res else out)

    x_got, x_want = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = layer(x_got), reference(x_want)
    torch.testing.assert_close(got, want)
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=got.dtype)
    names = ["inputs"] + [n for n, _ in layer.named_parameters()]
    params = list(layer.parameters())
    for name, a, c in zip(names, torch.autograd.grad(got, [x_got, *params], g),
                          torch.autograd.grad(want, [x_want, *params], g)):
        torch.testing.assert_close(a, c, msg=lambda m: f"gradient of {name}: {m}")
    scores = layer.normalized_att_scores
    assert not scores.requires_grad
    torch.testing.assert_close(scores, torch.stack(ref_scores, dim=1).detach())  # (B, H, F, F)
    assert list(layer.state_dict()) == ["W_Query", "W_key", "W_Value"] + (["W_Res"] if use_res else [])
