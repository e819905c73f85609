"""InteractingLayer, SENETLayer and LogTransformLayer against their formulas."""

from __future__ import annotations

import copy

import pytest
import torch

from dist_ctr.layers.field_attention import InteractingLayer, LogTransformLayer, SENETLayer, _ExpBatchNorm, _Scratch

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


def _plain_log_transform(layer: LogTransformLayer, e: torch.Tensor) -> torch.Tensor:
    """The layer's formula as separate torch ops (the unfused reference), with the layer's own modules."""
    x = torch.clamp(e.abs(), min=1e-7).transpose(1, 2)  # (B, D, F)
    y = torch.exp(layer.bn[0](torch.log(x)) @ layer.ltl_weights + layer.ltl_biases)  # (B, D, N)
    return layer.bn[1](y).flatten(start_dim=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_transform_fused_training_step_matches_the_plain_ops(dtype):
    """Training mode runs BN(exp(. W + b)) fused: values, every gradient and the running statistics equal the
    plain composition of torch ops (two steps, so the running statistics are updated twice)."""
    torch.manual_seed(0)
    fused = LogTransformLayer(7, 4, 5).to(dtype).train()
    with torch.no_grad():
        fused.ltl_biases.normal_(0, 0.5)
        fused.bn[1].weight.uniform_(0.5, 1.5)
        fused.bn[1].bias.normal_(0, 0.3)
    plain = copy.deepcopy(fused)
    tol = {} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}
    for step in range(2):
        e = torch.randn(9, 7, 4, dtype=dtype) * (1.0 + step)
        e1, e2 = e.clone().requires_grad_(), e.clone().requires_grad_()
        g = torch.randn(9, 4 * 5, dtype=dtype)
        out, ref = fused(e1), _plain_log_transform(plain, e2)
        torch.testing.assert_close(out, ref, **tol)
        out.backward(g)
        ref.backward(g)
        torch.testing.assert_close(e1.grad, e2.grad, **tol)
        for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
    for name, buf in fused.named_buffers():
        torch.testing.assert_close(buf, dict(plain.named_buffers())[name], **tol, msg=name)
    assert int(fused.bn[1].num_batches_tracked) == 2
    fused.eval()
    plain.eval()
    e = torch.randn(3, 7, 4, dtype=dtype)
    torch.testing.assert_close(fused(e), _plain_log_transform(plain, e), **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_log_transform_with_a_fused_head_matches_the_plain_ops(dtype, bias):
    """``layer(e, head=linear)`` equals ``linear(layer(e))`` in values, every gradient (the head's too) and running
    statistics, over two training steps; in eval mode too."""
    torch.manual_seed(0)
    fused = LogTransformLayer(7, 4, 5).to(dtype).train()
    head = torch.nn.Linear(4 * 5, 3, bias=bias).to(dtype)
    with torch.no_grad():
        fused.ltl_biases.normal_(0, 0.5)
        fused.bn[1].weight.uniform_(0.5, 1.5)
        fused.bn[1].bias.normal_(0, 0.3)
    plain, plain_head = copy.deepcopy(fused), copy.deepcopy(head)
    tol = {} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}
    for step in range(2):
        e = torch.randn(9, 7, 4, dtype=dtype) * (1.0 + step)
        e1, e2 = e.clone().requires_grad_(), e.clone().requires_grad_()
        g = torch.randn(9, 3, dtype=dtype)
        out, ref = fused(e1, head=head), plain_head(_plain_log_transform(plain, e2))
        assert out.shape == (9, 3)
        torch.testing.assert_close(out, ref, **tol)
        out.backward(g)
        ref.backward(g)
        torch.testing.assert_close(e1.grad, e2.grad, **tol)
        for (name, p), q in zip([*fused.named_parameters(), *head.named_parameters()],
                                [*plain.parameters(), *plain_head.parameters()]):
            torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
    for name, buf in fused.named_buffers():
        torch.testing.assert_close(buf, dict(plain.named_buffers())[name], **tol, msg=name)
    fused.eval()
    plain.eval()
    e = torch.randn(3, 7, 4, dtype=dtype)
    torch.testing.assert_close(fused(e, head=head), plain_head(_plain_log_transform(plain, e)), **tol)


def test_log_transform_with_a_head_reused_buffers_keep_gradients_right():
    """Under a head the normalised output is a reused buffer too: two forwards before one backward keep the plain
    gradients; a retained graph whose buffers a later step reused fails loudly."""
    torch.manual_seed(0)
    fused = LogTransformLayer(5, 3, 4).double().train()
    head = torch.nn.Linear(12, 2).double()
    plain, plain_head = copy.deepcopy(fused), copy.deepcopy(head)
    e1, e2 = torch.randn(6, 5, 3, dtype=torch.float64), torch.randn(6, 5, 3, dtype=torch.float64)
    (fused(e1, head=head).square().sum() + fused(e2, head=head).sum()).backward()
    (plain_head(_plain_log_transform(plain, e1)).square().sum()
     + plain_head(_plain_log_transform(plain, e2)).sum()).backward()
    for p, q in zip([*fused.parameters(), *head.parameters()], [*plain.parameters(), *plain_head.parameters()]):
        torch.testing.assert_close(p.grad, q.grad)
    out = fused(e1, head=head)
    out.sum().backward(retain_graph=True)
    fused(e2, head=head).sum().backward()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_log_transform_reused_buffers_keep_gradients_right():
    """Two forwards before one backward (the saved exp output of the first is not reused by the second) give the
    plain ops' gradients; a retained graph whose saved buffer was reused by a later forward fails loudly."""
    torch.manual_seed(0)
    fused = LogTransformLayer(5, 3, 4).double().train()
    plain = copy.deepcopy(fused)
    e1, e2 = torch.randn(6, 5, 3, dtype=torch.float64), torch.randn(6, 5, 3, dtype=torch.float64)
    (fused(e1).square().sum() + fused(e2).sum()).backward()
    (_plain_log_transform(plain, e1).square().sum() + _plain_log_transform(plain, e2).sum()).backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    out = fused(e1)
    out.sum().backward(retain_graph=True)
    fused(e2).sum().backward()  # reuses the released buffer of the retained graph
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_log_transform_defers_to_a_batch_norm_whose_statistics_span_processes():
    """A batch norm that sums its statistics over processes (``spans_processes()``, the engine's global batch norm
    at world size > 1) runs its own forward; one that does not (world size 1) takes the fused path."""
    calls = []

    class Spanning(torch.nn.BatchNorm1d):
        spans = True

        def spans_processes(self) -> bool:
            return self.spans

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return super().forward(x)

    layer = LogTransformLayer(5, 3, 4).train()
    layer.bn[1] = Spanning(3)
    layer(torch.randn(6, 5, 3))
    assert calls == [(6, 3, 4)]
    layer.bn[1].spans = False
    layer(torch.randn(6, 5, 3))
    assert calls == [(6, 3, 4)] and int(layer.bn[1].num_batches_tracked) == 2


def test_exp_batch_norm_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(6 * 3, 4, dtype=torch.float64, requires_grad=True)
    w = (0.3 * torch.randn(4, 5, dtype=torch.float64)).requires_grad_()
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(3, dtype=torch.float64).add(0.5).requires_grad_()
    beta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _ExpBatchNorm.apply(*a, None, None, 1e-5, 3, _Scratch(), True)[0],
                                    (x, w, b, gamma, beta))
    head_w = torch.randn(2, 3 * 5, dtype=torch.float64, requires_grad=True)
    head_b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _ExpBatchNorm.apply(*a, 1e-5, 3, _Scratch(), True)[0],
                                    (x, w, b, gamma, beta, head_w, head_b))


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
