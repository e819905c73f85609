"""``Dice``: the data-adaptive activation of DIN (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018).

Notation: ``B`` batch, ``L`` sequence length, ``H`` hidden width.

``Dice(x) = p(x) * x + (1 - p(x)) * alpha * x`` with ``p(x) = sigmoid(BN(x))``: a batch norm (with its affine
part, as in DeepCTR-Torch) normalises each of the ``H`` channels over every leading position, and ``alpha`` (one
per channel, starting at 0) is learnt. In training mode (batch statistics of this process) the whole activation
is one autograd function with its backward written out.

>>> import torch
>>> d = Dice(3).eval()
>>> x = torch.randn(2, 5, 3)
>>> tuple(d(x).shape), tuple(d(x[:, 0]).shape)
((2, 5, 3), (2, 3))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dist_ctr.layers.core import fusable_batch_norm, update_running_stats

__all__ = ["Dice"]


class _DiceTrain(torch.autograd.Function):
    """``Dice`` with batch statistics, forward and backward written out.

    ``x (M, H)``: ``M`` positions of ``H`` channels; ``gamma, beta, alpha (H,)``. ``z = gamma (x - mean) rstd +
    beta``, ``p = sigmoid(z)``, ``out = x (alpha + (1 - alpha) p)``. Returns ``(out (M, H), mean (H,), var (H,))``,
    ``var`` biased; the statistics carry no gradient. Saves ``x`` and ``p``; a few passes over ``(M, H)`` in
    each direction instead of the batch norm, sigmoid and half a dozen elementwise kernels with their backwards.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, alpha: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        M = x.shape[0]
        mean = x.sum(0) / M  # (H,)
        centred = x - mean  # (M, H)
        var = centred.square().sum(0) / M  # (H,)
        rstd = torch.rsqrt(var + eps)
        p = torch.addcmul(beta, centred, gamma * rstd, out=centred).sigmoid_()  # (M, H)
        out = torch.addcmul(alpha, p, 1.0 - alpha).mul_(x)  # (M, H)
        ctx.save_for_backward(x, p, mean, rstd, gamma, alpha)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_mean: Any, _grad_var: Any) -> tuple[Any, ...]:
        x, p, mean, rstd, gamma, alpha = ctx.saved_tensors
        M = x.shape[0]
        gx = grad * x  # (M, H): d out / d (alpha + (1 - alpha) p)
        gxp = gx * p  # (M, H)
        d_alpha = gx.sum(0) - gxp.sum(0)  # sum grad x (1 - p)
        dz = torch.addcmul(gxp, gxp, p, value=-1.0).mul_(1.0 - alpha)  # (M, H): grad x (1 - alpha) p (1 - p)
        d_beta = dz.sum(0)
        xhat = torch.sub(x, mean, out=gx).mul_(rstd)  # (M, H), over gx
        d_gamma = (dz * xhat).sum(0)
        # d x = grad (alpha + (1 - alpha) p) + gamma rstd (dz - d_beta / M - xhat d_gamma / M)
        dx = dz.sub_(d_beta / M).addcmul_(xhat, d_gamma / M, value=-1.0).mul_(gamma * rstd)
        dx.addcmul_(grad, torch.addcmul(alpha, p, 1.0 - alpha, out=gxp))
        return dx, d_gamma, d_beta, d_alpha, None


class Dice(nn.Module):
    """Dice activation over the last dimension.

    Args:
        hidden_size (int): ``H``, the channels.
        epsilon (float): batch-norm epsilon (DeepCTR's 1e-8).

    Call: ``forward(x: Tensor (..., H)) -> Tensor (..., H)``. A 3-d input ``(B, L, H)`` is normalised per channel
    over all ``B * L`` positions (DeepCTR-Torch's ``dim=3`` case); padded positions of a sequence take part in the
    training-mode statistics exactly as in DeepCTR-Torch.
    """

    def __init__(self, hidden_size: int, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.bn = nn.BatchNorm1d(self.hidden_size, eps=epsilon)
        self.alpha = nn.Parameter(torch.zeros(self.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"Dice({self.hidden_size}) got an input of width {x.shape[-1]}")
        flat = x.reshape(-1, self.hidden_size)  # (B * L, H)
        bn = self.bn
        if fusable_batch_norm(bn) and flat.shape[0] > 1:
            out, mean, var = _DiceTrain.apply(flat, bn.weight, bn.bias, self.alpha, bn.eps)
            update_running_stats(bn, mean, var, flat.shape[0])
            return out.view_as(x)  # (..., H)
        p = torch.sigmoid(bn(flat)).view_as(x)  # (..., H)
        return p * x + (1.0 - p) * self.alpha * x
