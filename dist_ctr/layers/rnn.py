"""Recurrent layers over padded sequences with true lengths: DIEN's attentional GRU cells, ``DynamicGRU``, and
DSIN's ``BiLSTM``.

Notation: ``B`` batch, ``L`` padded sequence length, ``N`` input width, ``H`` hidden width.

Every recurrence loops over the ``L`` time steps (vectorised over the batch, never a loop over rows) and keeps a
row's state unchanged once ``t >= lengths[b]``: the final state is the state at each row's true length (the initial
state, zeros, for length 0) and padded inputs never reach a valid output. :class:`DynamicGRU` sorts the rows by
length once per call, so step ``t`` computes the gates of the rows still running only (as a packed sequence does);
the step, the packing and the recurrence over packed positions live in :mod:`dist_ctr.layers.packed_gru`.

Gate layout and sign convention follow ``torch.nn.GRUCell`` (``weight_ih: (3H, N)`` with rows ``[r | z | n]``,
``h' = (1 - z) * n + z * h``), so the weights of a trained ``nn.GRU`` / ``nn.GRUCell`` load as they are. The paper's
update gate is ``u = 1 - z``: AUGRU scales it by the attention score ``a`` (``u' = a * u``,
``h' = (1 - u') * h + u' * n``); AGRU replaces it by ``a`` (``h' = (1 - a) * h + a * n``).

>>> import torch
>>> gru = DynamicGRU(3, 5, gru_type="AUGRU")
>>> out, last = gru(torch.randn(2, 4, 3), torch.tensor([4, 0]), torch.rand(2, 4))
>>> tuple(out.shape), tuple(last.shape), bool(last[1].abs().sum() == 0)
((2, 4, 5), (2, 5), True)
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dist_ctr.layers.packed_gru import PackedRows, gate_step, gru_steps, packed_gru
from dist_ctr.layers.sequence import sequence_mask

__all__ = ["AGRUCell", "AUGRUCell", "BiLSTM", "DynamicGRU", "PackedRows", "gate_step", "gru_steps", "packed_gru",
           "packed_rnn", "reverse_padded"]



class _GateCell(nn.Module):
    """Shared parameters of the attentional GRU cells: ``G`` gate blocks of ``H`` rows each."""

    def __init__(self, input_size: int, hidden_size: int, gates: int, bias: bool) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        if bias:
            self.bias_ih: Optional[nn.Parameter] = nn.Parameter(torch.empty(gates * hidden_size))
            self.bias_hh: Optional[nn.Parameter] = nn.Parameter(torch.empty(gates * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``torch.nn.GRUCell``'s init: uniform in ``±1 / sqrt(H)``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class AUGRUCell(_GateCell):
    """GRU with attentional update gate (DIEN): ``u' = a * (1 - z)``, ``h' = (1 - u') * h + u' * n``.

    With ``a = 1`` it is exactly ``torch.nn.GRUCell`` (same parameter names and layout).

    Call: ``forward(x: Tensor (B, N), h: Tensor (B, H), att: Tensor (B,) | (B, 1)) -> Tensor (B, H)``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, 3, bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        return gate_step("AUGRU", F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh, att)


class AGRUCell(_GateCell):
    """Attention-based GRU (DIEN): the attention score replaces the update gate, ``h' = (1 - a) * h + a * n``.

    It has no update gate, so its weights hold only the reset and candidate blocks: ``weight_ih: (2H, N)`` with
    rows ``[r | n]`` (the ``r`` and ``n`` blocks of a ``GRUCell``).

    Call: ``forward(x: Tensor (B, N), h: Tensor (B, H), att: Tensor (B,) | (B, 1)) -> Tensor (B, H)``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, 2, bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        return gate_step("AGRU", F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh, att)


class _PackedInputGates(torch.autograd.Function):
    """The input gate pre-activations ``x W_ih^T + b_ih`` of the valid positions only, packed.

    ``apply(inputs: Tensor (B, L, N), order: Tensor (B,), sorted_pos: Tensor (P,), pos: Tensor (P,),
    weight: Tensor (G H, N), bias: Tensor (G H,) | None) -> Tensor (P, G H)``. ``order`` sorts the rows;
    packed position ``p`` is sorted row ``i`` at step ``t``, ``sorted_pos[p] = i * L + t`` and
    ``pos[p] = order[i] * L + t`` (its place in the unsorted ``inputs``).

    The forward runs one GEMM over all ``B * L`` positions of the sorted rows, so each valid row's gates are
    bitwise those of ``F.linear`` over the sorted padded batch (a BLAS GEMM's rounding can depend on its row count
    and a row's place in it), then gathers the valid rows. The backward uses the ``P`` valid positions only: two
    GEMMs of ``P`` rows and one scatter into the input gradient, zero at padded positions. It computes in the
    dtype of the incoming gradient (that of the forward's GEMM, bf16 under autocast).
    """

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, order: torch.Tensor, sorted_pos: torch.Tensor,  # type: ignore[override]
                pos: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        B, L = inputs.shape[0], inputs.shape[1]
        gi = F.linear(inputs.index_select(0, order), weight, bias)  # (B, L, G H)
        ctx.save_for_backward(inputs, pos, weight)
        ctx.has_bias = bias is not None
        return gi.reshape(B * L, gi.shape[-1]).index_select(0, sorted_pos)  # (P, G H)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]  # grad: (P, G H)
        inputs, pos, weight = ctx.saved_tensors
        B, L, N = inputs.shape
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            g_x = grad.mm(weight.to(grad.dtype)).to(inputs.dtype)  # (P, N)
            grad_inputs = inputs.new_zeros(B * L, N).index_copy(0, pos, g_x).view(B, L, N)
        if ctx.needs_input_grad[4]:
            x = inputs.reshape(B * L, N).index_select(0, pos).to(grad.dtype)  # (P, N)
            grad_weight = grad.t().mm(x).to(weight.dtype)  # (G H, N)
        if ctx.has_bias and ctx.needs_input_grad[5]:
            grad_bias = grad.sum(0).to(weight.dtype)  # (G H,)
        return grad_inputs, None, None, None, grad_weight, grad_bias



class DynamicGRU(nn.Module):
    """A GRU / AGRU / AUGRU run over padded sequences, stopping each row at its true length.

    Args:
        input_size (int): ``N``.
        hidden_size (int): ``H``.
        bias (bool): gate biases.
        gru_type (str): "GRU" (``torch.nn.GRUCell``), "AGRU" or "AUGRU".

    Call: ``forward(inputs: Tensor (B, L, N), lengths: Tensor (B,), att_scores: Tensor (B, L) | None = None,
    h0: Tensor (B, H) | None = None, *, return_outputs: bool = True) -> (outputs: Tensor (B, L, H) | None,
    final: Tensor (B, H))``. ``outputs`` is zero at padded positions, and ``None`` with ``return_outputs=False``
    (then only the final states are built); ``final`` is the state at each row's length (``h0``, default zeros,
    for length 0). ``att_scores`` is required by AGRU / AUGRU and ignored by GRU. :meth:`forward_packed` runs on
    positions already packed (:class:`PackedRows`).

    The rows are sorted by length, longest first, and the valid positions are packed time-major (the layout of a
    ``torch.nn.utils.rnn.PackedSequence``): step ``t`` reads one contiguous block of the gate pre-activations and
    scores of its running rows (:func:`gru_steps`).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, gru_type: str = "AUGRU") -> None:
        super().__init__()
        if gru_type not in ("GRU", "AGRU", "AUGRU"):
            raise ValueError(f"DynamicGRU: gru_type must be 'GRU', 'AGRU' or 'AUGRU', got {gru_type!r}")
        self.gru_type = gru_type
        self.hidden_size = int(hidden_size)
        if gru_type == "GRU":
            self.cell: nn.Module = nn.GRUCell(input_size, hidden_size, bias)
        elif gru_type == "AGRU":
            self.cell = AGRUCell(input_size, hidden_size, bias)
        else:
            self.cell = AUGRUCell(input_size, hidden_size, bias)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, att_scores: Optional[torch.Tensor] = None,
                h0: Optional[torch.Tensor] = None, *,
                return_outputs: bool = True) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        B, L, H = inputs.shape[0], inputs.shape[1], self.hidden_size
        if self.gru_type != "GRU" and att_scores is None:
            raise ValueError(f"DynamicGRU({self.gru_type}) needs att_scores (B, L)")
        packing = PackedRows.build(lengths, L)
        cell = self.cell
        # one GEMM over the sorted padded rows, so the gates are bitwise those of F.linear over that batch
        gi = _PackedInputGates.apply(inputs, packing.order, packing.sorted_flat, packing.flat, cell.weight_ih,
                                     cell.bias_ih)  # (P, G H)
        att = packing.pack(att_scores) if att_scores is not None and self.gru_type != "GRU" else None  # (P,)
        states = gru_steps(self.gru_type, gi, packing, cell.weight_hh, cell.bias_hh, att, h0)  # (P, H)
        final = packing.final(states, h0)  # (B, H)
        if not return_outputs:
            return None, final
        if not packing.active:
            return inputs.new_zeros(B, L, H), final
        return packing.unpack(states), final  # (B, L, H)

    def forward_packed(self, x: torch.Tensor, packing: PackedRows, att: Optional[torch.Tensor] = None,
                       h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The states after every packed step: ``x: Tensor (P, N)``, ``att: Tensor (P,) | None``, ``h0: Tensor
        (B, H) | None`` -> ``Tensor (P, H)`` (:meth:`PackedRows.final` picks the final states)."""
        if self.gru_type != "GRU" and att is None:
            raise ValueError(f"DynamicGRU({self.gru_type}) needs att (P,)")
        gi = F.linear(x, self.cell.weight_ih, self.cell.bias_ih)  # (P, G H)
        return gru_steps(self.gru_type, gi, packing, self.cell.weight_hh, self.cell.bias_hh, att, h0)


def packed_rnn(rnn: nn.RNNBase, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a ``batch_first`` ``torch.nn`` RNN over each row's first ``lengths[b]`` positions only (a packed
    sequence), from a zero state.

    ``Tensor (B, L, N), Tensor (B,) -> Tensor (B, L, H)``, zero at padded positions (and for rows of length 0).
    The valid outputs equal those of the RNN run over the padded rows, which are causal.
    """
    L = seq.shape[1]
    valid = lengths.clamp(min=1, max=L)  # a length-0 row runs one step, masked out below
    packed = pack_padded_sequence(seq, valid.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=L)  # (B, L, H)
    return out * sequence_mask(lengths, L).unsqueeze(-1).to(out.dtype)


def reverse_padded(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``lengths[b]`` positions, leaving padded positions in place.

    ``Tensor (B, L, E), Tensor (B,) -> Tensor (B, L, E)``; applying it twice gives the input back.
    """
    B, L = seq.shape[0], seq.shape[1]
    t = torch.arange(L, device=seq.device).unsqueeze(0).expand(B, L)  # (B, L)
    n = lengths.to(t.dtype).unsqueeze(1)  # (B, 1)
    idx = torch.where(t < n, n - 1 - t, t)  # (B, L)
    return seq.gather(1, idx.unsqueeze(-1).expand_as(seq))  # (B, L, E)


class BiLSTM(nn.Module):
    """DeepCTR's ``BiLSTM`` (DSIN's session interest interacting layer): stacked forward and backward LSTMs with
    hidden width ``E``, each direction stacked on its own; the backward direction reads each row's valid positions
    in reverse. The last ``res_layers`` layers add their input (residual).

    Args:
        input_size (int): ``E`` (also the hidden width).
        layers (int): stacked layers per direction.
        res_layers (int): how many of the last layers are residual.
        dropout_rate (float): dropout on each layer's input (training only).
        merge_mode (str): "fw" | "bw" | "sum" | "ave" | "mul" | "concat".

    Call: ``forward(seq: Tensor (B, L, E), lengths: Tensor (B,)) -> Tensor (B, L, E)`` (``(B, L, 2E)`` for
    "concat"); zero at padded positions.
    """

    MERGE_MODES = ("fw", "bw", "sum", "ave", "mul", "concat")

    def __init__(self, input_size: int, layers: int = 2, res_layers: int = 0, dropout_rate: float = 0.2,
                 merge_mode: str = "ave") -> None:
        super().__init__()
        if merge_mode not in self.MERGE_MODES:
            raise ValueError(f"BiLSTM: merge_mode must be one of {self.MERGE_MODES}, got {merge_mode!r}")
        if layers < 1 or not 0 <= res_layers <= layers:
            raise ValueError(f"BiLSTM: need layers >= 1 and 0 <= res_layers <= layers, got {layers}, {res_layers}")
        self.layers, self.res_layers, self.merge_mode = layers, res_layers, merge_mode
        self.output_dim = 2 * input_size if merge_mode == "concat" else input_size
        self.fw = nn.ModuleList([nn.LSTM(input_size, input_size, batch_first=True) for _ in range(layers)])
        self.bw = nn.ModuleList([nn.LSTM(input_size, input_size, batch_first=True) for _ in range(layers)])
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = sequence_mask(lengths, seq.shape[1]).unsqueeze(-1).to(seq.dtype)  # (B, L, 1)
        x_fw = seq * mask
        x_bw = reverse_padded(x_fw, lengths)  # (B, L, E), time reversed within each row
        for i in range(self.layers):
            y_fw = self.fw[i](self.dropout(x_fw))[0]  # (B, L, E)
            y_bw = self.bw[i](self.dropout(x_bw))[0]  # (B, L, E)
            if i >= self.layers - self.res_layers:
                y_fw, y_bw = y_fw + x_fw, y_bw + x_bw
            x_fw, x_bw = y_fw * mask, y_bw * mask  # the valid positions are the same in reversed order
        fw, bw = x_fw, reverse_padded(x_bw, lengths)  # both in forward time order
        if self.merge_mode == "fw":
            return fw
        if self.merge_mode == "bw":
            return bw
        if self.merge_mode == "sum":
            return fw + bw
        if self.merge_mode == "ave":
            return (fw + bw) / 2
        if self.merge_mode == "mul":
            return fw * bw
        return torch.cat([fw, bw], dim=-1)  # (B, L, 2E)
