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
