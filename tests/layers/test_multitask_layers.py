"""Multi-task blocks (ParallelLinear, ParallelDNN, mix_experts, PLE's extraction level) against straightforward
reference formulations (einsum / bmm / cat of the experts): outputs and gradients in float64, and gradcheck."""

from __future__ import annotations

from typing import Optional

import pytest
import torch
from torch import nn

from dist_ctr.layers.multitask import Gates, ParallelDNN, ParallelLinear, mix_experts
from dist_ctr.models.multitask import PLEConfig, _PLELevel

DT = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-12}


# ---- references -------------------------------------------------------------------------------------------------
def ref_parallel_linear(lin: ParallelLinear, x: torch.Tensor) -> torch.Tensor:
    """``x: (B, N) | (B, K, N) -> (B, K, H)`` by einsum, plus the bias."""
    eq = "bn,knh->bkh" if x.dim() == 2 else "bkn,knh->bkh"
    y = torch.einsum(eq, x, lin.weight)
    return y + lin.bias if lin.bias is not None else y


def ref_parallel_dnn(dnn: ParallelDNN, x: torch.Tensor) -> torch.Tensor:
    """Every layer on the contiguous ``(B, K H)`` matrix: linear, batch norm, activation, dropout."""
    B, K = x.shape[0], dnn.num_parallel
    if not len(dnn.linears):
        return x.unsqueeze(1).expand(B, K, x.shape[-1]) if x.dim() == 2 else x
    for i, lin in enumerate(dnn.linears):
        flat = ref_parallel_linear(lin, x).reshape(B, -1)
        if dnn.bns is not None:
            flat = dnn.bns[i](flat)
        x = dnn.dropout(dnn.acts[i](flat)).view(B, K, -1)
    return x


def ref_gates(gates: Gates, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(ref_parallel_linear(gates.final, ref_parallel_dnn(gates.dnn, x)), dim=-1)


def ref_mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``(B, G, K), (B, K, H) | (B, G, K, H) -> (B, G, H)`` by bmm / einsum."""
    if experts.dim() == 4:
        return torch.einsum("bgk,bgkh->bgh", gates, experts)
    return torch.bmm(gates, experts)


def ref_ple_level(lvl: _PLELevel, task_in: torch.Tensor,
                  shared_in: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Each task's experts as the cat of its specific experts and a copy of the shared ones, mixed by einsum; the
    shared gate mixes the cat of all experts by bmm."""
    B, T, s, m = shared_in.shape[0], lvl.T, lvl.s, lvl.m
    x = task_in if task_in.dim() == 2 else task_in.repeat_interleave(s, dim=1)
    spec = ref_parallel_dnn(lvl.specific, x)  # (B, T s, H)
    shared = ref_parallel_dnn(lvl.shared, shared_in)  # (B, m, H)
    H = spec.shape[-1]
    per_task = torch.cat([spec.reshape(B, T, s, H), shared.unsqueeze(1).expand(B, T, m, H)], dim=2)
    task_out = torch.einsum("btk,btkh->bth", ref_gates(lvl.task_gates, task_in), per_task)
    if lvl.shared_gate is None:
        return task_out, None
    everything = torch.cat([spec, shared], dim=1)  # (B, T s + m, H)
    return task_out, torch.bmm(ref_gates(lvl.shared_gate, shared_in), everything).squeeze(1)


# ---- helpers ----------------------------------------------------------------------------------------------------
def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """float64 with O(1) parameters, so that every path (and every ReLU side) is exercised."""
    g = torch.Generator().manual_seed(seed)
    module = module.to(DT)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * 0.7)
    return module


def _grads(out: torch.Tensor | tuple, leaves: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=DT)).sum() for o in outs)
    return list(torch.autograd.grad(loss, leaves, allow_unused=True))


def _assert_same(module: nn.Module, fn, ref, inputs: list[torch.Tensor]) -> None:
    """Outputs of ``fn`` and ``ref`` and gradients of every input and parameter agree to float64 rounding."""
    leaves = [x.requires_grad_(True) for x in inputs] + list(module.parameters())
    got, want = fn(*inputs), ref(*inputs)
    got_t = got if isinstance(got, tuple) else (got,)
    want_t = want if isinstance(want, tuple) else (want,)
    for a, b in zip(got_t, want_t):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **TOL)
    for name, ga, gb in zip([f"input{i}" for i in range(len(inputs))] + [n for n, _ in module.named_parameters()],
                            _grads(got, leaves), _grads(want, leaves)):
        assert (ga is None) == (gb is None), name
        if ga is not None:
            torch.testing.assert_close(ga, gb, **TOL, msg=lambda m: f"{name}: {m}")


# ---- ParallelLinear / ParallelDNN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("three_d", [False, True])
def test_parallel_linear_matches_einsum(bias, three_d):
    lin = _randomise(ParallelLinear(5, 3, 4, bias=bias))
    x = torch.randn(6, 3, 5, dtype=DT) if three_d else torch.randn(6, 5, dtype=DT)
    _assert_same(lin, lin, lambda x: ref_parallel_linear(lin, x), [x])
    # The same 3-d input in another memory order (a transposed view) gives the same result.
    if three_d:
        xt = x.detach().transpose(0, 1).contiguous().transpose(0, 1)
        torch.testing.assert_close(lin(xt), ref_parallel_linear(lin, x.detach()), **TOL)
    small = _randomise(ParallelLinear(3, 2, 2, bias=bias))
    xs = torch.randn(4, 2, 3, dtype=DT) if three_d else torch.randn(4, 3, dtype=DT)
    assert torch.autograd.gradcheck(lambda x, *ps: small(x), [xs.requires_grad_(True), *small.parameters()])


@pytest.mark.parametrize("activation,use_bn,dropout", [
    ("relu", False, 0.0), ("prelu", False, 0.0), ("sigmoid", False, 0.0), ("relu", True, 0.0), ("dice", False, 0.0),
])
@pytest.mark.parametrize("three_d", [False, True])
def test_parallel_dnn_matches_the_flat_reference(activation, use_bn, dropout, three_d):
    dnn = _randomise(ParallelDNN(5, 3, (6, 4), activation, dropout, use_bn)).train()
    x = torch.randn(8, 3, 5, dtype=DT) if three_d else torch.randn(8, 5, dtype=DT)
    _assert_same(dnn, dnn, lambda x: ref_parallel_dnn(dnn, x), [x])
    if not use_bn and activation != "dice":
        small = _randomise(ParallelDNN(3, 2, (3, 2), activation, dropout, use_bn))
        xs = torch.randn(4, 3, dtype=DT).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x, *ps: small(x), [xs, *small.parameters()])


def test_parallel_dnn_dropout_mask_follows_the_logical_order():
    """With dropout active in training, the same seed drops the same units as the flat reference."""
    dnn = _randomise(ParallelDNN(5, 3, (6, 4), "relu", dropout_rate=0.5)).train()
    x = torch.randn(8, 3, 5, dtype=DT)
    torch.manual_seed(7)
    got = dnn(x)
    torch.manual_seed(7)
    want = ref_parallel_dnn(dnn, x)
    torch.testing.assert_close(got, want, **TOL)
    dnn.eval()  # no dropout: the per-element path
    torch.testing.assert_close(dnn(x), ref_parallel_dnn(dnn, x), **TOL)


# ---- mix_experts --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("G,K", [(2, 3), (1, 3), (3, 1), (1, 1), (2, 2)])
@pytest.mark.parametrize("per_gate", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_mix_experts_matches_bmm(G, K, per_gate, transposed):
    B, H = 5, 4
    g = torch.softmax(torch.randn(B, G, K, dtype=DT), -1)
    shape = (B, G, K, H) if per_gate else (B, K, H)
    e = torch.randn(shape, dtype=DT)
    if transposed:  # experts as ParallelDNN returns them: a (B, K, H) view of (K, B, H) memory
        e = e.transpose(0, 1).contiguous().transpose(0, 1)
    g.requires_grad_(True)
    e.requires_grad_(True)
    got, want = mix_experts(g, e), ref_mix(g, e)
    assert got.shape == (B, G, H)
    torch.testing.assert_close(got, want, **TOL)
    w = torch.randn(B, G, H, dtype=DT)
    for a, b in zip(torch.autograd.grad((got * w).sum(), [g, e]), torch.autograd.grad((want * w).sum(), [g, e])):
        torch.testing.assert_close(a, b, **TOL)
    assert torch.autograd.gradcheck(mix_experts, [g[:3].detach().requires_grad_(True),
                                                  e[:3].detach().requires_grad_(True)])


# ---- PLE extraction level -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,s,m", [(2, 1, 1), (3, 2, 1), (2, 1, 3), (2, 2, 2)])
@pytest.mark.parametrize("last", [False, True])
@pytest.mark.parametrize("task_in_3d", [False, True])
def test_ple_level_matches_the_cat_einsum_reference(T, s, m, last, task_in_3d):
    cfg = PLEConfig(shared_expert_num=m, specific_expert_num=s, expert_dnn_hidden_units=(6, 4),
                    gate_dnn_hidden_units=(3,))
    N = 5
    lvl = _randomise(_PLELevel(N, T, cfg, last=last)).train()
    task_in = torch.randn(7, T, N, dtype=DT) if task_in_3d else torch.randn(7, N, dtype=DT)
    shared_in = torch.randn(7, N, dtype=DT)
    _assert_same(lvl, lvl, lambda t, sh: ref_ple_level(lvl, t, sh), [task_in, shared_in])


def test_ple_level_gradcheck():
    cfg = PLEConfig(shared_expert_num=2, specific_expert_num=1, expert_dnn_hidden_units=(3,),
                    gate_dnn_hidden_units=(2,))
    lvl = _randomise(_PLELevel(3, 2, cfg, last=False))
    params = list(lvl.parameters())
    t = torch.randn(3, 2, 3, dtype=DT, requires_grad=True)
    sh = torch.randn(3, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, sh, *ps: lvl(t, sh), [t, sh, *params])


def test_ple_level_state_dict_layout():
    """Parameter names and shapes of a level (the layout the DeepCTR-Torch comparisons rely on)."""
    cfg = PLEConfig(shared_expert_num=1, specific_expert_num=1, expert_dnn_hidden_units=(256, 128),
                    gate_dnn_hidden_units=(64,))
    shapes = {k: tuple(v.shape) for k, v in _PLELevel(429, 2, cfg, last=False).state_dict().items()}
    assert shapes == {
        "specific.linears.0.weight": (2, 429, 256), "specific.linears.0.bias": (2, 256),
        "specific.linears.1.weight": (2, 256, 128), "specific.linears.1.bias": (2, 128),
        "shared.linears.0.weight": (1, 429, 256), "shared.linears.0.bias": (1, 256),
        "shared.linears.1.weight": (1, 256, 128), "shared.linears.1.bias": (1, 128),
        "task_gates.dnn.linears.0.weight": (2, 429, 64), "task_gates.dnn.linears.0.bias": (2, 64),
        "task_gates.final.weight": (2, 64, 2),
        "shared_gate.dnn.linears.0.weight": (1, 429, 64), "shared_gate.dnn.linears.0.bias": (1, 64),
        "shared_gate.final.weight": (1, 64, 3),
    }
