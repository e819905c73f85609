"""Self-attention over padded sequences: DeepCTR's ``Transformer`` (BST, DSIN) with sinusoidal positional
encoding, and DSIN's ``BiasEncoding``.

Notation: ``B`` batch, ``L`` padded sequence length (``Lq`` queries, ``Lk`` keys), ``E`` input embedding width,
``h`` heads, ``d`` width per head (``att_embedding_size``), ``S`` sessions.

>>> import torch
>>> tr = Transformer(8, att_embedding_size=4, head_num=2, output_type=None)
>>> x, n = torch.randn(2, 5, 8), torch.tensor([5, 2])
>>> y = tr(x, x, n, n)
>>> tuple(y.shape), bool(y[1, 2:].abs().sum() == 0)
((2, 5, 8), True)
>>> tuple(BiasEncoding(3, 5, 8)(torch.randn(2, 3, 5, 8)).shape)
(2, 3, 5, 8)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from dist_ctr.layers.sequence import masked_softmax, sequence_mask

__all__ = ["BiasEncoding", "Transformer", "sinusoid_encoding"]


def sinusoid_encoding(length: int, dim: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Vaswani et al.'s positional encoding: ``PE[p, 2i] = sin(p / 10000^(2i/E))``, ``PE[p, 2i+1] = cos(...)``.

    Returns ``Tensor (L, E)``.
    """
    pos = torch.arange(length, device=device, dtype=torch.float64).unsqueeze(1)  # (L, 1)
    i = torch.arange(dim, device=device)  # (E,)
    angle = pos / torch.pow(10000.0, (2 * (i // 2)).to(torch.float64) / dim)  # (L, E)
    pe = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))  # (L, E)
    return pe.to(dtype)


class Transformer(nn.Module):
    """DeepCTR's ``Transformer`` layer: multi-head scaled dot-product attention of queries over keys, a residual
    projection, ReLU, optional layer norm and a position-wise feed-forward block (width ``4 h d``).

    Padded keys get no attention weight, padded query positions output zeros, a query with no key to attend to
    (length 0, or only itself under ``blinding``) gets a zero attention vector.

    Args:
        embedding_size (int): ``E`` of the inputs.
        att_embedding_size (int): ``d``.
        head_num (int): ``h``; the output width is ``h * d``.
        dropout_rate (float): dropout on the attention weights and in the feed-forward block.
        use_positional_encoding (bool): add the sinusoidal :func:`sinusoid_encoding` to queries and keys.
        use_res (bool): add ``W_res`` times the queries to the attention output (and the feed-forward residual).
        use_feed_forward (bool): the position-wise block ``relu(x W1) W2``.
        use_layer_norm (bool): layer norm after the attention and after the feed-forward block.
        blinding (bool): a position does not attend to itself (DSIN's self-attention; needs ``Lq == Lk``).
        output_type (str | None): None -> the sequence ``(B, Lq, h d)``; "mean" / "sum" -> pooled over the valid
            query positions ``(B, 1, h d)``.

    Call: ``forward(queries: Tensor (B, Lq, E), keys: Tensor (B, Lk, E), query_lengths: Tensor (B,),
    key_lengths: Tensor (B,)) -> Tensor``.
    """

    def __init__(self, embedding_size: int, att_embedding_size: int = 1, head_num: int = 8,
                 dropout_rate: float = 0.0, use_positional_encoding: bool = True, use_res: bool = True,
                 use_feed_forward: bool = True, use_layer_norm: bool = False, blinding: bool = True,
                 output_type: Optional[str] = "mean") -> None:
        super().__init__()
        if head_num < 1 or att_embedding_size < 1:
            raise ValueError(f"Transformer: head_num and att_embedding_size must be >= 1, got {head_num}, "
                             f"{att_embedding_size}")
        if output_type not in (None, "mean", "sum"):
            raise ValueError(f"Transformer: output_type must be None, 'mean' or 'sum', got {output_type!r}")
        self.embedding_size, self.d, self.h = int(embedding_size), int(att_embedding_size), int(head_num)
        units = self.d * self.h
        self.output_dim = units
        self.use_positional_encoding, self.use_res = use_positional_encoding, use_res
        self.use_feed_forward, self.use_layer_norm = use_feed_forward, use_layer_norm
        self.blinding, self.output_type = blinding, output_type
        self.w_query = nn.Linear(embedding_size, units, bias=False)
        self.w_key = nn.Linear(embedding_size, units, bias=False)
        self.w_value = nn.Linear(embedding_size, units, bias=False)
        self.w_res: Optional[nn.Linear] = nn.Linear(embedding_size, units, bias=False) if use_res else None
        self.ffn: Optional[nn.Sequential] = None
        if use_feed_forward:
            self.ffn = nn.Sequential(nn.Linear(units, 4 * units), nn.ReLU(), nn.Dropout(dropout_rate),
                                     nn.Linear(4 * units, units))
        self.ln_att: Optional[nn.LayerNorm] = nn.LayerNorm(units) if use_layer_norm else None
        self.ln_ffn: Optional[nn.LayerNorm] = nn.LayerNorm(units) if use_layer_norm and use_feed_forward else None
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_lengths: torch.Tensor,
                key_lengths: torch.Tensor) -> torch.Tensor:
        B, Lq, Lk = queries.shape[0], queries.shape[1], keys.shape[1]
        q_mask = sequence_mask(query_lengths, Lq)  # (B, Lq)
        k_mask = sequence_mask(key_lengths, Lk)  # (B, Lk)
        queries = queries * q_mask.unsqueeze(-1).to(queries.dtype)
        keys = keys * k_mask.unsqueeze(-1).to(keys.dtype)
        if self.use_positional_encoding:
            queries = queries + sinusoid_encoding(Lq, self.embedding_size, queries.device, queries.dtype)
            keys = keys + sinusoid_encoding(Lk, self.embedding_size, keys.device, keys.dtype)
        q = self.w_query(queries).view(B, Lq, self.h, self.d).transpose(1, 2)  # (B, h, Lq, d)
        k = self.w_key(keys).view(B, Lk, self.h, self.d).transpose(1, 2)  # (B, h, Lk, d)
        v = self.w_value(keys).view(B, Lk, self.h, self.d).transpose(1, 2)  # (B, h, Lk, d)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)  # (B, h, Lq, Lk)
        allowed = k_mask.view(B, 1, 1, Lk)  # (B, 1, 1, Lk)
        if self.blinding:
            if Lq != Lk:
                raise ValueError(f"Transformer(blinding=True) needs queries and keys of one length, got {Lq}, {Lk}")
            allowed = allowed & ~torch.eye(Lq, dtype=torch.bool, device=scores.device).view(1, 1, Lq, Lk)
        weights = self.dropout(masked_softmax(scores, allowed))  # (B, h, Lq, Lk)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(B, Lq, self.h * self.d)  # (B, Lq, h d)
        if self.w_res is not None:
            out = out + self.w_res(queries)
        out = torch.relu(out)
        if self.ln_att is not None:
            out = self.ln_att(out)
        if self.ffn is not None:
            ff = self.ffn(out)  # (B, Lq, h d)
            out = out + ff if self.use_res else ff
            if self.ln_ffn is not None:
                out = self.ln_ffn(out)
        out = out * q_mask.unsqueeze(-1).to(out.dtype)  # (B, Lq, h d), zero at padded queries
        if self.output_type is None:
            return out
        pooled = out.sum(dim=1, keepdim=True)  # (B, 1, h d)
        if self.output_type == "mean":
            pooled = pooled / query_lengths.clamp(min=1).to(out.dtype).view(B, 1, 1)
        return pooled


class BiasEncoding(nn.Module):
    """DSIN's bias encoding: ``x[s, l, e] + w_sess[s] + w_pos[l] + w_item[e]`` for every session ``s``.

    Args:
        sess_max_count (int): ``S``.
        seq_len_max (int): ``L``.
        embedding_size (int): ``E``.
        init_std (float): normal init std of the three bias vectors (DeepCTR's 1e-4).

    Call: ``forward(x: Tensor (B, S, L, E)) -> Tensor (B, S, L, E)``.
    """

    def __init__(self, sess_max_count: int, seq_len_max: int, embedding_size: int, init_std: float = 1e-4) -> None:
        super().__init__()
        self.sess_bias = nn.Parameter(torch.randn(sess_max_count, 1, 1) * init_std)
        self.seq_bias = nn.Parameter(torch.randn(1, seq_len_max, 1) * init_std)
        self.item_bias = nn.Parameter(torch.randn(1, 1, embedding_size) * init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.sess_bias + self.seq_bias + self.item_bias).unsqueeze(0)  # (B, S, L, E)
