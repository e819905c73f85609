"""DLRM's blocks: the ReLU ``mlp`` of its bottom / top arches, ``DotInteraction`` (DLRM, Naumov et al. 2019) and
``LowRankCrossNet`` (DCN-V2's low-rank cross network, as in TorchRec's ``DLRM_DCN`` and MLPerf's DLRM-DCNv2).

Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``N`` width of a flat input, ``R`` low rank.

Pure torch: no devices, no processes. Orderings and initialisation follow TorchRec's ``InteractionArch``,
``OverArch`` and ``LowRankCrossNet``, so weights copy one to one.

>>> import torch
>>> dense, sparse = torch.randn(3, 4), torch.randn(3, 2, 4)
>>> tuple(DotInteraction(2)(dense, sparse).shape)  # D + (F + 1) F / 2 = 4 + 3
(3, 7)
>>> tuple(LowRankCrossNet(12, num_layers=2, low_rank=3)(torch.randn(3, 12)).shape)
(3, 12)
>>> mlp(4, (8, 1), last_activation=False)
Sequential(
  (0): Linear(in_features=4, out_features=8, bias=True)
  (1): ReLU()
  (2): Linear(in_features=8, out_features=1, bias=True)
)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DotInteraction", "LowRankCrossNet", "mlp"]


def mlp(in_features: int, layer_sizes: Sequence[int], last_activation: bool = True) -> nn.Sequential:
    """``[Linear -> ReLU] x len(layer_sizes)``, with torch's default init (TorchRec's ``MLP``).

    ``last_activation=False`` leaves the last ``Linear`` bare (TorchRec's ``OverArch``: a logit layer).

    Args:
        in_features (int): ``N``.
        layer_sizes (Sequence[int]): widths ``H_1..H_k`` (non-empty).

    Returns:
        nn.Sequential: ``(B, N) -> (B, H_k)``.
    """
    if len(layer_sizes) == 0:
        raise ValueError("mlp needs at least one layer size")
    dims = [int(in_features)] + [int(h) for h in layer_sizes]
    layers: list[nn.Module] = []
    for i in range(len(layer_sizes)):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if last_activation or i < len(layer_sizes) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DotInteraction(nn.Module):
    """DLRM's pairwise dot products over ``[dense, e_1, ..., e_F]``, next to the dense vector itself.

    With ``Z = [dense; e_1; ...; e_F]`` of shape ``(B, F + 1, D)``, the output is ``[dense, (Z Z^T)_{ij} for i < j]``,
    the strict upper triangle in row-major order (``torch.triu_indices(F + 1, F + 1, 1)``, TorchRec's order):
    ``<dense, e_1>, ..., <dense, e_F>, <e_1, e_2>, ..., <e_{F-1}, e_F>``.

    Args:
        num_sparse_features (int): ``F`` (0 returns ``dense`` unchanged).

    Call: ``forward(dense: Tensor (B, D), sparse: Tensor (B, F, D)) -> Tensor (B, D + F (F + 1) / 2)``.
    """

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__()
        self.num_sparse_features = int(num_sparse_features)
        n = self.num_sparse_features + 1
        self.register_buffer("triu_indices", torch.triu_indices(n, n, offset=1), persistent=False)

    @property
    def num_pairs(self) -> int:
        """``F (F + 1) / 2``: the dot products appended to the dense vector."""
        return self.num_sparse_features * (self.num_sparse_features + 1) // 2

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        if self.num_sparse_features <= 0:
            return dense
        z = torch.cat((dense.unsqueeze(1), sparse), dim=1)  # (B, F + 1, D)
        gram = torch.bmm(z, z.transpose(1, 2))  # (B, F + 1, F + 1)
        pairs = gram[:, self.triu_indices[0], self.triu_indices[1]]  # (B, F (F + 1) / 2)
        return torch.cat((dense, pairs), dim=1)  # (B, D + F (F + 1) / 2)


class LowRankCrossNet(nn.Module):
    """DCN-V2's cross network with a low-rank kernel: ``x_{l+1} = x_0 * (W_l (V_l x_l) + b_l) + x_l``.

    ``W_l`` is ``(N, R)``, ``V_l`` is ``(R, N)`` (both Xavier-normal), ``b_l`` is ``(N,)`` (zeros): TorchRec's
    ``LowRankCrossNet``, parameter names included (``W_kernels``, ``V_kernels``, ``bias``).

    Args:
        in_features (int): ``N``.
        num_layers (int): cross layers ``L >= 1``.
        low_rank (int): ``R >= 1``.

    Call: ``forward(x: Tensor (B, N)) -> Tensor (B, N)``.
    """

    def __init__(self, in_features: int, num_layers: int, low_rank: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"LowRankCrossNet: num_layers must be >= 1, got {num_layers}")
        if low_rank < 1:
            raise ValueError(f"LowRankCrossNet: low_rank must be >= 1, got {low_rank}")
        self.in_features, self.num_layers, self.low_rank = int(in_features), int(num_layers), int(low_rank)
        self.W_kernels = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_normal_(torch.empty(in_features, low_rank))) for _ in range(num_layers)])
        self.V_kernels = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_normal_(torch.empty(low_rank, in_features))) for _ in range(num_layers)])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(in_features)) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, xl = x, x  # (B, N)
        for W, V, b in zip(self.W_kernels, self.V_kernels, self.bias):
            xl = x0 * (F.linear(F.linear(xl, V), W) + b) + xl  # (B, R) -> (B, N)
        return xl
