"""Pairwise field-interaction layers: Bi-Interaction (NFM), inner / outer products (PNN), bilinear (FiBiNET),
attention over pairs (AFM), field-weighted pairs (FwFM) and the field-wise Bi-Interaction of FLEN.

Notation: ``B`` batch, ``F`` fields (pooled sparse features), ``D`` embedding dim, ``P = F (F - 1) / 2`` field
pairs, ``G`` field groups, ``A`` attention factor.

Pairs follow DeepCTR's order, ``itertools.combinations(range(F), 2)``: ``(0, 1), (0, 2), ..., (0, F-1), (1, 2),
...``, which is the row-major order of :func:`torch.triu_indices` with offset 1. Inputs are one ``(B, F, D)``
tensor; DeepCTR's list of ``(B, 1, D)`` tensors is accepted too and concatenated along the field axis.

Pure torch: no devices, no processes. Constructor arguments keep DeepCTR-Torch's (or, for FwFM / FLEN, DeepCTR's)
names, without ``seed`` and ``device``; L2 strengths are applied by the model (``CTRModel.register_l2``).

>>> import torch
>>> e = torch.randn(3, 4, 8)
>>> tuple(BiInteractionPooling()(e).shape), tuple(InnerProductLayer()(e).shape)
((3, 1, 8), (3, 6, 1))
>>> tuple(OutterProductLayer(4, 8, kernel_type="mat")(e).shape), tuple(BilinearInteraction(4, 8, "each")(e).shape)
((3, 6), (3, 6, 8))
>>> tuple(AFMLayer(8)(e).shape), tuple(FwFMLayer(4)(e).shape)
((3, 1), (3, 1))
>>> tuple(FieldWiseBiInteraction(2, 8)([e[:, :1], e[:, 1:]]).shape)
(3, 8)
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AFMLayer",
    "BiInteractionPooling",
    "BilinearInteraction",
    "FieldWiseBiInteraction",
    "FwFMLayer",
    "InnerProductLayer",
    "OutterProductLayer",
    "pair_indices",
]

FieldInput = Union[torch.Tensor, Sequence[torch.Tensor]]


def _as_fields(inputs: FieldInput) -> torch.Tensor:
    """``(B, F, D)`` from a tensor or DeepCTR's list of ``(B, 1, D)`` tensors."""
    x = torch.cat(list(inputs), dim=1) if isinstance(inputs, (list, tuple)) else inputs  # (B, F, D)
    if x.dim() != 3:
        raise ValueError(f"expected inputs of shape (B, F, D), got {tuple(x.shape)}")
    return x


def pair_indices(num_fields: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column field of each pair in DeepCTR's order. Returns ``(Tensor (P,), Tensor (P,))`` int64.

    >>> [tuple(t.tolist()) for t in pair_indices(4)]
    [(0, 0, 0, 1, 1, 2), (1, 2, 3, 2, 3, 3)]
    """
    idx = torch.triu_indices(num_fields, num_fields, offset=1, device=device)  # (2, P)
    return idx[0], idx[1]


def _pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left and right member of every field pair: ``(B, P, D)`` each."""
    rows, cols = pair_indices(x.shape[1], x.device)
    return x.index_select(1, rows), x.index_select(1, cols)


def _upper(m: torch.Tensor) -> torch.Tensor:
    """Entries ``(i, j)`` with ``i < j`` of ``(B, F, F)`` matrices, in DeepCTR's pair order: ``(B, P)``.

    One gather of ``P`` columns of the flattened ``(B, F * F)`` matrices; its backward scatters ``B * P`` scalars.

    >>> _upper(torch.arange(9.0).view(1, 3, 3)).tolist()
    [[1.0, 2.0, 5.0]]
    """
    Fn = m.shape[-1]
    rows, cols = pair_indices(Fn, m.device)
    return m.flatten(start_dim=1).index_select(1, rows * Fn + cols)  # (B, P)


class BiInteractionPooling(nn.Module):
    """NFM's Bi-Interaction pooling (He & Chua, "Neural Factorization Machines for Sparse Predictive
    Analytics", SIGIR 2017): ``0.5 * ((sum_f e_f) ** 2 - sum_f e_f ** 2)``, the sum of all pairwise products.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, 1, D)``.
    """

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        x = _as_fields(inputs)
        square_of_sum = x.sum(dim=1, keepdim=True).pow(2)  # (B, 1, D)
        sum_of_square = x.pow(2).sum(dim=1, keepdim=True)  # (B, 1, D)
        return 0.5 * (square_of_sum - sum_of_square)


class InnerProductLayer(nn.Module):
    """PNN's inner products (Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016).

    Args:
        reduce_sum (bool): return ``<e_i, e_j>`` per pair; else the element-wise products ``e_i * e_j``.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, P, 1)`` (``(B, P, D)`` without ``reduce_sum``).
    """

    def __init__(self, reduce_sum: bool = True) -> None:
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        x = _as_fields(inputs)
        if not self.reduce_sum:
            p, q = _pairs(x)
            return p * q  # (B, P, D)
        # All inner products as one Gram matrix, read at i < j: no (B, P, D) pair tensor.
        gram = x @ x.transpose(1, 2)  # (B, F, F)
        return _upper(gram).unsqueeze(2)  # (B, P, 1)


class OutterProductLayer(nn.Module):
    """PNN's outer-product kernel layer (Qu et al., ICDM 2016; the authors' ``product-nets`` formulation).

    For pair ``p = (i, j)``: ``"mat"``: ``sum_{k,l} W[k, p, l] e_i[l] e_j[k]``; ``"vec"``: ``sum_k w[p, k] e_i[k]
    e_j[k]``; ``"num"``: ``w[p] <e_i, e_j>``.

    Args:
        field_size (int): ``F``.
        embedding_size (int): ``D``.
        kernel_type (str): "mat" (kernel ``(D, P, D)``), "vec" (``(P, D)``) or "num" (``(P, 1)``); Xavier uniform.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, P)``.
    """

    def __init__(self, field_size: int, embedding_size: int, kernel_type: str = "mat") -> None:
        super().__init__()
        if kernel_type not in ("mat", "vec", "num"):
            raise ValueError(f"kernel_type must be 'mat', 'vec' or 'num', got {kernel_type!r}")
        if field_size < 2:
            raise ValueError(f"OutterProductLayer needs at least 2 fields to form pairs, got {field_size}")
        self.kernel_type = kernel_type
        num_pairs = field_size * (field_size - 1) // 2
        shape = {"mat": (embedding_size, num_pairs, embedding_size), "vec": (num_pairs, embedding_size),
                 "num": (num_pairs, 1)}[kernel_type]
        self.kernel = nn.Parameter(torch.empty(shape))
        nn.init.xavier_uniform_(self.kernel)

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        x = _as_fields(inputs)
        if self.kernel_type == "num":
            gram = x @ x.transpose(1, 2)  # (B, F, F)
            return _upper(gram) * self.kernel.squeeze(1)  # (B, P)
        if self.kernel_type == "vec":
            p, q = _pairs(x)  # (B, P, D) each
            return (p * q * self.kernel.unsqueeze(0)).sum(dim=-1)  # (B, P)
        # "mat", pairs grouped by their left field i (pairs (i, i+1..F-1) are consecutive in DeepCTR's order):
        # z[b, p, k] = sum_l W[k, p, l] e_i[b, l] is one matmul of e_i with the group's kernel columns, and its
        # partners e_{i+1..F-1} are a slice of the inputs, so no (B, P, D) gather (nor scatter-add backward).
        B, Fn, D = x.shape
        w = self.kernel.permute(2, 1, 0).reshape(D, -1)  # (D_l, P * D_k), column p * D + k holds W[k, p, :]
        groups: list[torch.Tensor] = []
        start = 0
        for i in range(Fn - 1):
            n = Fn - 1 - i  # pairs (i, j > i)
            z = (x[:, i] @ w[:, start * D:(start + n) * D]).view(B, n, D)  # (B, n, D_k)
            groups.append((z * x[:, i + 1:]).sum(dim=2))  # (B, n)
            start += n
        return torch.cat(groups, dim=1)  # (B, P)


class BilinearInteraction(nn.Module):
    """FiBiNET's bilinear interaction (Huang et al., "FiBiNET: Combining Feature Importance and Bilinear feature
    Interaction for Click-Through Rate Prediction", RecSys 2019): ``(e_i W) * e_j`` per pair.

    Args:
        filed_size (int): ``F`` (DeepCTR-Torch's spelling).
        embedding_size (int): ``D``.
        bilinear_type (str): "all" (one ``W``), "each" (``W_i`` per left field ``i < F - 1``) or "interaction"
            (``W_ij`` per pair). ``e W`` is ``nn.Linear(D, D, bias=False)(e)``, i.e. ``e @ W.T``.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, P, D)``.
    """

    def __init__(self, filed_size: int, embedding_size: int, bilinear_type: str = "interaction") -> None:
        super().__init__()
        if bilinear_type not in ("all", "each", "interaction"):
            raise ValueError(f"bilinear_type must be 'all', 'each' or 'interaction', got {bilinear_type!r}")
        if filed_size < 2:
            raise ValueError(f"BilinearInteraction needs at least 2 fields to form pairs, got {filed_size}")
        self.bilinear_type = bilinear_type
        n = {"all": 1, "each": filed_size - 1, "interaction": filed_size * (filed_size - 1) // 2}[bilinear_type]
        self.weight = nn.Parameter(torch.empty(n, embedding_size, embedding_size))  # (n, D_out, D_in)
        bound = 1.0 / embedding_size**0.5  # nn.Linear's default init, as DeepCTR-Torch
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        # Pairs grouped by their left field i (pairs (i, i+1..F-1) are consecutive in DeepCTR's order): group i is
        # (e_i W) * e_{i+1..F-1}, a slice of the inputs, so no (B, P, D) gather of fields is built and the backward
        # has no scatter-add over pairs.
        x = _as_fields(inputs)
        B, Fn, D = x.shape
        fields = x.unbind(1)  # F x (B, D)
        if self.bilinear_type == "all":
            lefts = (x[:, :-1] @ self.weight[0].T).unbind(1)  # F-1 x (B, D)
        elif self.bilinear_type == "each":
            lefts = torch.einsum("bfl,fkl->bfk", x[:, :-1], self.weight).unbind(1)  # F-1 x (B, D)
        else:
            w_all = self.weight.permute(2, 0, 1).reshape(D, -1)  # (D_in, P * D_out), pair-major columns
        groups: list[torch.Tensor] = []
        start = 0
        for i in range(Fn - 1):
            n = Fn - 1 - i  # pairs (i, j > i)
            if self.bilinear_type == "interaction":
                left = (fields[i] @ w_all[:, start * D:(start + n) * D]).view(B, n, D)  # (B, n, D): e_i W_ij per j
            else:
                left = lefts[i].unsqueeze(1)  # (B, 1, D), the same e_i W for every partner j
            groups.append(left * x[:, i + 1:])  # (B, n, D)
            start += n
        return torch.cat(groups, dim=1)  # (B, P, D)


class AFMLayer(nn.Module):
    """Attention over pairwise products (Xiao et al., "Attentional Factorization Machines: Learning the Weight of
    Feature Interactions via Attention Networks", IJCAI 2017).

    ``a_p = softmax_p(h . relu(W (e_i * e_j) + b))``; output ``p . sum_p a_p (e_i * e_j)``.

    Args:
        in_features (int): ``D``.
        attention_factor (int): ``A``.
        l2_reg_w (float): L2 on ``attention_W`` (kept for the model to register; the layer does not apply it).
        dropout_rate (float): dropout on the attention output.

    Attributes:
        normalized_att_score (Tensor): ``(B, P, 1)`` scores of the last call (detached), as DeepCTR exposes.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, 1)``.
    """

    def __init__(self, in_features: int, attention_factor: int = 4, l2_reg_w: float = 0.0,
                 dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.l2_reg_w = l2_reg_w
        self.attention_W = nn.Parameter(torch.empty(in_features, attention_factor))
        self.attention_b = nn.Parameter(torch.zeros(attention_factor))
        self.projection_h = nn.Parameter(torch.empty(attention_factor, 1))
        self.projection_p = nn.Parameter(torch.empty(in_features, 1))
        for t in (self.attention_W, self.projection_h, self.projection_p):
            nn.init.xavier_normal_(t)
        self.dropout = nn.Dropout(dropout_rate)
        self.normalized_att_score: torch.Tensor | None = None

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        x = _as_fields(inputs)
        fields = x.unbind(1)  # F x (B, D)
        # Pairs (i, i+1..F-1) as e_i times a slice of the inputs: no (B, P, D) gathers, no scatter-add backward.
        groups = [fields[i].unsqueeze(1) * x[:, i + 1:] for i in range(x.shape[1] - 1)]  # (B, F-1-i, D) each
        bi = torch.cat(groups, dim=1) if groups else x[:, :0]  # (B, P, D); no pairs from one field
        # Both (B * P)-row products go through F.linear with contiguous (out, in) weights (the addmm layout that
        # CPU BLAS handles well for skinny outputs); the bias is fused into the same call.
        att = F.relu(F.linear(bi, self.attention_W.T.contiguous(), self.attention_b))  # (B, P, A)
        score = F.softmax(F.linear(att, self.projection_h.T.contiguous()), dim=1)  # (B, P, 1)
        self.normalized_att_score = score.detach()
        pooled = (score.transpose(1, 2) @ bi).squeeze(1)  # (B, D): sum_p a_p bi_p without a (B, P, D) temporary
        return self.dropout(pooled) @ self.projection_p  # (B, 1)


class FwFMLayer(nn.Module):
    """Field-weighted FM term (Pan et al., "Field-weighted Factorization Machines for Click-Through Rate Prediction
    in Display Advertising", WWW 2018): ``sum_{i<j} r_ij <e_i, e_j>``.

    Args:
        num_fields (int): ``F``.

    Attributes:
        field_strengths (Parameter): ``(F, F)``, truncated normal (std 0.05) as DeepCTR; only ``i < j`` is used.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, 1)``.
    """

    def __init__(self, num_fields: int = 4) -> None:
        super().__init__()
        self.num_fields = num_fields
        self.field_strengths = nn.Parameter(torch.empty(num_fields, num_fields))
        nn.init.trunc_normal_(self.field_strengths, std=0.05, a=-0.1, b=0.1)

    def forward(self, inputs: FieldInput) -> torch.Tensor:
        x = _as_fields(inputs)
        if x.shape[1] != self.num_fields:
            raise ValueError(f"FwFMLayer built for {self.num_fields} fields got {x.shape[1]}")
        rows, cols = pair_indices(self.num_fields, x.device)
        inner = (x.index_select(1, rows) * x.index_select(1, cols)).sum(dim=-1)  # (B, P)
        return inner @ self.field_strengths[rows, cols].unsqueeze(1)  # (B, 1)


class FieldWiseBiInteraction(nn.Module):
    """FLEN's field-wise Bi-Interaction (Chen et al., "FLEN: Leveraging Field for Scalable CTR Prediction", 2019).

    With ``s_g = sum_{f in g} e_f`` per group: ``h_MF = sum_{g<h} r_gh (s_g * s_h) + b_MF`` (inter-group) and
    ``h_FM = sum_g w_g (s_g ** 2 - sum_{f in g} e_f ** 2) + b_FM`` (intra-group; ``w_g`` starts at 0.5 as in
    DeepCTR, which makes it the FM term); output ``h_MF + h_FM``.

    Args:
        num_fields (int): ``G`` groups (DeepCTR calls groups "fields"); one group gives ``h_MF = b_MF``.
        embedding_size (int): ``D``.
        use_bias (bool): learn ``b_MF`` and ``b_FM``.

    Call: ``forward(inputs: list[Tensor (B, F_g, D)])`` or ``forward(inputs: Tensor (B, F, D), groups: Tensor
    (F,) int64 in [0, G))`` ``-> Tensor (B, D)``.
    """

    def __init__(self, num_fields: int, embedding_size: int, use_bias: bool = True) -> None:
        super().__init__()
        if num_fields < 1:
            raise ValueError(f"FieldWiseBiInteraction needs at least 1 group, got {num_fields}")
        self.num_fields = num_fields
        # No pair, no MF weights (an empty parameter would never get a gradient).
        self.kernel_mf = nn.Parameter(torch.ones(num_fields * (num_fields - 1) // 2, 1)) if num_fields > 1 else None
        self.kernel_fm = nn.Parameter(torch.full((num_fields, 1), 0.5))
        self.bias_mf = nn.Parameter(torch.zeros(embedding_size)) if use_bias else None
        self.bias_fm = nn.Parameter(torch.zeros(embedding_size)) if use_bias else None

    def forward(self, inputs: FieldInput, groups: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != self.num_fields:
                raise ValueError(f"FieldWiseBiInteraction built for {self.num_fields} groups got {len(inputs)}")
            sizes = torch.tensor([t.shape[1] for t in inputs], device=inputs[0].device)
            groups = torch.repeat_interleave(torch.arange(len(inputs), device=sizes.device), sizes)  # (F,)
            x = torch.cat(list(inputs), dim=1)  # (B, F, D)
        else:
            if groups is None:
                raise ValueError("FieldWiseBiInteraction on one (B, F, D) tensor needs `groups` (F,)")
            x = inputs
        B, _, D = x.shape
        s = x.new_zeros(B, self.num_fields, D).index_add(1, groups, x)  # (B, G, D)
        sq = x.new_zeros(B, self.num_fields, D).index_add(1, groups, x * x)  # (B, G, D)
        if self.kernel_mf is not None:
            rows, cols = pair_indices(self.num_fields, x.device)
            h_mf = (s.index_select(1, rows) * s.index_select(1, cols) * self.kernel_mf).sum(dim=1)  # (B, D)
        else:
            h_mf = x.new_zeros(B, D)  # (B, D)
        h_fm = ((s.pow(2) - sq) * self.kernel_fm).sum(dim=1)  # (B, D)
        if self.bias_mf is not None:
            h_mf = h_mf + self.bias_mf
            h_fm = h_fm + self.bias_fm
        return h_mf + h_fm
