"""Blocks of the multi-task models (SharedBottom, ESMM, MMOE, PLE): groups of same-shaped MLPs computed in one
batched matmul per layer (experts, task towers), softmax gates over experts, and the gated mixture.

Notation: ``B`` batch, ``N`` input width, ``K`` members of a group (experts, or towers), ``G`` gates,
``H`` hidden width, ``T`` tasks.

A group of ``K`` MLPs is one module with weights ``(K, N, H)`` per layer instead of ``K`` modules walked by a
Python loop; member ``k`` is exactly ``DNN`` ``k`` of DeepCTR-Torch's ``nn.ModuleList`` (same layers, init and
activation per unit), which the tests check against :class:`~dist_ctr.layers.core.DNN` with copied weights.

>>> import torch
>>> experts = ParallelDNN(6, 3, (8, 4))
>>> e = experts(torch.randn(5, 6))
>>> tuple(e.shape)
(5, 3, 4)
>>> g = Gates(6, num_gates=2, num_experts=3, hidden_units=(5,))(torch.randn(5, 6))
>>> tuple(g.shape), bool(torch.allclose(g.sum(-1), torch.ones(5, 2)))
((5, 2, 3), True)
>>> tuple(mix_experts(g, e).shape)
(5, 2, 4)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dist_ctr.layers.core import activation_layer

__all__ = ["Gates", "ParallelDNN", "ParallelLinear", "mix_experts"]


class ParallelLinear(nn.Module):
    """``K`` independent affine maps ``y_k = x_k W_k + b_k``.

    Args:
        in_features (int): ``N``.
        num_parallel (int): ``K``.
        out_features (int): ``H``.
        bias (bool): learn ``b_k``.
        init_std (float | None): normal init std of ``W``; ``None`` is ``nn.Linear``'s default init. The bias is
            always ``nn.Linear``'s default ``U(-1/sqrt(N), 1/sqrt(N))``.

    Call: ``forward(x: Tensor (B, N) | (B, K, N)) -> Tensor (B, K, H)`` (a 2-d input is shared by all members).
    """

    def __init__(self, in_features: int, num_parallel: int, out_features: int, bias: bool = True,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.in_features, self.num_parallel, self.out_features = int(in_features), int(num_parallel), int(out_features)
        self.weight = nn.Parameter(torch.empty(num_parallel, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_parallel, out_features)) if bias else None
        self.init_std = init_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        if self.init_std is not None:
            nn.init.normal_(self.weight, mean=0.0, std=self.init_std)
        else:
            nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:  # nn.Linear's default bias either way (DeepCTR-Torch's DNN keeps it, see DNN)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: Tensor (B, N) | (B, K, N) -> Tensor (B, K, H)``.

        A 2-d input is one GEMM ``(B, N) x (N, K H)``; the result is contiguous. A 3-d input is one batched GEMM
        over ``K`` in ``(K, B, N)`` order (a transposed view, no copy) and the result is the ``(B, K, H)``
        transposed view of a contiguous ``(K, B, H)`` tensor, which the next layer reads without a copy.
        """
        K, N, H = self.num_parallel, self.in_features, self.out_features
        if x.dim() == 2:
            w = self.weight.permute(1, 0, 2).reshape(N, K * H)  # (N, K H), member-major columns
            y = torch.addmm(self.bias.view(K * H), x, w) if self.bias is not None else x @ w  # (B, K H)
            return y.view(x.shape[0], K, H)
        xt = x.transpose(0, 1)  # (K, B, N)
        if self.bias is not None:
            y = torch.baddbmm(self.bias.unsqueeze(1), xt, self.weight)  # (K, B, H)
        else:
            y = torch.bmm(xt, self.weight)  # (K, B, H)
        return y.transpose(0, 1)  # (B, K, H)


class ParallelDNN(nn.Module):
    """``K`` MLPs of identical shape: ``[Linear -> (BatchNorm) -> activation -> Dropout] x len(hidden_units)``.

    Args:
        inputs_dim (int): ``N``.
        num_parallel (int): ``K``.
        hidden_units (Sequence[int]): widths; empty means identity (the input broadcast to ``K`` members).
        activation (str), dropout_rate (float), use_bn (bool), init_std (float): as in
            :class:`~dist_ctr.layers.core.DNN` (batch norm and activation are per member and unit).

    Attributes:
        output_dim (int): ``H`` of the last layer (``N`` when empty).

    Call: ``forward(x: Tensor (B, N) | (B, K, N)) -> Tensor (B, K, H)``.
    """

    def __init__(self, inputs_dim: int, num_parallel: int, hidden_units: Sequence[int], activation: str = "relu",
                 dropout_rate: float = 0.0, use_bn: bool = False, init_std: float = 1e-4) -> None:
        super().__init__()
        if num_parallel < 1:
            raise ValueError(f"ParallelDNN needs num_parallel >= 1, got {num_parallel}")
        self.num_parallel = int(num_parallel)
        dims = [int(inputs_dim)] + [int(h) for h in hidden_units]
        self.output_dim = dims[-1]
        self.linears = nn.ModuleList(ParallelLinear(dims[i], num_parallel, dims[i + 1], True, init_std)
                                     for i in range(len(hidden_units)))
        self.bns = nn.ModuleList(nn.BatchNorm1d(num_parallel * d) for d in dims[1:]) if use_bn else None
        self.acts = nn.ModuleList(activation_layer(activation, num_parallel * d) for d in dims[1:])
        self.dropout = nn.Dropout(dropout_rate)
        # Per-element activations can run on a layer's output in whatever memory order it has.
        self._elementwise_acts = all(_is_elementwise(a) for a in self.acts)

    def weights(self) -> list[torch.Tensor]:
        """Weight tensors (targets of ``l2_reg_dnn``)."""
        return [lin.weight for lin in self.linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: Tensor (B, N) | (B, K, N) -> Tensor (B, K, H)`` (after hidden layers, a transposed view of a
        contiguous ``(K, B, H)`` tensor when every step is per element)."""
        B, K = x.shape[0], self.num_parallel
        if not len(self.linears):
            return x.unsqueeze(1).expand(B, K, x.shape[-1]) if x.dim() == 2 else x  # (B, K, N)
        # Batch norm, Dice and an active dropout (whose mask follows the logical (B, K H) order) see the
        # (B, K H) matrix; otherwise the activation runs on the layer's output as it lies in memory.
        per_element = (self.bns is None and self._elementwise_acts
                       and (self.dropout.p == 0.0 or not self.training))
        for i, lin in enumerate(self.linears):
            y = lin(x)  # (B, K, H_i)
            if per_element:
                x = self.acts[i](y)  # (B, K, H_i), same strides as y
                continue
            flat = y.reshape(B, -1)  # (B, K * H_i)
            if self.bns is not None:
                flat = self.bns[i](flat)
            flat = self.dropout(self.acts[i](flat))
            x = flat.view(B, K, -1)  # (B, K, H_i)
        return x


class Gates(nn.Module):
    """``G`` softmax gates over ``K`` experts (MMOE / PLE): ``softmax(DNN_g(x_g) W_g)`` with ``W_g`` bias-free.

    Args:
        inputs_dim (int): ``N``.
        num_gates (int): ``G``.
        num_experts (int): ``K``.
        hidden_units (Sequence[int]): gate MLP widths (may be empty: a linear gate on the input).
        activation (str), dropout_rate (float), use_bn (bool), init_std (float): gate MLP options.

    Call: ``forward(x: Tensor (B, N) | (B, G, N)) -> Tensor (B, G, K)``, rows summing to 1.
    """

    def __init__(self, inputs_dim: int, num_gates: int, num_experts: int, hidden_units: Sequence[int] = (),
                 activation: str = "relu", dropout_rate: float = 0.0, use_bn: bool = False,
                 init_std: float = 1e-4) -> None:
        super().__init__()
        self.dnn = ParallelDNN(inputs_dim, num_gates, hidden_units, activation, dropout_rate, use_bn, init_std)
        self.final = ParallelLinear(self.dnn.output_dim, num_gates, num_experts, bias=False)

    def weights(self) -> list[torch.Tensor]:
        return self.dnn.weights() + [self.final.weight]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.final(self.dnn(x)), dim=-1)  # (B, G, K)


def mix_experts(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Gated mixtures of experts shared by all gates, or of each gate's own experts.

    - ``gates: Tensor (B, G, K), experts: Tensor (B, K, H) -> Tensor (B, G, H)``:
      ``out[b, i] = sum_k gates[b, i, k] * experts[b, k]``;
    - ``gates: Tensor (B, G, K), experts: Tensor (B, G, K, H) -> Tensor (B, G, H)``:
      ``out[b, i] = sum_k gates[b, i, k] * experts[b, i, k]``.

    Shared experts with ``G >= 2`` and ``K >= 2`` are one batched matmul. When ``G`` or ``K`` is 1 (or the experts
    are per gate) the batched matmul or its backward would be a batch of rank-1 outer products, so the mixture is a
    broadcast multiply and a sum over ``K``.
    """
    G, K = gates.shape[1], gates.shape[2]
    if experts.dim() == 4:  # (B, G, K, H)
        if K == 1:
            return gates * experts.squeeze(2)  # (B, G, 1) * (B, G, H)
        return (gates.unsqueeze(-1) * experts).sum(2)  # (B, G, K, 1) * (B, G, K, H) -> (B, G, H)
    if K == 1:
        return gates * experts  # (B, G, 1) * (B, 1, H)
    if G == 1:
        return (gates.transpose(1, 2) * experts).sum(1, keepdim=True)  # (B, K, 1) * (B, K, H) -> (B, 1, H)
    return torch.bmm(gates, experts)  # (B, G, K) x (B, K, H)


def _is_elementwise(act: nn.Module) -> bool:
    """Whether ``act`` maps each element on its own, with no per-channel parameters."""
    if isinstance(act, nn.PReLU):
        return act.num_parameters == 1
    return isinstance(act, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity, nn.LeakyReLU, nn.GELU, nn.SiLU))
