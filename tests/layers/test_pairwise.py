"""Pairwise layers against their formulas, written as loops over DeepCTR's pair order."""

from __future__ import annotations

import itertools

import pytest
import torch

from dist_ctr.layers.pairwise import (
    AFMLayer,
    BiInteractionPooling,
    BilinearInteraction,
    FieldWiseBiInteraction,
    FwFMLayer,
    InnerProductLayer,
    OutterProductLayer,
    pair_indices,
)

B, Fn, D = 3, 5, 4
PAIRS = list(itertools.combinations(range(Fn), 2))


@pytest.fixture()
def e() -> torch.Tensor:
    return torch.randn(B, Fn, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_pair_order_is_itertools_combinations():
    rows, cols = pair_indices(Fn)
    assert list(zip(rows.tolist(), cols.tolist())) == PAIRS


def test_bi_interaction_is_half_square_of_sum_minus_sum_of_squares_and_the_pair_sum(e):
    out = BiInteractionPooling()(e)
    assert out.shape == (B, 1, D)
    torch.testing.assert_close(out[:, 0], 0.5 * (e.sum(1) ** 2 - (e**2).sum(1)))
    torch.testing.assert_close(out[:, 0], sum(e[:, i] * e[:, j] for i, j in PAIRS))


def test_inner_product_in_deepctr_pair_order(e):
    out = InnerProductLayer()(e)
    want = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in PAIRS], dim=1).unsqueeze(-1)
    torch.testing.assert_close(out, want)
    prods = InnerProductLayer(reduce_sum=False)(list(e.split(1, dim=1)))  # DeepCTR's list input
    torch.testing.assert_close(prods, torch.stack([e[:, i] * e[:, j] for i, j in PAIRS], dim=1))


@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_outer_product_kernels(e, kernel_type):
    layer = OutterProductLayer(Fn, D, kernel_type).double()
    W = layer.kernel.detach()
    out = layer(e)
    assert out.shape == (B, len(PAIRS))
    for p, (i, j) in enumerate(PAIRS):
        for b in range(B):
            ei, ej = e[b, i], e[b, j]
            if kernel_type == "mat":
                want = ej @ W[:, p, :] @ ei  # sum_{k,l} W[k, p, l] e_i[l] e_j[k]
            elif kernel_type == "vec":
                want = (ei * ej * W[p]).sum()
            else:
                want = W[p, 0] * (ei * ej).sum()
            torch.testing.assert_close(out[b, p], want)


def test_outer_product_rejects_bad_kernel_and_single_field():
    with pytest.raises(ValueError, match="kernel_type"):
        OutterProductLayer(3, 4, "matrix")
    with pytest.raises(ValueError, match="at least 2 fields"):
        OutterProductLayer(1, 4)


@pytest.mark.parametrize("bilinear_type", ["all", "each", "interaction"])
def test_bilinear_interaction(e, bilinear_type):
    layer = BilinearInteraction(Fn, D, bilinear_type).double()
    W = layer.weight.detach()
    out = layer(e)
    assert out.shape == (B, len(PAIRS), D)
    for p, (i, j) in enumerate(PAIRS):
        k = {"all": 0, "each": i, "interaction": p}[bilinear_type]
        torch.testing.assert_close(out[:, p], torch.nn.functional.linear(e[:, i], W[k]) * e[:, j])
    # every weight matrix is used: a gradient reaches all of them
    out.sum().backward()
    assert (layer.weight.grad.flatten(1).abs().sum(1) > 0).all()


def test_afm_layer_matches_loop(e):
    layer = AFMLayer(D, attention_factor=3).double().eval()
    Wa, ba, h, pp = (t.detach() for t in (layer.attention_W, layer.attention_b, layer.projection_h,
                                           layer.projection_p))
    out = layer(e)
    for b in range(B):
        bi = torch.stack([e[b, i] * e[b, j] for i, j in PAIRS])  # (P, D)
        a = torch.softmax(torch.relu(bi @ Wa + ba) @ h, dim=0)  # (P, 1)
        torch.testing.assert_close(out[b], (a * bi).sum(0) @ pp)
    assert layer.normalized_att_score.shape == (B, len(PAIRS), 1)


def test_fwfm_is_the_field_weighted_pair_sum(e):
    layer = FwFMLayer(Fn).double()
    R = layer.field_strengths.detach()
    want = sum(R[i, j] * (e[:, i] * e[:, j]).sum(-1) for i, j in PAIRS).unsqueeze(1)
    torch.testing.assert_close(layer(e), want)
    with pytest.raises(ValueError, match="built for 5 fields got 4"):
        layer(e[:, :4])


def test_field_wise_bi_interaction_matches_deepctr_formula(e):
    sizes = [2, 1, 2]
    groups = torch.tensor([0, 0, 1, 2, 2])
    layer = FieldWiseBiInteraction(3, D).double()
    with torch.no_grad():  # non-trivial parameters
        layer.kernel_mf.copy_(torch.tensor([[0.3], [-1.2], [2.0]]))
        layer.kernel_fm.copy_(torch.tensor([[0.5], [0.1], [-0.7]]))
        layer.bias_mf.copy_(torch.arange(D) * 0.1)
        layer.bias_fm.copy_(torch.ones(D))
    parts = list(e.split(sizes, dim=1))
    s = [p.sum(1) for p in parts]  # (B, D) per group
    h_mf = sum(layer.kernel_mf[k, 0] * s[g] * s[h] for k, (g, h) in enumerate(itertools.combinations(range(3), 2)))
    h_fm = sum(layer.kernel_fm[g, 0] * (s[g] ** 2 - (parts[g] ** 2).sum(1)) for g in range(3))
    want = (h_mf + layer.bias_mf + h_fm + layer.bias_fm).detach()
    torch.testing.assert_close(layer(parts), want)
    torch.testing.assert_close(layer(e, groups), want)


def test_field_wise_bi_interaction_with_one_group_has_no_pair_weights(e):
    layer = FieldWiseBiInteraction(1, D).double()
    assert layer.kernel_mf is None
    torch.testing.assert_close(layer([e]), 0.5 * (e.sum(1) ** 2 - (e**2).sum(1)))  # kernel_fm starts at 0.5


# Outputs and gradients (inputs and every parameter) against explicit per-pair loops, float64, on small shapes
# including the edge cases of one pair (F=2) and one row (B=1).
SHAPES = [(3, 5, 4), (1, 2, 4), (2, 2, 1), (1, 4, 3)]


def _random_fields(b: int, f: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _assert_outputs_and_grads_match(layer, reference, x: torch.Tensor) -> None:
    """``layer(x)`` equals ``reference(x)`` (written with the layer's own parameters), and so do the gradients of a
    random projection of the output with respect to ``x`` and every parameter."""
    x_got, x_want = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = layer(x_got), reference(x_want)
    torch.testing.assert_close(got, want)
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=got.dtype)
    params = list(layer.parameters())
    grads_got = torch.autograd.grad(got, [x_got, *params], g)
    grads_want = torch.autograd.grad(want, [x_want, *params], g)
    for name, a, b in zip(["inputs", *(n for n, _ in layer.named_parameters())], grads_got, grads_want):
        torch.testing.assert_close(a, b, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize(("b", "f", "d"), SHAPES)
@pytest.mark.parametrize("reduce_sum", [True, False])
def test_inner_product_outputs_and_gradients_match_pair_loop(b, f, d, reduce_sum):
    pairs = list(itertools.combinations(range(f), 2))

    def reference(x):
        prods = torch.stack([x[:, i] * x[:, j] for i, j in pairs], dim=1)  # (B, P, D)
        return prods.sum(dim=2, keepdim=True) if reduce_sum else prods

    _assert_outputs_and_grads_match(InnerProductLayer(reduce_sum), reference, _random_fields(b, f, d))


def test_inner_product_of_one_field_is_empty():
    assert InnerProductLayer()(_random_fields(2, 1, 3)).shape == (2, 0, 1)


@pytest.mark.parametrize(("b", "f", "d"), SHAPES)
@pytest.mark.parametrize("kernel_type", ["mat", "vec", "num"])
def test_outer_product_outputs_and_gradients_match_pair_loop(b, f, d, kernel_type):
    layer = OutterProductLayer(f, d, kernel_type).double()
    W = layer.kernel
    pairs = list(itertools.combinations(range(f), 2))

    def reference(x):
        cols = []
        for p, (i, j) in enumerate(pairs):
            ei, ej = x[:, i], x[:, j]  # (B, D)
            if kernel_type == "mat":
                cols.append(torch.einsum("bk,kl,bl->b", ej, W[:, p, :], ei))  # sum_{k,l} W[k, p, l] e_i[l] e_j[k]
            elif kernel_type == "vec":
                cols.append((ei * ej * W[p]).sum(-1))
            else:
                cols.append(W[p, 0] * (ei * ej).sum(-1))
        return torch.stack(cols, dim=1)  # (B, P)

    _assert_outputs_and_grads_match(layer, reference, _random_fields(b, f, d))


def test_outer_product_keeps_parameter_names_and_shapes():
    for kernel_type, shape in (("mat", (4, 10, 4)), ("vec", (10, 4)), ("num", (10, 1))):
        layer = OutterProductLayer(5, 4, kernel_type)
        assert list(layer.state_dict()) == ["kernel"] and layer.kernel.shape == shape


@pytest.mark.parametrize(("b", "f", "d"), SHAPES)
@pytest.mark.parametrize("attention_factor", [1, 3])
def test_afm_outputs_and_gradients_match_pair_loop(b, f, d, attention_factor):
    layer = AFMLayer(d, attention_factor).double()
    with torch.no_grad():  # a non-zero bias so that it gets a gradient through the ReLU
        layer.attention_b.copy_(torch.linspace(-0.5, 0.5, attention_factor))
    pairs = list(itertools.combinations(range(f), 2))

    def reference(x):
        bi = torch.stack([x[:, i] * x[:, j] for i, j in pairs], dim=1)  # (B, P, D)
        att = torch.relu(torch.einsum("bpd,da->bpa", bi, layer.attention_W) + layer.attention_b)  # (B, P, A)
        a = torch.softmax(torch.einsum("bpa,ao->bpo", att, layer.projection_h), dim=1)  # (B, P, 1)
        return (a * bi).sum(dim=1) @ layer.projection_p  # (B, 1)

    _assert_outputs_and_grads_match(layer, reference, _random_fields(b, f, d))
    assert layer.normalized_att_score.shape == (b, len(pairs), 1)
    assert list(layer.state_dict()) == ["attention_W", "attention_b", "projection_h", "projection_p"]


def test_afm_dropout_masks_the_pooled_vector():
    layer = AFMLayer(4, 3, dropout_rate=0.5).double().train()
    x = _random_fields(8, 5, 4)
    torch.manual_seed(3)
    got = layer(x)
    layer.eval()
    bi = torch.stack([x[:, i] * x[:, j] for i, j in itertools.combinations(range(5), 2)], dim=1)  # (B, P, D)
    pooled = (layer.normalized_att_score * bi).sum(dim=1)  # (B, D)
    torch.manual_seed(3)
    want = torch.nn.functional.dropout(pooled, 0.5, training=True) @ layer.projection_p  # same mask draws
    torch.testing.assert_close(got, want.detach())
