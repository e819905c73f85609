"""FM, CrossNet, CrossNetMix, CIN against their formulas, each computed by a slow independent reference
(explicit Python loops over samples, fields, layers and experts) in float64 on random inputs."""

from __future__ import annotations

import itertools

import pytest
import torch

from dist_ctr.layers.interaction import CIN, FM, CrossNet, CrossNetMix


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """float64 copy with every parameter random (biases non-zero, so their place in the formula is tested)."""
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    return module


# ---- FM -------------------------------------------------------------------------------------------------------
def test_fm_equals_sum_of_pairwise_inner_products():
    e = torch.randn(5, 6, 3, dtype=torch.float64)
    want = torch.zeros(5, 1, dtype=torch.float64)
    for b in range(5):
        for i, j in itertools.combinations(range(6), 2):
            want[b, 0] += float(e[b, i] @ e[b, j])
    got = FM()(e)
    assert got.shape == (5, 1)
    torch.testing.assert_close(got, want)


def test_fm_of_one_field_is_zero():
    torch.testing.assert_close(FM()(torch.randn(3, 1, 4)), torch.zeros(3, 1))


# ---- CrossNet -------------------------------------------------------------------------------------------------
def _cross_reference(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor, matrix: bool) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        x0 = x[b].clone()
        xl = x0.clone()
        for layer in range(kernels.shape[0]):
            nxt = torch.empty_like(xl)
            for n in range(x.shape[1]):
                if matrix:  # x0 * (W x_l + b) + x_l
                    wx = sum(kernels[layer, n, m] * xl[m] for m in range(x.shape[1]))
                    nxt[n] = x0[n] * (wx + bias[layer, n]) + xl[n]
                else:  # x0 * (x_l . w) + b + x_l
                    dot = sum(xl[m] * kernels[layer, m] for m in range(x.shape[1]))
                    nxt[n] = x0[n] * dot + bias[layer, n] + xl[n]
            xl = nxt
        out[b] = xl
    return out


@pytest.mark.parametrize("parameterization", ["vector", "matrix"])
@pytest.mark.parametrize("layer_num", [1, 3])
def test_crossnet_matches_formula(parameterization, layer_num):
    net = _randomise(CrossNet(5, layer_num=layer_num, parameterization=parameterization), seed=layer_num)
    x = torch.randn(4, 5, dtype=torch.float64) * 0.5
    want = _cross_reference(x, net.kernels.detach(), net.bias.detach(), parameterization == "matrix")
    torch.testing.assert_close(net(x), want)


def test_crossnet_shapes_and_init():
    v, m = CrossNet(64, 2, "vector"), CrossNet(64, 2, "matrix")
    assert v.kernels.shape == (2, 64) and m.kernels.shape == (2, 64, 64)
    assert torch.equal(v.bias, torch.zeros(2, 64)) and torch.equal(m.bias, torch.zeros(2, 64))
    # Xavier normal: std sqrt(2 / (fan_in + fan_out)); vector kernels are (N, 1) columns as in DeepCTR.
    assert float(m.kernels.std()) == pytest.approx((2 / 128) ** 0.5, rel=0.1)
    assert float(v.kernels.std()) == pytest.approx((2 / 65) ** 0.5, rel=0.25)
    with pytest.raises(ValueError, match="parameterization"):
        CrossNet(4, 2, "diagonal")


def test_crossnet_with_zero_layers_is_identity():
    x = torch.randn(3, 4)
    torch.testing.assert_close(CrossNet(4, layer_num=0)(x), x)


# ---- CrossNetMix ----------------------------------------------------------------------------------------------
def _mix_reference(net: CrossNetMix, x: torch.Tensor) -> torch.Tensor:
    U, V, C = net.U_list.detach(), net.V_list.detach(), net.C_list.detach()
    G, bias = net.gating.weight.detach(), net.bias.detach()  # G: (K, N), one gate vector per expert
    L, K, N, R = U.shape
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        x0 = x[b].clone()
        xl = x0.clone()
        for layer in range(L):
            experts, gates = [], []
            for k in range(K):
                v = torch.tensor([sum(V[layer, k, n, r] * xl[n] for n in range(N)) for r in range(R)]).tanh()
                cv = torch.tensor([sum(C[layer, k, q, r] * v[r] for r in range(R)) for q in range(R)]).tanh()
                uv = torch.tensor([sum(U[layer, k, n, r] * cv[r] for r in range(R)) for n in range(N)])
                experts.append(x0 * (uv + bias[layer]))
                gates.append(sum(G[k, n] * xl[n] for n in range(N)))
            w = torch.softmax(torch.stack([torch.as_tensor(g) for g in gates]), dim=0)
            xl = sum(w[k] * experts[k] for k in range(K)) + xl
        out[b] = xl
    return out


def test_crossnetmix_matches_formula():
    net = _randomise(CrossNetMix(5, low_rank=3, num_experts=2, layer_num=2), seed=7)
    x = torch.randn(3, 5, dtype=torch.float64) * 0.5
    torch.testing.assert_close(net(x), _mix_reference(net, x).to(torch.float64))


def test_crossnetmix_gradients_match_the_per_expert_einsum_form():
    """The one-GEMM-per-projection form gives the outputs and gradients (input and every parameter) of the
    per-expert form ``sum_k g_k x_0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b)``, float64, B = 1 included."""
    for B in (4, 1):
        net = _randomise(CrossNetMix(6, low_rank=3, num_experts=3, layer_num=2), seed=11)
        x = torch.randn(B, 6, dtype=torch.float64, requires_grad=True)

        def per_expert() -> torch.Tensor:
            x0 = xl = x
            for i in range(net.layer_num):
                v = torch.tanh(torch.einsum("bn,knr->bkr", xl, net.V_list[i]))  # (B, K, R)
                v = torch.tanh(torch.einsum("bkr,kqr->bkq", v, net.C_list[i]))  # (B, K, R)
                experts = x0.unsqueeze(1) * (torch.einsum("bkr,knr->bkn", v, net.U_list[i]) + net.bias[i])
                gate = torch.softmax(net.gating(xl), dim=1)  # (B, K)
                xl = torch.einsum("bkn,bk->bn", experts, gate) + xl
            return xl

        params = [x, *net.parameters()]
        out, ref = net(x), per_expert()
        torch.testing.assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
            torch.testing.assert_close(a, b)


def test_crossnetmix_shapes_and_init():
    net = CrossNetMix(16, low_rank=4, num_experts=3, layer_num=2)
    assert net.U_list.shape == net.V_list.shape == (2, 3, 16, 4)
    assert net.C_list.shape == (2, 3, 4, 4)
    assert net.gating.weight.shape == (3, 16)
    assert torch.equal(net.bias, torch.zeros(2, 16))
    # One expert whose gate is irrelevant: softmax over one expert is 1.
    one = _randomise(CrossNetMix(4, 2, 1, 1), seed=3)
    x = torch.randn(2, 4, dtype=torch.float64)
    U, V, C, b = one.U_list[0, 0], one.V_list[0, 0], one.C_list[0, 0], one.bias[0]
    want = x * (torch.tanh(torch.tanh(x @ V) @ C.t()) @ U.t() + b) + x
    torch.testing.assert_close(one(x), want)


# ---- CIN ------------------------------------------------------------------------------------------------------
def _cin_reference(cin: CIN, x: torch.Tensor, act) -> torch.Tensor:
    B, F, D = x.shape
    out = []
    for b in range(B):
        x0 = x[b]
        hidden = x0
        pieces = []
        for k, conv in enumerate(cin.conv1ds):
            W, bias = conv.weight.detach()[:, :, 0], conv.bias.detach()  # (H_k, H_{k-1} * F)
            Hk, Hprev = W.shape[0], hidden.shape[0]
            cur = torch.empty(Hk, D, dtype=x.dtype)
            for h in range(Hk):
                for d in range(D):
                    s = bias[h]
                    for i in range(Hprev):
                        for j in range(F):
                            s = s + W[h, i * F + j] * hidden[i, d] * x0[j, d]
                    cur[h, d] = act(s)
            last = k == len(cin.conv1ds) - 1
            if cin.split_half and not last:
                hidden, direct = cur[: Hk // 2], cur[Hk // 2:]
            else:
                hidden, direct = cur, cur
            pieces.append(direct.sum(dim=1))  # sum pooling over D
        out.append(torch.cat(pieces))
    return torch.stack(out)


@pytest.mark.parametrize(("layer_size", "split_half", "activation"), [
    ((4, 3), True, "relu"),
    ((2, 4, 3), True, "linear"),
    ((3, 2), False, "relu"),
])
def test_cin_matches_formula(layer_size, split_half, activation):
    cin = _randomise(CIN(3, layer_size, activation, split_half), seed=len(layer_size))
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    act = (lambda v: torch.clamp(v, min=0)) if activation == "relu" else (lambda v: v)
    got = cin(x)
    assert got.shape == (2, cin.featuremap_num)
    want_width = sum(layer_size[:-1]) // 2 + layer_size[-1] if split_half else sum(layer_size)
    assert cin.featuremap_num == want_width
    torch.testing.assert_close(got, _cin_reference(cin, x, act))


def test_cin_one_linear_layer_is_a_bilinear_form():
    # sum_d sum_{i,j} W_hij e_id e_jd + D * b_h, computed with einsum.
    cin = _randomise(CIN(4, (5,), "linear"), seed=11)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    W = cin.conv1ds[0].weight.detach()[:, :, 0].reshape(5, 4, 4)  # (H, F, F)
    want = torch.einsum("hij,bid,bjd->bh", W, x, x) + 6 * cin.conv1ds[0].bias.detach()
    torch.testing.assert_close(cin(x), want)


def test_cin_gradients_match_finite_differences():
    # CIN's outer product has a hand-written backward (bmm contractions): check it, inputs and weights alike.
    cin = _randomise(CIN(3, (4, 3), "relu", True), seed=5)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cin, (x,))
    W = cin.conv1ds[1].weight
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(cin, {"conv1ds.1.weight": w}, (x,)),
                                    (W.detach().clone().requires_grad_(),))


def test_cin_rejects_odd_inner_layers_with_split_half():
    with pytest.raises(ValueError, match="even"):
        CIN(3, (5, 4), split_half=True)
    assert CIN(3, (5, 4), split_half=False).featuremap_num == 9
    assert CIN(3, (4, 5), split_half=True).featuremap_num == 7
