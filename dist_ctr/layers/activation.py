"""``Dice``: the data-adaptive activation of DIN (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018).

Notation: ``B`` batch, ``L`` sequence length, ``H`` hidden width.

``Dice(x) = p(x) * x + (1 - p(x)) * alpha * x`` with ``p(x) = sigmoid(BN(x))``: a batch norm (with its affine
part, as in DeepCTR-Torch) normalises each of the ``H`` channels over every leading position, and ``alpha`` (one
per channel, starting at 0) is learnt.

>>> import torch
>>> d = Dice(3).eval()
>>> x = torch.randn(2, 5, 3)
>>> tuple(d(x).shape), tuple(d(x[:, 0]).shape)
((2, 5, 3), (2, 3))
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dice"]


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
        p = torch.sigmoid(self.bn(flat)).view_as(x)  # (..., H)
        return p * x + (1.0 - p) * self.alpha * x
