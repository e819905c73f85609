"""Dice's fused training-mode function against the plain batch norm + sigmoid composition."""

from __future__ import annotations

import copy

import pytest
import torch

from dist_ctr.layers.activation import Dice, _DiceTrain


def _plain_dice(d: Dice, x: torch.Tensor) -> torch.Tensor:
    """The formula as separate torch ops (the unfused reference), with the layer's own batch norm."""
    flat = x.reshape(-1, d.hidden_size)
    p = torch.sigmoid(d.bn(flat)).view_as(x)
    return p * x + (1.0 - p) * d.alpha * x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(64, 20, 8), (7, 8)])
def test_dice_fused_training_step_matches_the_plain_ops(dtype, shape):
    """Values, the input's and every parameter's gradient and the running statistics over two training steps."""
    torch.manual_seed(0)
    fused = Dice(8).to(dtype).train()
    with torch.no_grad():
        fused.alpha.uniform_(-0.5, 1.5)
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.bias.normal_(0, 0.3)
    plain = copy.deepcopy(fused)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for step in range(2):
        x = (torch.randn(*shape, dtype=dtype) * (1.0 + step) + step)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn(*shape, dtype=dtype)
        out, ref = fused(x1), _plain_dice(plain, x2)
        assert out.shape == x.shape
        torch.testing.assert_close(out, ref, **tol)
        out.backward(g)
        ref.backward(g)
        torch.testing.assert_close(x1.grad, x2.grad, **tol)
        for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, **tol, msg=name)
    for name, buf in fused.named_buffers():
        torch.testing.assert_close(buf, dict(plain.named_buffers())[name], **tol, msg=name)
    assert int(fused.bn.num_batches_tracked) == 2


def test_dice_fused_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(3, dtype=torch.float64).add(0.5).requires_grad_()
    beta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _DiceTrain.apply(*a, 1e-8)[0], (x, gamma, beta, alpha))


def test_dice_defers_to_a_batch_norm_whose_statistics_span_processes():
    """A batch norm that sums statistics over processes (the engine's global batch norm at world size > 1) runs its
    own forward; eval mode uses the running statistics."""
    calls = []

    class Spanning(torch.nn.BatchNorm1d):
        def spans_processes(self) -> bool:
            return True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(tuple(x.shape))
            return super().forward(x)

    d = Dice(4).train()
    d.bn = Spanning(4, eps=1e-8)
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(d(x), _plain_dice(copy.deepcopy(d), x))
    assert calls[0] == (15, 4)
    d.eval()
    torch.testing.assert_close(d(x), _plain_dice(d, x))
