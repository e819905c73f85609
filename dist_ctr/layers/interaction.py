"""Explicit feature-interaction layers: ``FM``, ``CrossNet`` (DCN / DCN-V2), ``CrossNetMix`` (DCN-Mix), ``CIN``.

Notation: ``B`` batch, ``F`` fields (pooled sparse features), ``D`` embedding dim, ``N`` width of a flat input
(dense values and embeddings concatenated), ``K`` experts, ``R`` low rank, ``H_k`` feature maps of CIN layer k.

Pure torch: no devices, no processes. Constructor arguments keep DeepCTR-Torch's names (without ``device`` and
``seed``: the engine places modules and seeds the generators).

>>> import torch
>>> e = torch.randn(3, 5, 4)
>>> tuple(FM()(e).shape), tuple(CIN(5, (8, 6))(e).shape)
((3, 1), (3, 10))
>>> x = torch.randn(3, 12)
>>> tuple(CrossNet(12, layer_num=2, parameterization="matrix")(x).shape), tuple(CrossNetMix(12, 4, 2)(x).shape)
((3, 12), (3, 12))
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dist_ctr.layers.core import activation_layer

__all__ = ["CIN", "FM", "CrossNet", "CrossNetMix"]


class FM(nn.Module):
    """Factorization Machine pairwise term (Rendle, "Factorization Machines", ICDM 2010).

    ``sum_{i<j} <e_i, e_j> = 0.5 * sum_d ((sum_f e_fd) ** 2 - sum_f e_fd ** 2)``.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, 1)``.
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        square_of_sum = inputs.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = inputs.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)  # (B, 1)


class CrossNet(nn.Module):
    """Cross network of DCN (Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017) and
    DCN-V2 (Wang et al., "DCN V2: Improved Deep & Cross Network ...", WWW 2021).

    - ``parameterization="vector"`` (DCN): ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l``, ``w_l, b_l`` in ``R^N``.
    - ``parameterization="matrix"`` (DCN-V2): ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, ``W_l`` in ``R^{N x N}``.

    Args:
        in_features (int): ``N``.
        layer_num (int): cross layers.
        parameterization (str): "vector" or "matrix".

    Attributes:
        kernels (Parameter): ``(layer_num, N)`` for "vector", ``(layer_num, N, N)`` for "matrix" (Xavier normal).
        bias (Parameter): ``(layer_num, N)``, zeros.

    Call: ``forward(inputs: Tensor (B, N)) -> Tensor (B, N)``.
    """

    def __init__(self, in_features: int, layer_num: int = 2, parameterization: str = "vector") -> None:
        super().__init__()
        if parameterization not in ("vector", "matrix"):
            raise ValueError(f"parameterization must be 'vector' or 'matrix', got {parameterization!r}")
        if in_features < 1:
            raise ValueError(f"CrossNet needs in_features >= 1, got {in_features}")
        self.layer_num = int(layer_num)
        self.parameterization = parameterization
        shape = (self.layer_num, in_features) if parameterization == "vector" else (self.layer_num, in_features, in_features)
        self.kernels = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(self.layer_num, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for i in range(self.layer_num):
            # Xavier normal as DeepCTR, with fans of an (N, 1) kernel for "vector" and (N, N) for "matrix".
            k = self.kernels.data[i]
            nn.init.xavier_normal_(k.unsqueeze(1) if self.parameterization == "vector" else k)
        nn.init.zeros_(self.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x0 = inputs  # (B, N)
        xl = x0
        for i in range(self.layer_num):
            if self.parameterization == "vector":
                xl_w = xl @ self.kernels[i].unsqueeze(1)  # (B, 1)
                xl = x0 * xl_w + self.bias[i] + xl  # (B, N)
            else:
                xl_w = xl @ self.kernels[i].t() + self.bias[i]  # (B, N) = W x_l + b
                xl = x0 * xl_w + xl  # (B, N)
        return xl


class CrossNetMix(nn.Module):
    """Mixture of low-rank cross experts (DCN-Mix; Wang et al., "DCN V2", WWW 2021, section 3.2).

    Per layer ``l`` and expert ``k``: ``E_k(x_l) = x_0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b_l)``; gates
    ``g_k(x_l) = x_l . G_k`` are soft-maxed over experts and ``x_{l+1} = sum_k softmax(g)_k E_k(x_l) + x_l``.

    Args:
        in_features (int): ``N``.
        low_rank (int): ``R``.
        num_experts (int): ``K``.
        layer_num (int): cross layers.

    Attributes:
        U_list, V_list (Parameter): ``(layer_num, K, N, R)``; C_list ``(layer_num, K, R, R)`` (Xavier normal).
        gating (Linear): ``N -> K`` without bias (one gate per expert, shared over layers as in DeepCTR).
        bias (Parameter): ``(layer_num, N)``, zeros.

    Call: ``forward(inputs: Tensor (B, N)) -> Tensor (B, N)``.
    """

    def __init__(self, in_features: int, low_rank: int = 32, num_experts: int = 4, layer_num: int = 2) -> None:
        super().__init__()
        if in_features < 1 or low_rank < 1 or num_experts < 1:
            raise ValueError(
                f"CrossNetMix needs in_features, low_rank, num_experts >= 1, got {in_features}, {low_rank}, {num_experts}")
        self.layer_num = int(layer_num)
        self.num_experts = int(num_experts)
        self.U_list = nn.Parameter(torch.empty(self.layer_num, num_experts, in_features, low_rank))
        self.V_list = nn.Parameter(torch.empty(self.layer_num, num_experts, in_features, low_rank))
        self.C_list = nn.Parameter(torch.empty(self.layer_num, num_experts, low_rank, low_rank))
        self.gating = nn.Linear(in_features, num_experts, bias=False)
        self.bias = nn.Parameter(torch.zeros(self.layer_num, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.U_list, self.V_list, self.C_list):
            for i in range(self.layer_num):
                for k in range(self.num_experts):
                    nn.init.xavier_normal_(p.data[i, k])
        nn.init.zeros_(self.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # sum_k g_k x_0 * (U_k w_k + b) = x_0 * ([g_1 w_1 | ... | g_K w_K] [U_1 | ... | U_K]^T + b sum_k g_k): the
        # experts' down- and up-projections are one GEMM each over all experts, and no (B, K, N) tensor is built.
        x0 = inputs  # (B, N)
        xl = x0
        B, N = x0.shape
        K, R = self.num_experts, self.C_list.shape[-1]
        for i in range(self.layer_num):
            down = self.V_list[i].permute(1, 0, 2).reshape(N, K * R)  # (N, K R), expert-major columns
            v = torch.tanh(xl @ down).view(B, K, R).transpose(0, 1)  # (K, B, R)
            w = torch.tanh(torch.bmm(v, self.C_list[i].transpose(1, 2)))  # (K, B, R) = tanh(C_k v_k)
            gate = torch.softmax(self.gating(xl), dim=1)  # (B, K)
            gw = (w.transpose(0, 1) * gate.unsqueeze(-1)).reshape(B, K * R)  # (B, K R)
            up = self.U_list[i].permute(0, 2, 1).reshape(K * R, N)  # (K R, N)
            mixed = gw @ up + self.bias[i] * gate.sum(dim=1, keepdim=True)  # (B, N)
            xl = x0 * mixed + xl  # (B, N)
        return xl


class CIN(nn.Module):
    """Compressed Interaction Network of xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit
    Feature Interactions for Recommender Systems", KDD 2018).

    ``X^k_{h,d} = act(sum_{i,j} W^{k}_{h,i,j} X^{k-1}_{i,d} X^0_{j,d} + b^k_h)``; with ``split_half`` every layer
    but the last passes half of its maps on and keeps the other half as output. The outputs of all layers are
    concatenated and summed over ``D`` (sum pooling).

    Args:
        field_size (int): ``F``.
        layer_size (Sequence[int]): ``H_1..H_k``; even except the last when ``split_half``.
        activation (str): see :func:`~dist_ctr.layers.core.activation_layer` ("linear" for none).
        split_half (bool): as above.

    Attributes:
        featuremap_num (int): output width.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, featuremap_num)``.
    """

    def __init__(
        self,
        field_size: int,
        layer_size: Sequence[int] = (128, 128),
        activation: str = "relu",
        split_half: bool = True,
    ) -> None:
        super().__init__()
        if len(layer_size) == 0:
            raise ValueError("layer_size must have at least one layer")
        if field_size < 1:
            raise ValueError(f"CIN needs field_size >= 1, got {field_size}")
        self.layer_size = tuple(int(s) for s in layer_size)
        self.split_half = split_half
        self.field_nums = [int(field_size)]
        self.conv1ds = nn.ModuleList()
        last = len(self.layer_size) - 1
        for i, size in enumerate(self.layer_size):
            self.conv1ds.append(nn.Conv1d(self.field_nums[-1] * self.field_nums[0], size, 1))
            if split_half:
                if i != last and size % 2 > 0:
                    raise ValueError(f"CIN layer_size {self.layer_size}: every layer but the last must be even "
                                     "when split_half=True")
                self.field_nums.append(size // 2)
            else:
                self.field_nums.append(size)
        self.featuremap_num = (sum(self.layer_size[:-1]) // 2 + self.layer_size[-1]) if split_half \
            else sum(self.layer_size)
        self.activation = activation_layer(activation)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # Computed "D-major": x0 as (B, D, F), so that each layer's map is one (B * D, H_{k-1} F) @ (H_{k-1} F, H_k)
        # GEMM on the conv weights (a width-1 Conv1d is exactly that) and no (B, H, F, D) tensor is transposed.
        x0 = inputs.transpose(1, 2).contiguous()  # (B, D, F)
        hidden = x0  # (B, D, H_{k-1})
        outs: list[torch.Tensor] = []
        last = len(self.layer_size) - 1
        for i, size in enumerate(self.layer_size):
            z = _OuterProduct.apply(hidden, x0)  # (B, D, H_{k-1} * F), channel h * F + m as the Conv1d's
            conv = self.conv1ds[i]
            cur = self.activation(F.linear(z, conv.weight.squeeze(-1), conv.bias))  # (B, D, H_k)
            if self.split_half and i != last:
                hidden, direct = torch.split(cur, [size // 2, size // 2], dim=2)  # (B, D, H_k/2) x 2
            else:
                hidden, direct = cur, cur
            outs.append(direct)
        return torch.cat(outs, dim=2).sum(dim=1)  # (B, featuremap_num)


class _OuterProduct(torch.autograd.Function):
    """``z[b, d, h * M + m] = a[b, d, h] * c[b, d, m]``: CIN's per-dim outer product, ``(B, D, H), (B, D, M) ->
    (B, D, H * M)``.

    Autograd through a broadcast multiply would build two more ``(B, D, H, M)`` products in the backward; here the
    gradients are contractions: ``da = dz c`` and ``dc = a^T dz`` per ``(b, d)``, batched matrix-vector products.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, c)
        return (a.unsqueeze(-1) * c.unsqueeze(-2)).flatten(start_dim=2)  # (B, D, H * M)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        a, c = ctx.saved_tensors
        B, D, H = a.shape
        M = c.shape[-1]
        g = grad.reshape(B * D, H, M)  # (B D, H, M)
        da = torch.bmm(g, c.reshape(B * D, M, 1)).view(B, D, H)  # (B, D, H)
        dc = torch.bmm(a.reshape(B * D, 1, H), g).view(B, D, M)  # (B, D, M)
        return da, dc
