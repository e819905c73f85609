"""Layers over padded behaviour sequences with true lengths: pooling, target attention, weighting.

Notation: ``B`` batch, ``L`` padded sequence length, ``E`` embedding width of a sequence position (the
concatenated embeddings of the history features), ``H`` hidden width.

A sequence arrives as ``Tensor (B, L, E)`` plus ``lengths: Tensor (B,)``: position ``l`` of row ``b`` is valid
when ``l < lengths[b]``. Every layer here gives padded positions no weight at all, so their values never change an
output (the tests change them and check). Shapes follow DeepCTR-Torch (pooled outputs are ``(B, 1, E)``).

>>> import torch
>>> seq, lengths = torch.randn(2, 4, 3), torch.tensor([2, 0])
>>> tuple(SequencePoolingLayer("mean")(seq, lengths).shape)
(2, 1, 3)
>>> att = AttentionSequencePoolingLayer((8,), "relu", weight_normalization=True, embedding_dim=3)
>>> tuple(att(torch.randn(2, 1, 3), seq, lengths).shape)
(2, 1, 3)
>>> masked_softmax(torch.zeros(2, 3), sequence_mask(torch.tensor([2, 0]), 3))
tensor([[0.5000, 0.5000, 0.0000],
        [0.0000, 0.0000, 0.0000]])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dist_ctr.layers.core import DNN

__all__ = [
    "AttentionSequencePoolingLayer",
    "LocalActivationUnit",
    "SequencePoolingLayer",
    "WeightedSequenceLayer",
    "masked_softmax",
    "sequence_mask",
]


def sequence_mask(lengths: torch.Tensor, maxlen: int) -> torch.Tensor:
    """Valid positions. Returns ``Tensor (B, L)`` bool, ``True`` where ``l < lengths[b]``."""
    positions = torch.arange(maxlen, device=lengths.device)  # (L,)
    return positions.unsqueeze(0) < lengths.to(positions.dtype).unsqueeze(1)  # (B, L)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the valid entries of ``dim`` only; masked entries get exactly 0, and a slice with no valid entry
    gives all zeros (never NaN).

    Args:
        scores (Tensor): any shape.
        mask (Tensor): bool, broadcastable to ``scores``.
    """
    mask = mask.expand_as(scores)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)


class SequencePoolingLayer(nn.Module):
    """Sum / mean / max over the valid positions of a sequence.

    Args:
        mode (str): "sum" | "mean" | "max". Empty sequences give zeros in every mode.

    Call: ``forward(seq: Tensor (B, L, E), lengths: Tensor (B,)) -> Tensor (B, 1, E)``.
    """

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"SequencePoolingLayer: mode must be 'sum', 'mean' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = sequence_mask(lengths, seq.shape[1]).unsqueeze(-1)  # (B, L, 1)
        if self.mode == "max":
            filled = seq.masked_fill(~mask, torch.finfo(seq.dtype).min)  # (B, L, E)
            out = filled.max(dim=1, keepdim=True).values  # (B, 1, E)
            has_any = (lengths > 0).view(-1, 1, 1)  # (B, 1, 1)
            return torch.where(has_any, out, torch.zeros_like(out))
        out = (seq * mask.to(seq.dtype)).sum(dim=1, keepdim=True)  # (B, 1, E)
        if self.mode == "mean":
            out = out / lengths.clamp(min=1).to(seq.dtype).view(-1, 1, 1)
        return out


class WeightedSequenceLayer(nn.Module):
    """Scales each position of a sequence by a per-position weight (DeepCTR's ``weight_name`` sequences).

    Args:
        weight_normalization (bool): softmax the weights over the valid positions; otherwise padded positions are
            zeroed and the weights used as given.

    Call: ``forward(seq: Tensor (B, L, E), lengths: Tensor (B,), weight: Tensor (B, L, 1) | (B, L))
    -> Tensor (B, L, E)``.
    """

    def __init__(self, weight_normalization: bool = True) -> None:
        super().__init__()
        self.weight_normalization = weight_normalization

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        B, L = seq.shape[0], seq.shape[1]
        w = weight.reshape(B, L)  # (B, L)
        mask = sequence_mask(lengths, L)  # (B, L)
        w = masked_softmax(w, mask) if self.weight_normalization else w * mask.to(w.dtype)
        return seq * w.unsqueeze(-1)  # (B, L, E)


class LocalActivationUnit(nn.Module):
    """DIN's activation unit: a score per history position from ``[q, k, q - k, q * k]``.

    Args:
        hidden_units (Sequence[int]): attention MLP widths.
        embedding_dim (int): ``E``.
        activation (str): MLP activation ("dice", "sigmoid", "relu", ...).
        dropout_rate (float): MLP dropout.
        use_bn (bool): batch norm in the MLP.
        init_std (float | None): normal init std of the MLP weights (DeepCTR-Torch's 1e-4); ``None`` keeps
            PyTorch's default ``nn.Linear`` init, under which the scores differ across positions from the first
            step (with 1e-4 and sigmoid activations they are equal in float32 and the deeper layers get no
            gradient at first).
        use_bias (bool): bias of the output layer (useless when the scores are softmax-normalised).

    Call: ``forward(query: Tensor (B, 1, E), keys: Tensor (B, L, E)) -> Tensor (B, L, 1)`` raw scores.
    """

    def __init__(self, hidden_units: Sequence[int] = (64, 32), embedding_dim: int = 4, activation: str = "sigmoid",
                 dropout_rate: float = 0.0, use_bn: bool = False, init_std: float | None = 1e-4,
                 use_bias: bool = True) -> None:
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.dnn = DNN(4 * self.embedding_dim, hidden_units, activation, dropout_rate, use_bn,
                       1e-4 if init_std is None else init_std)
        if init_std is None:
            for m in self.dnn.layers:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        self.dense = nn.Linear(self.dnn.output_dim, 1, bias=use_bias)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        layers = self.dnn.layers
        if not len(layers):
            q = query.expand(-1, keys.shape[1], -1)  # (B, L, E)
            return self.dense(torch.cat([q, keys, q - keys, q * keys], dim=-1))  # (B, L, 1)
        # The first layer on [q, k, q - k, q * k] is q (W_q + W_d)^T + k (W_k - W_d)^T + (q * k) W_p^T: the query's
        # term once per row, broadcast over the L positions, and no (B, L, 4E) input is built.
        first = layers[0]
        w_q, w_k, w_d, w_p = first.weight.split(self.embedding_dim, dim=1)  # (H, E) each
        h = (F.linear(query, w_q + w_d, first.bias)  # (B, 1, H)
             + F.linear(keys, w_k - w_d) + F.linear(query * keys, w_p))  # (B, L, H)
        rest = layers[1:]
        if any(isinstance(m, nn.BatchNorm1d) for m in rest):
            B, L, H = h.shape
            h = rest(h.reshape(B * L, H)).view(B, L, -1)  # (B, L, H_k)
        else:
            h = rest(h)  # (B, L, H_k)
        return self.dense(h)  # (B, L, 1)

    @property
    def positionwise(self) -> bool:
        """Whether a position's score depends on that position alone: no batch statistics (batch norm, Dice) and
        no random dropout in the MLP, so :meth:`pair_scores` over some positions equals :meth:`forward` there."""
        for m in self.dnn.layers:
            if isinstance(m, nn.Dropout):
                if self.training and m.p > 0:
                    return False
            elif isinstance(m, nn.BatchNorm1d) or not isinstance(m, POSITIONWISE_MODULES):
                return False
        return True

    def pair_scores(self, query: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Raw scores of some (row, key) pairs only, e.g. the valid positions of padded rows.

        ``query: Tensor (B, 1, E)``, ``keys: Tensor (P, E)``, ``rows: Tensor (P,)`` (the row of each key)
        -> ``Tensor (P,)``: :meth:`forward`'s scores of those pairs (needs :attr:`positionwise`).
        """
        if not self.positionwise:
            raise ValueError("LocalActivationUnit.pair_scores needs an MLP without batch statistics or dropout")
        B = query.shape[0]
        q = query.reshape(B, self.embedding_dim)  # (B, E)
        q_rows = q.index_select(0, rows)  # (P, E)
        layers = self.dnn.layers
        if not len(layers):
            return self.dense(torch.cat([q_rows, keys, q_rows - keys, q_rows * keys], dim=-1)).squeeze(-1)  # (P,)
        first = layers[0]
        w_q, w_k, w_d, w_p = first.weight.split(self.embedding_dim, dim=1)  # (H, E) each
        h = (F.linear(q, w_q + w_d, first.bias).index_select(0, rows)  # (P, H)
             + F.linear(keys, w_k - w_d) + F.linear(q_rows * keys, w_p))  # (P, H)
        return self.dense(layers[1:](h)).squeeze(-1)  # (P,)


POSITIONWISE_MODULES = (nn.Linear, nn.Dropout, nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.PReLU, nn.LeakyReLU,
                        nn.GELU, nn.SiLU)


class AttentionSequencePoolingLayer(nn.Module):
    """DIN's target attention: history positions weighted by their :class:`LocalActivationUnit` score.

    Args:
        att_hidden_units (Sequence[int]): attention MLP widths.
        att_activation (str): attention MLP activation.
        weight_normalization (bool): softmax the scores over valid positions (DIEN, BST, DSIN); otherwise the raw
            scores of valid positions are used and padded ones zeroed (DIN's default).
        return_score (bool): return the normalised scores ``(B, 1, L)`` instead of the pooled vector.
        embedding_dim (int): ``E``.
        dropout_rate (float), use_bn (bool), init_std (float | None): attention MLP options (see
            :class:`LocalActivationUnit`). With ``weight_normalization`` the output layer has no bias (softmax
            ignores a shift common to all positions).

    Call: ``forward(query: Tensor (B, 1, E), keys: Tensor (B, L, E), keys_length: Tensor (B,))
    -> Tensor (B, 1, E)`` (or scores ``(B, 1, L)``). Rows of length 0 give zeros.
    """

    def __init__(self, att_hidden_units: Sequence[int] = (80, 40), att_activation: str = "sigmoid",
                 weight_normalization: bool = False, return_score: bool = False, embedding_dim: int = 4,
                 dropout_rate: float = 0.0, use_bn: bool = False, init_std: float | None = 1e-4) -> None:
        super().__init__()
        self.weight_normalization = weight_normalization
        self.return_score = return_score
        self.local_att = LocalActivationUnit(att_hidden_units, embedding_dim, att_activation, dropout_rate, use_bn,
                                             init_std, use_bias=not weight_normalization)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, keys_length: torch.Tensor) -> torch.Tensor:
        L = keys.shape[1]
        scores = self.local_att(query, keys).transpose(1, 2)  # (B, 1, L)
        mask = sequence_mask(keys_length, L).unsqueeze(1)  # (B, 1, L)
        if self.weight_normalization:
            scores = masked_softmax(scores, mask)
        else:
            scores = scores * mask.to(scores.dtype)
        if self.return_score:
            return scores
        return torch.bmm(scores, keys * mask.transpose(1, 2).to(keys.dtype))  # (B, 1, E)

    @property
    def positionwise(self) -> bool:
        """Whether :meth:`packed_scores` applies (see :attr:`LocalActivationUnit.positionwise`)."""
        return self.local_att.positionwise

    def packed_scores(self, query: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, flat: torch.Tensor,
                      max_len: int) -> torch.Tensor:
        """The scores of :meth:`forward` (``return_score``) at the valid positions only, with the keys given there.

        ``query: Tensor (B, 1, E)``; ``keys: Tensor (P, E)`` the valid positions, ``rows: Tensor (P,)`` their row
        ``b`` and ``flat: Tensor (P,)`` their place ``b * L + t`` in the padded ``(B * L)`` batch; ``max_len`` is
        ``L`` -> ``Tensor (P,)``. The MLP runs on the ``P`` valid positions rather than all ``B * L``.
        """
        B, L = query.shape[0], int(max_len)
        scores = self.local_att.pair_scores(query, keys, rows)  # (P,)
        if not self.weight_normalization:
            return scores
        filled = scores.new_full((B * L,), torch.finfo(scores.dtype).min).index_copy(0, flat, scores)  # (B * L,)
        return torch.softmax(filled.view(B, L), dim=-1).view(B * L).index_select(0, flat)  # (P,)
