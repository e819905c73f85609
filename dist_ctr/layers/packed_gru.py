"""Gated recurrences over packed positions: the GRU / AGRU / AUGRU step (:func:`gate_step`), the packing of a
padded batch's valid positions (:class:`PackedRows`), and a whole recurrence over those positions with its backward
written by hand (:func:`gru_steps`, :func:`packed_gru`).

Notation: ``B`` batch, ``L`` padded sequence length, ``P`` valid (packed) positions, ``N`` input width, ``H``
hidden width, ``G`` gate blocks (3, or 2 for AGRU).

Gate layout and sign convention follow ``torch.nn.GRUCell`` (rows ``[r | z | n]``, ``h' = (1 - z) * n + z * h``);
AUGRU scales the update ``u = 1 - z`` by the attention score ``a``; AGRU replaces it by ``a``
(:mod:`dist_ctr.layers.rnn` has the cells and the padded-batch layers built on these).

>>> import torch
>>> packing = PackedRows.build(torch.tensor([3, 0, 1]), 3)
>>> packing.active, packing.num_packed
([2, 1, 1], 4)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PackedRows", "gate_step", "gru_steps", "packed_gru"]


def gate_step(gru_type: str, gi: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor,
              bias_hh: Optional[torch.Tensor], att: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One step of a GRU / AGRU / AUGRU from the input's gate pre-activations ``gi = x W_ih^T + b_ih``.

    ``gi: (B, G H)``, ``h: (B, H)``, ``att: (B,) | (B, 1)`` (AGRU / AUGRU) -> ``(B, H)``. "GRU" is
    ``torch.nn.GRUCell``'s formula; "AUGRU" and "AGRU" are :class:`AUGRUCell` / :class:`AGRUCell`'s.
    """
    gh = F.linear(h, weight_hh, bias_hh)  # (B, G H)
    if gru_type == "AGRU":
        i_r, i_n = gi.chunk(2, dim=1)
        h_r, h_n = gh.chunk(2, dim=1)
        r = torch.sigmoid(i_r + h_r)
        n = torch.tanh(i_n + r * h_n)
        a = att.reshape(-1, 1)  # type: ignore[union-attr]  # (B, 1)
        return (1.0 - a) * h + a * n
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    if gru_type == "GRU":
        return (1.0 - z) * n + z * h
    u = att.reshape(-1, 1) * (1.0 - z)  # type: ignore[union-attr]  # (B, H) attentional update gate
    return (1.0 - u) * h + u * n



@dataclass(frozen=True)
class PackedRows:
    """Where the valid positions of a padded batch go when packed time-major by length (the layout of a
    ``torch.nn.utils.rnn.PackedSequence``).

    The rows are sorted by length, longest first (a stable sort); step ``t`` runs the ``active[t]`` leading sorted
    rows, and packed position ``p = offset[t] + i`` is step ``t`` of sorted row ``i``. Build it once per batch with
    :meth:`build` (one host sync) and share it between the layers that run over the same lengths.

    Attributes:
        lengths (Tensor): ``(B,)`` true lengths.
        max_len (int): ``L``, the padded length.
        order (Tensor): ``(B,)`` sorted row -> row.
        active (list[int]): running rows of each step that runs (``T <= L`` steps, non-increasing).
        flat (Tensor): ``(P,)`` packed position -> ``b * L + t``, its place in the padded ``(B * L)`` batch.
        sorted_flat (Tensor): ``(P,)`` packed position -> ``i * L + t`` in the sorted padded batch.
        rows (Tensor): ``(P,)`` packed position -> row ``b``.
        last (Tensor): ``(B,)`` row -> packed position of its last valid step (0 for rows of length 0).
    """

    lengths: torch.Tensor
    max_len: int
    order: torch.Tensor
    active: list[int]
    flat: torch.Tensor
    sorted_flat: torch.Tensor
    rows: torch.Tensor
    last: torch.Tensor

    @classmethod
    def build(cls, lengths: torch.Tensor, max_len: int) -> PackedRows:
        """``lengths: Tensor (B,)``, ``max_len`` (``L``, at least ``lengths.max()``) -> the packing."""
        dev, L = lengths.device, int(max_len)
        lengths = lengths.long()
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,)
        steps = torch.arange(L, device=dev)  # (L,)
        counts = (lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(1)  # (L,) running rows per step, non-increasing
        active = [n for n in counts.tolist() if n > 0]  # host sync: running rows of the steps that run
        P = sum(active)
        offset = counts.cumsum(0) - counts  # (L,) first packed position of each step
        step_of = torch.repeat_interleave(steps, counts, output_size=P)  # (P,)
        sorted_row = torch.arange(P, device=dev) - offset.index_select(0, step_of)  # (P,) sorted row i
        rows = order.index_select(0, sorted_row)  # (P,)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.shape[0], device=dev)
        last = torch.zeros_like(order)  # (B,)
        if P:
            last = offset.index_select(0, (lengths - 1).clamp(0, L - 1)) + inverse  # (B,)
            last = torch.where(lengths > 0, last, torch.zeros_like(last))  # (B,)
        return cls(lengths, L, order, active, rows * L + step_of, sorted_row * L + step_of, rows, last)

    @property
    def num_packed(self) -> int:
        """``P``, the number of valid positions."""
        return int(self.flat.shape[0])

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """The valid positions of a padded batch: ``Tensor (B, L, ...) -> Tensor (P, ...)``."""
        B, L = padded.shape[0], padded.shape[1]
        return padded.reshape(B * L, *padded.shape[2:]).index_select(0, self.flat)  # (P, ...)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """The padded batch of packed positions, zero at padded positions: ``Tensor (P, ...) -> (B, L, ...)``."""
        B, L = self.order.shape[0], self.max_len
        out = packed.new_zeros(B * L, *packed.shape[1:]).index_copy(0, self.flat, packed)  # (B * L, ...)
        return out.view(B, L, *packed.shape[1:])  # (B, L, ...)

    def final(self, packed: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each row's state at its last valid step, ``h0`` (default zeros) for rows of length 0:
        ``Tensor (P, H), Tensor (B, H) | None -> Tensor (B, H)``."""
        B = self.order.shape[0]
        start = packed.new_zeros(B, packed.shape[1]) if h0 is None else h0
        if packed.shape[0] == 0:
            return start
        return torch.where((self.lengths > 0).unsqueeze(1), packed.index_select(0, self.last), start)  # (B, H)


def _gate_blocks(gru_type: str) -> int:
    """``G``, the gate blocks of a gate pre-activation row: 2 for AGRU (``[r | n]``), 3 otherwise."""
    return 2 if gru_type == "AGRU" else 3


class _GRUSteps(torch.autograd.Function):
    """The whole recurrence of a GRU / AGRU / AUGRU over packed steps, with its backward written by hand.

    ``apply(gi: Tensor (P, G H), att: Tensor (P, 1) | None, h0: Tensor (active[0], H) | None,
    weight_hh: Tensor (G H, H), bias_hh: Tensor (G H,) | None, gru_type: str, active: list[int]) -> Tensor (P, H)``,
    the state after every packed step (layout of :class:`PackedRows`; ``h0`` holds the initial states of the rows
    that run, default zeros).

    The forward runs :func:`gate_step`'s ops in its order on blocks of preallocated ``(P, .)`` buffers (so its
    states are bitwise those of a loop of :func:`gate_step` calls) and keeps the gates for the backward. The backward
    walks the steps in reverse with a handful of ops each (the gates' derivatives and one ``addmm`` for the state's
    gradient) and writes every step's gate gradients into one buffer; the weight, bias, input-gate and score
    gradients are then one GEMM / reduction over all ``P`` positions. Autograd over the step loop instead records
    some 20 nodes per step (and, in torch's packed ``nn.GRU``, the backward of every step's slice of the input gates
    zero-fills and adds a whole ``(P, G H)`` gradient).
    """

    @staticmethod
    def forward(ctx, gi: torch.Tensor, att: Optional[torch.Tensor],  # type: ignore[override]
                h0: Optional[torch.Tensor], weight_hh: torch.Tensor, bias_hh: Optional[torch.Tensor], gru_type: str,
                active: list[int]) -> torch.Tensor:
        P, H = gi.shape[0], weight_hh.shape[1]
        G = _gate_blocks(gru_type)
        new = gi.new_empty
        gh = new(P, G * H)  # hidden gate pre-activations
        r_all, n_all = new(P, H), new(P, H)  # reset gates, candidates
        z_all = new(P, H) if G == 3 else None  # update gates
        u_all = new(P, H) if G == 3 else None  # the weight of the candidate: 1 - z (GRU), a (1 - z) (AUGRU)
        w_t, one = weight_hh.t(), gi.new_ones(())
        h = gi.new_zeros(active[0], H) if h0 is None else h0
        states: list[torch.Tensor] = []  # fresh tensors: a GEMM's rounding can depend on its input's alignment
        prev: list[torch.Tensor] = []
        o = 0
        for n in active:
            e = o + n
            h = h[:n]  # (n, H) the previous step's leading rows
            prev.append(h)
            g_h = gh[o:e]  # (n, G H)
            if bias_hh is None:
                torch.mm(h, w_t, out=g_h)
            else:
                torch.addmm(bias_hh, h, w_t, out=g_h)
            r, c = r_all[o:e], n_all[o:e]
            torch.add(gi[o:e, :H], g_h[:, :H], out=r).sigmoid_()
            torch.mul(r, g_h[:, (G - 1) * H:], out=c)
            torch.add(gi[o:e, (G - 1) * H:], c, out=c).tanh_()
            if gru_type == "AGRU":
                a = att[o:e]  # type: ignore[index]  # (n, 1)
                h = torch.mul(1.0 - a, h) + torch.mul(a, c)
            else:
                z, u = z_all[o:e], u_all[o:e]  # type: ignore[index]
                torch.add(gi[o:e, H:2 * H], g_h[:, H:2 * H], out=z).sigmoid_()
                if gru_type == "GRU":
                    torch.sub(one, z, out=u)
                    h = torch.mul(u, c) + torch.mul(z, h)
                else:
                    torch.mul(att[o:e], 1.0 - z, out=u)  # type: ignore[index]
                    h = torch.mul(1.0 - u, h) + torch.mul(u, c)
            states.append(h)
            o = e
        out, hp = torch.cat(states), torch.cat(prev)  # (P, H) states, previous states
        ctx.gru_type, ctx.active = gru_type, active
        ctx.has_h0, ctx.has_bias = h0 is not None, bias_hh is not None
        ctx.save_for_backward(att, weight_hh, hp, gh, r_all, z_all, n_all, u_all)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]  # grad_out: (P, H)
        att, weight_hh, hp, gh, r_all, z_all, n_all, u_all = ctx.saved_tensors
        gru_type, active = ctx.gru_type, ctx.active
        P, H = hp.shape
        G = _gate_blocks(gru_type)
        GH = G * H
        diff = n_all - hp  # (P, H) n - h
        # dh'/dh (the direct term), dh'/dn, and the gradient of the update gate's pre-activation per unit dh'
        if gru_type == "AGRU":
            keep, cand, dz = 1.0 - att, att, None  # (P, 1) each
        elif gru_type == "GRU":
            keep, cand = z_all, u_all
            dz = diff.neg().mul_(z_all).mul_(u_all)  # (P, H) (h - n) z (1 - z)
        else:
            keep, cand = 1.0 - u_all, u_all
            dz = diff.mul(att).mul_(z_all).mul_(1.0 - z_all).neg_()  # (P, H) -a (n - h) z (1 - z)
        g_all = grad_out.clone(memory_format=torch.contiguous_format)  # (P, H) dL/dh', the carries added below
        # gradients of the gate pre-activations [r | (z) | n | h_n]: the input gates' are the leading G H columns,
        # the hidden gates' [r | (z) | h_n], so the state's gradient is one GEMM by weight_hh with a zero n block
        dg = grad_out.new_empty(P, GH + H)
        w_ext = torch.cat([weight_hh[:GH - H], weight_hh.new_zeros(H, H), weight_hh[GH - H:]])  # (G H + H, H)
        tanh_bwd, sig_bwd = torch.ops.aten.tanh_backward.grad_input, torch.ops.aten.sigmoid_backward.grad_input
        ends = list(itertools.accumulate(active))
        grad_h0 = None
        for t in range(len(active) - 1, -1, -1):
            n, e = active[t], ends[t]
            o = e - n
            g, d = g_all[o:e], dg[o:e]
            r = r_all[o:e]
            d_n = tanh_bwd(g * cand[o:e], n_all[o:e], grad_input=d[:, GH - H:GH])  # (n, H)
            torch.mul(d_n, r, out=d[:, GH:])
            sig_bwd(d_n * gh[o:e, GH - H:], r, grad_input=d[:, :H])
            if dz is not None:
                torch.mul(g, dz[o:e], out=d[:, H:2 * H])
            if t == 0 and not (ctx.has_h0 and ctx.needs_input_grad[2]):
                break
            dh = torch.addmm(g * keep[o:e], d, w_ext)  # (n, H) dL/dh of the previous state
            if t == 0:
                grad_h0 = dh
            else:
                g_all[o - active[t - 1]:o - active[t - 1] + n].add_(dh)
        grad_gi = grad_att = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_gi = dg[:, :GH]  # (P, G H), rows strided
        if ctx.needs_input_grad[1] and att is not None:
            da = diff if gru_type == "AGRU" else diff * (1.0 - z_all)  # (P, H) dh'/da
            grad_att = (g_all * da).sum(1, keepdim=True)  # (P, 1)
        if ctx.needs_input_grad[3]:
            grad_w = torch.cat([dg[:, :GH - H].t().mm(hp), dg[:, GH:].t().mm(hp)])  # (G H, H)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b = torch.cat([dg[:, :GH - H].sum(0), dg[:, GH:].sum(0)])  # (G H,)
        return grad_gi, grad_att, grad_h0, grad_w, grad_b, None, None


def _steps_autograd(gi: torch.Tensor, att: Optional[torch.Tensor], h0: Optional[torch.Tensor],
                    weight_hh: torch.Tensor, bias_hh: Optional[torch.Tensor], gru_type: str,
                    active: list[int]) -> torch.Tensor:
    """:class:`_GRUSteps` as a loop of :func:`gate_step` calls under autograd (autocast and other dtypes)."""
    h = gi.new_zeros(active[0], weight_hh.shape[1]) if h0 is None else h0
    gis = gi.split(active)  # T x (active[t], G H)
    atts: list[Optional[torch.Tensor]] = list(att.split(active)) if att is not None else [None] * len(active)
    outputs: list[torch.Tensor] = []
    for t, n in enumerate(active):
        h = gate_step(gru_type, gis[t], h[:n], weight_hh, bias_hh, atts[t])  # (n, H)
        outputs.append(h)
    return torch.cat(outputs)  # (P, H)


def gru_steps(gru_type: str, gi: torch.Tensor, packing: PackedRows, weight_hh: torch.Tensor,
              bias_hh: Optional[torch.Tensor], att: Optional[torch.Tensor] = None,
              h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Run a GRU / AGRU / AUGRU over packed steps from the input's gate pre-activations.

    Args:
        gru_type (str): "GRU" | "AGRU" | "AUGRU" (:func:`gate_step`).
        gi (Tensor): ``(P, G H)`` gate pre-activations ``x W_ih^T + b_ih`` of the packed positions.
        packing (PackedRows): the layout of ``gi``.
        weight_hh (Tensor): ``(G H, H)``; bias_hh (Tensor | None): ``(G H,)``.
        att (Tensor | None): ``(P,)`` attention scores (AGRU / AUGRU).
        h0 (Tensor | None): ``(B, H)`` initial states (default zeros).

    Returns:
        Tensor: ``(P, H)``, the state after every packed step (:meth:`PackedRows.final` picks the final states).

    In float32 / float64 outside autocast it runs :class:`_GRUSteps` (hand-written backward); otherwise a loop of
    :func:`gate_step` under autograd. Both compute the same states.
    """
    H = weight_hh.shape[1]
    if not packing.active:
        return gi.new_zeros(0, H)
    att2 = att.reshape(-1, 1) if att is not None and gru_type != "GRU" else None  # (P, 1)
    h_run = None if h0 is None else h0.index_select(0, packing.order[:packing.active[0]])  # (active[0], H)
    tensors = [gi, weight_hh] + [x for x in (att2, h_run, bias_hh) if x is not None]
    fused = (not torch.is_autocast_enabled(gi.device.type) and gi.dtype in (torch.float32, torch.float64)
             and all(x.dtype == gi.dtype for x in tensors))
    if fused:
        return _GRUSteps.apply(gi, att2, h_run, weight_hh, bias_hh, gru_type, packing.active)
    return _steps_autograd(gi, att2, h_run, weight_hh, bias_hh, gru_type, packing.active)


def packed_gru(gru: nn.GRU, x: torch.Tensor, packing: PackedRows) -> torch.Tensor:
    """A one-layer, one-direction ``torch.nn.GRU`` over packed positions, from a zero state:
    ``Tensor (P, N) -> Tensor (P, H)`` (its weights, :func:`gate_step`'s "GRU" formula, :func:`gru_steps`)."""
    if gru.num_layers != 1 or gru.bidirectional or gru.proj_size:
        raise ValueError("packed_gru: needs a one-layer, one-direction nn.GRU without projection")
    bias_ih = gru.bias_ih_l0 if gru.bias else None
    bias_hh = gru.bias_hh_l0 if gru.bias else None
    gi = F.linear(x, gru.weight_ih_l0, bias_ih)  # (P, 3H)
    return gru_steps("GRU", gi, packing, gru.weight_hh_l0, bias_hh)

