"""AGRU / AUGRU cells, DynamicGRU and BiLSTM against their formulas and against torch's own GRU / LSTM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dist_ctr.layers.rnn import (AGRUCell, AUGRUCell, BiLSTM, DynamicGRU, PackedRows, gate_step, gru_steps, packed_gru,
                                 packed_rnn, reverse_padded)

N, H = 3, 5


def _gru_cell_like(cell: nn.Module) -> nn.GRUCell:
    """A ``torch.nn.GRUCell`` with the weights of an AUGRU cell (same layout)."""
    ref = nn.GRUCell(N, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, name).copy_(getattr(cell, name))
    return ref


def test_augru_with_attention_one_is_a_gru_step():
    torch.manual_seed(0)
    cell = AUGRUCell(N, H)
    ref = _gru_cell_like(cell)
    x, h = torch.randn(4, N), torch.randn(4, H)
    torch.testing.assert_close(cell(x, h, torch.ones(4)), ref(x, h))


def test_augru_with_attention_zero_keeps_the_state_and_scales_the_update_gate():
    torch.manual_seed(1)
    cell = AUGRUCell(N, H)
    x, h = torch.randn(4, N), torch.randn(4, H)
    torch.testing.assert_close(cell(x, h, torch.zeros(4)), h)
    # General a: h' = (1 - a (1 - z)) h + a (1 - z) n with torch's gates.
    a = torch.rand(4)
    gi, gh = x @ cell.weight_ih.t() + cell.bias_ih, h @ cell.weight_hh.t() + cell.bias_hh
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    u = a.unsqueeze(1) * (1 - z)
    torch.testing.assert_close(cell(x, h, a), (1 - u) * h + u * n)


def test_agru_attention_zero_keeps_state_and_one_gives_the_candidate():
    torch.manual_seed(2)
    cell = AGRUCell(N, H)
    assert tuple(cell.weight_ih.shape) == (2 * H, N)  # reset and candidate blocks only
    x, h = torch.randn(4, N), torch.randn(4, H)
    torch.testing.assert_close(cell(x, h, torch.zeros(4, 1)), h)
    gi, gh = x @ cell.weight_ih.t() + cell.bias_ih, h @ cell.weight_hh.t() + cell.bias_hh
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    n = torch.tanh(gi[:, H:] + r * gh[:, H:])
    torch.testing.assert_close(cell(x, h, torch.ones(4)), n)
    a = torch.rand(4, 1)
    torch.testing.assert_close(cell(x, h, a), (1 - a) * h + a * n)


def _padded_batch(lengths: list[int], L: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), L, N, generator=g)
    att = torch.rand(len(lengths), L, generator=g)
    return x, torch.tensor(lengths), att


def test_dynamic_gru_final_state_equals_torch_gru_on_the_unpadded_sequence():
    torch.manual_seed(3)
    dyn = DynamicGRU(N, H, gru_type="GRU")
    ref = nn.GRU(N, H, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(dyn.cell.weight_ih)
        ref.weight_hh_l0.copy_(dyn.cell.weight_hh)
        ref.bias_ih_l0.copy_(dyn.cell.bias_ih)
        ref.bias_hh_l0.copy_(dyn.cell.bias_hh)
    lengths = [4, 1, 0, 3]
    x, n, _ = _padded_batch(lengths, 4, seed=0)
    out, final = dyn(x, n)
    for b, ln in enumerate(lengths):
        if ln == 0:
            assert torch.equal(final[b], torch.zeros(H)) and torch.equal(out[b], torch.zeros(4, H))
            continue
        seq_out, h_n = ref(x[b:b + 1, :ln])
        torch.testing.assert_close(final[b], h_n[0, 0])
        torch.testing.assert_close(out[b, :ln], seq_out[0])
        assert torch.equal(out[b, ln:], torch.zeros(4 - ln, H))


@pytest.mark.parametrize("gru_type", ["AGRU", "AUGRU"])
def test_dynamic_attentional_gru_equals_a_step_loop_on_each_unpadded_row(gru_type):
    torch.manual_seed(4)
    dyn = DynamicGRU(N, H, gru_type=gru_type)
    lengths = [5, 2, 0, 3]
    x, n, att = _padded_batch(lengths, 5, seed=1)
    _, final = dyn(x, n, att)
    for b, ln in enumerate(lengths):
        h = torch.zeros(1, H)
        for t in range(ln):
            h = dyn.cell(x[b:b + 1, t], h, att[b:b + 1, t])
        torch.testing.assert_close(final[b], h[0])


@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_dynamic_gru_ignores_padded_inputs_and_scores(gru_type):
    torch.manual_seed(5)
    dyn = DynamicGRU(N, H, gru_type=gru_type)
    x, n, att = _padded_batch([3, 1, 0], 4, seed=2)
    out, final = dyn(x, n, att)
    mask = (torch.arange(4).unsqueeze(0) < n.unsqueeze(1)).unsqueeze(-1)  # (B, L, 1)
    x2 = torch.where(mask, x, torch.randn_like(x) * 100)
    att2 = torch.where(mask[..., 0], att, torch.rand_like(att))
    out2, final2 = dyn(x2, n, att2)
    torch.testing.assert_close(final2, final)
    torch.testing.assert_close(out2, out)


def test_dynamic_gru_needs_scores_for_attentional_types():
    with pytest.raises(ValueError, match="att_scores"):
        DynamicGRU(N, H, gru_type="AUGRU")(torch.randn(2, 3, N), torch.tensor([3, 1]))
    with pytest.raises(ValueError, match="gru_type"):
        DynamicGRU(N, H, gru_type="LSTM")


def test_reverse_padded_reverses_only_valid_positions():
    seq = torch.arange(8.0).view(2, 4, 1)
    out = reverse_padded(seq, torch.tensor([3, 0]))
    assert out[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0]
    assert out[1, :, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert torch.equal(reverse_padded(out, torch.tensor([3, 0])), seq)


def test_bilstm_directions_equal_torch_lstms_on_unpadded_rows_and_ignore_padding():
    torch.manual_seed(6)
    E = 4
    fw = BiLSTM(E, layers=1, dropout_rate=0.0, merge_mode="fw").eval()
    bw = BiLSTM(E, layers=1, dropout_rate=0.0, merge_mode="bw").eval()
    bw.load_state_dict(fw.state_dict())
    lengths = [4, 2, 0]
    x = torch.randn(3, 4, E)
    n = torch.tensor(lengths)
    y_fw, y_bw = fw(x, n), bw(x, n)
    for b, ln in enumerate(lengths):
        if ln == 0:
            assert torch.equal(y_fw[b], torch.zeros(4, E)) and torch.equal(y_bw[b], torch.zeros(4, E))
            continue
        ref_fw = fw.fw[0](x[b:b + 1, :ln])[0][0]  # (ln, E)
        ref_bw = fw.bw[0](x[b:b + 1, :ln].flip(1))[0][0].flip(0)  # run on the reversed row, re-reverse
        torch.testing.assert_close(y_fw[b, :ln], ref_fw)
        torch.testing.assert_close(y_bw[b, :ln], ref_bw)
    noisy = torch.where((torch.arange(4).view(1, 4, 1) < n.view(3, 1, 1)), x, torch.randn_like(x) * 50)
    torch.testing.assert_close(bw(noisy, n), y_bw)
    ave = BiLSTM(E, layers=1, dropout_rate=0.0, merge_mode="ave").eval()
    ave.load_state_dict(fw.state_dict())
    torch.testing.assert_close(ave(x, n), (y_fw + y_bw) / 2)


def test_bilstm_stacks_layers_with_residuals_and_merge_modes():
    m = BiLSTM(4, layers=3, res_layers=1, merge_mode="concat")
    assert m.output_dim == 8
    assert m(torch.randn(2, 5, 4), torch.tensor([5, 2])).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="merge_mode"):
        BiLSTM(4, merge_mode="max")


@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_dynamic_gru_gradients_match_a_loop_of_cells(gru_type):
    """Rows sorted by length, each step over its running rows, the input gates of every step in one GEMM: the
    outputs and gradients (inputs, scores, every parameter) of the plain loop of cell calls over all rows, float64,
    with unsorted lengths, padded rows and a row of length 0."""
    torch.manual_seed(0)
    gru = DynamicGRU(3, 4, gru_type=gru_type).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    att = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 5, 0])

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        h = x.new_zeros(3, 4)
        outs = []
        for t in range(5):
            h_new = gru.cell(x[:, t], h) if gru_type == "GRU" else gru.cell(x[:, t], h, att[:, t])
            valid = (t < lengths).unsqueeze(1)  # (B, 1)
            h = torch.where(valid, h_new, h)
            outs.append(h_new * valid.double())
        return torch.stack(outs, 1), h

    params = [x, att, *gru.parameters()] if gru_type != "GRU" else [x, *gru.parameters()]
    out, last = gru(x, lengths, att)
    ref_out, ref_last = reference()
    assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(last, ref_last, atol=1e-12)
    g = torch.autograd.grad((out.sum() + last.square().sum()), params)
    g_ref = torch.autograd.grad((ref_out.sum() + ref_last.square().sum()), params)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_packed_rnn_equals_the_padded_run_on_valid_positions_with_its_gradients():
    """``packed_rnn`` computes only valid positions; there it equals the RNN over the padded rows (outputs and
    gradients of inputs and weights, float64), and it is zero at padded positions and for a row of length 0."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(3, 4, batch_first=True).double()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 5, 0])
    mask = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).double()  # (B, L, 1)
    out = packed_rnn(gru, x, lengths)
    ref = gru(x)[0] * mask
    assert out.shape == (3, 5, 4) and torch.allclose(out, ref, atol=1e-12)
    assert out[1].abs().sum() > 0 and out[0, 2:].abs().sum() == 0 and out[2].abs().sum() == 0
    w = torch.randn(3, 5, 4, dtype=torch.float64)
    params = [x, *gru.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        assert torch.allclose(a, b, atol=1e-10)


def _reference_dynamic_gru(gru: DynamicGRU, inputs: torch.Tensor, lengths: torch.Tensor,
                           att_scores: torch.Tensor | None = None,
                           h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward sorted-rows loop: the full state and a full output row block rebuilt at every step.

    ``(B, L, N), (B,), (B, L) | None, (B, H) | None -> (outputs (B, L, H), final (B, H))``.
    """
    B, L = inputs.shape[0], inputs.shape[1]
    order = torch.argsort(lengths, descending=True, stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(B)
    active = (lengths.unsqueeze(0) > torch.arange(L).unsqueeze(1)).sum(1).tolist()
    h = inputs.new_zeros(B, gru.hidden_size) if h0 is None else h0.index_select(0, order)
    cell = gru.cell
    gis = F.linear(inputs.index_select(0, order), cell.weight_ih, cell.bias_ih).unbind(1)
    atts = att_scores.index_select(0, order).unbind(1) if gru.gru_type != "GRU" else (None,) * L
    outputs = []
    for t in range(L):
        n = active[t]
        if n == 0:
            break
        att = atts[t][:n] if atts[t] is not None else None
        h_new = gate_step(gru.gru_type, gis[t][:n], h[:n], cell.weight_hh, cell.bias_hh, att)
        outputs.append(F.pad(h_new, (0, 0, 0, B - n)))
        h = h_new if n == B else torch.cat([h_new, h[n:]])
    out = torch.stack(outputs, dim=1) if outputs else inputs.new_zeros(B, 0, gru.hidden_size)
    if out.shape[1] < L:
        out = F.pad(out, (0, 0, 0, L - out.shape[1]))
    return out.index_select(0, inverse), h.index_select(0, inverse)


_LENGTH_CASES = {
    "sorted": [6, 5, 5, 3, 1, 1],
    "unsorted_with_zero": [2, 6, 0, 4, 6, 1],
    "all_full": [6, 6, 6, 6, 6, 6],
    "all_zero": [0, 0, 0, 0, 0, 0],
    "shorter_than_padding": [3, 1, 2, 3, 0, 2],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("case", sorted(_LENGTH_CASES))
@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_dynamic_gru_equals_the_reference_loop_bitwise(gru_type, case, with_h0, dtype):
    """Packed steps over the running rows only: outputs and final states bitwise those of the reference loop (also
    with ``return_outputs=False``, which returns no outputs)."""
    torch.manual_seed(7)
    gru = DynamicGRU(N, H, gru_type=gru_type).to(dtype)
    lengths = torch.tensor(_LENGTH_CASES[case])
    x = torch.randn(len(lengths), 6, N, dtype=dtype)
    att = torch.rand(len(lengths), 6, dtype=dtype)
    h0 = torch.randn(len(lengths), H, dtype=dtype) if with_h0 else None
    out, final = gru(x, lengths, att, h0)
    ref_out, ref_final = _reference_dynamic_gru(gru, x, lengths, att, h0)
    assert out.shape == (len(lengths), 6, H) and torch.equal(out, ref_out)
    assert torch.equal(final, ref_final)
    none, final_only = gru(x, lengths, att, h0, return_outputs=False)
    assert none is None and torch.equal(final_only, ref_final)


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_dynamic_gru_gradients_equal_the_reference_loop(gru_type, with_h0):
    """Gradients w.r.t. inputs, scores, ``h0`` and every cell parameter (float64, unsorted lengths with a row of
    length 0 and rows shorter than the padding), with and without the outputs."""
    torch.manual_seed(8)
    B, L, n_in, hid = 40, 7, 6, 5
    gru = DynamicGRU(n_in, hid, gru_type=gru_type).double()
    lengths = torch.randint(0, L + 1, (B,))
    lengths[3] = 0
    x = torch.randn(B, L, n_in, dtype=torch.float64, requires_grad=True)
    att = torch.rand(B, L, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, hid, dtype=torch.float64, requires_grad=True) if with_h0 else None
    leaves = [x] + ([att] if gru_type != "GRU" else []) + ([h0] if with_h0 else []) + list(gru.parameters())
    w_out, w_final = torch.randn(B, L, hid, dtype=torch.float64), torch.randn(B, hid, dtype=torch.float64)
    out, final = gru(x, lengths, att, h0)
    ref_out, ref_final = _reference_dynamic_gru(gru, x, lengths, att, h0)
    assert torch.equal(out, ref_out) and torch.equal(final, ref_final)
    grads = torch.autograd.grad((out * w_out).sum() + (final * w_final).sum(), leaves)
    ref_loss = (ref_out * w_out).sum() + (ref_final * w_final).sum()
    ref_grads = torch.autograd.grad(ref_loss, leaves, retain_graph=True)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-12, atol=1e-12)
    _, final_only = gru(x, lengths, att, h0, return_outputs=False)
    grads = torch.autograd.grad((final_only * w_final).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_final * w_final).sum(), leaves, allow_unused=True)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r if r is not None else torch.zeros_like(g), rtol=1e-12, atol=1e-12)


def test_dynamic_gru_under_bf16_autocast_equals_the_reference_loop():
    """Under autocast the input gates' GEMM runs in bf16; outputs, final states and fp32 gradients are those of the
    reference loop run under the same autocast."""
    torch.manual_seed(9)
    gru = DynamicGRU(N, H, gru_type="AUGRU")
    lengths = torch.tensor(_LENGTH_CASES["unsorted_with_zero"])
    x = torch.randn(len(lengths), 6, N, requires_grad=True)
    att = torch.rand(len(lengths), 6, requires_grad=True)
    leaves = [x, att, *gru.parameters()]
    results = []
    for run in (gru, lambda *a: _reference_dynamic_gru(gru, *a)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, final = run(x, lengths, att)
        grads = torch.autograd.grad(out.float().sum() + final.float().square().sum(), leaves)
        results.append((out, final, grads))
    (out, final, grads), (ref_out, ref_final, ref_grads) = results
    assert torch.equal(out, ref_out) and torch.equal(final, ref_final)
    for g, r, leaf in zip(grads, ref_grads, leaves):
        assert g.dtype == leaf.dtype and torch.allclose(g, r, rtol=1e-2, atol=1e-2)


# ---- the packed recurrence (hand-written backward) against autograd over a loop of cells ----------------------
def _packed_case(gru_type: str, lengths: list[int], L: int, n_in: int, hid: int, dtype: torch.dtype, seed: int,
                 with_h0: bool = True) -> tuple[DynamicGRU, PackedRows, list[torch.Tensor]]:
    """A DynamicGRU, the packing of ``lengths`` and the leaves ``[gi, att, h0]`` (``h0`` omitted without it)."""
    torch.manual_seed(seed)
    gru = DynamicGRU(n_in, hid, gru_type=gru_type).to(dtype)
    packing = PackedRows.build(torch.tensor(lengths), L)
    P, G = packing.num_packed, 2 if gru_type == "AGRU" else 3
    leaves = [torch.randn(P, G * hid, dtype=dtype, requires_grad=True),
              torch.rand(P, dtype=dtype, requires_grad=True)]
    if with_h0:
        leaves.append(torch.randn(len(lengths), hid, dtype=dtype, requires_grad=True))
    return gru, packing, leaves


def _loop_of_cells(gru_type: str, gi: torch.Tensor, packing: PackedRows, weight_hh: torch.Tensor,
                   bias_hh: torch.Tensor | None, att: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """The straightforward recurrence: :func:`gate_step` per step on the running rows, under autograd."""
    active = packing.active
    h = (gi.new_zeros(len(packing.order), weight_hh.shape[1]) if h0 is None else h0).index_select(0, packing.order)
    outs, o = [], 0
    for n in active:
        h = gate_step(gru_type, gi[o:o + n], h[:n], weight_hh, bias_hh, att[o:o + n])
        outs.append(h)
        o += n
    return torch.cat(outs) if outs else gi.new_zeros(0, weight_hh.shape[1])


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_gru_steps_passes_gradcheck(gru_type, with_h0):
    """float64 ``gradcheck`` of the hand-written backward (input gates, scores, ``h0``, ``weight_hh``, ``bias_hh``)
    through the final states and every step's state, unsorted lengths with 0 and full rows, and a batch of one."""
    for lengths, L in (([2, 4, 0, 1, 4], 4), ([3], 3), ([0, 0], 2)):
        gru, packing, leaves = _packed_case(gru_type, lengths, L, 3, 4, torch.float64, seed=10, with_h0=with_h0)
        cell = gru.cell
        w_hh = cell.weight_hh.detach().clone().requires_grad_(True)
        b_hh = cell.bias_hh.detach().clone().requires_grad_(True)
        w_out = torch.randn(packing.num_packed, 4, dtype=torch.float64)

        def f(gi, att, *rest):
            h0 = rest[0] if with_h0 else None
            w, b = rest[-2], rest[-1]
            states = gru_steps(gru_type, gi, packing, w, b, att, h0)
            return (states * w_out).sum() + packing.final(states, h0).square().sum()

        torch.autograd.gradcheck(f, (*leaves, w_hh, b_hh))


@pytest.mark.parametrize("gru_type", ["GRU", "AGRU", "AUGRU"])
def test_gru_steps_float32_equals_the_loop_of_cells_on_a_realistic_batch(gru_type):
    """B = 1024, L = 20, H = 32 in float32, lengths 0..L: the states bitwise those of the loop of cells, and every
    gradient (input gates, scores, ``h0``, weights, bias) equal up to float32 rounding; also a batch of one."""
    many = torch.randint(0, 21, (1024,), generator=torch.Generator().manual_seed(0)).tolist()
    many[:2] = [0, 20]
    for lengths in (many, [20], [7]):
        gru, packing, leaves = _packed_case(gru_type, lengths, 20, 16, 32, torch.float32, seed=11)
        gi, att, h0 = leaves
        cell = gru.cell
        params = [gi, h0, cell.weight_hh, cell.bias_hh] + ([att] if gru_type != "GRU" else [])
        w_out = torch.randn(packing.num_packed, 32)
        runs = []
        for run in (gru_steps, _loop_of_cells):
            states = run(gru_type, gi, packing, cell.weight_hh, cell.bias_hh, att, h0)
            final = packing.final(states, h0)
            loss = (states * w_out).sum() + final.square().sum()
            runs.append((states, final, torch.autograd.grad(loss, params)))
        (states, final, grads), (ref_states, ref_final, ref_grads) = runs
        assert torch.equal(states, ref_states) and torch.equal(final, ref_final)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_gru_steps_under_autocast_and_without_bias_falls_back_or_runs_fused():
    """Without gate biases the fused recurrence runs and matches the loop; under bf16 autocast the loop of cells
    runs under autograd (its result and gradients equal the loop's)."""
    gru, packing, (gi, att, h0) = _packed_case("AUGRU", [3, 0, 5, 2], 5, 3, 4, torch.float64, seed=12)
    w = gru.cell.weight_hh
    out = gru_steps("AUGRU", gi, packing, w, None, att, h0)
    ref = _loop_of_cells("AUGRU", gi, packing, w, None, att, h0)
    assert torch.equal(out, ref)
    g = torch.autograd.grad(out.sum(), [gi, att, h0, w])
    g_ref = torch.autograd.grad(ref.sum(), [gi, att, h0, w])
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    gru32, packing, (gi, att, h0) = _packed_case("AUGRU", [3, 0, 5, 2], 5, 3, 4, torch.float32, seed=13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gru_steps("AUGRU", gi.bfloat16(), packing, gru32.cell.weight_hh, gru32.cell.bias_hh, att, h0)
        ref = _loop_of_cells("AUGRU", gi.bfloat16(), packing, gru32.cell.weight_hh, gru32.cell.bias_hh, att, h0)
    assert torch.equal(out, ref)


def test_packed_rows_pack_unpack_and_final_states():
    lengths = torch.tensor([2, 0, 3, 3, 1])
    p = PackedRows.build(lengths, 4)
    assert p.active == [4, 3, 2] and p.num_packed == 9
    assert p.order.tolist() == [2, 3, 0, 4, 1]  # longest first, stable among equal lengths
    x = torch.arange(5 * 4, dtype=torch.float32).view(5, 4, 1)
    packed = p.pack(x)  # (P, 1), step-major
    assert packed[:4, 0].tolist() == [8.0, 12.0, 0.0, 16.0]  # step 0 of rows 2, 3, 0, 4
    mask = (torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    assert torch.equal(p.unpack(packed), x * mask)
    h0 = torch.full((5, 1), -1.0)
    last = x[torch.arange(5), (lengths - 1).clamp(min=0)]  # (B, 1)
    want = torch.where(lengths.unsqueeze(1) > 0, last, h0)
    assert torch.equal(p.final(packed, h0), want)
    assert torch.equal(p.final(packed)[1], torch.zeros(1))
    empty = PackedRows.build(torch.zeros(3, dtype=torch.long), 4)
    assert empty.active == [] and empty.num_packed == 0
    assert torch.equal(empty.final(empty.pack(x[:3])), torch.zeros(3, 1))


def test_packed_gru_equals_torch_gru_on_each_unpadded_row_with_gradients():
    """``packed_gru`` with an ``nn.GRU``'s weights: the states of ``nn.GRU`` run on each row's valid prefix, and
    the gradients of inputs and every weight of the padded run, float64."""
    torch.manual_seed(14)
    gru = nn.GRU(3, 4, batch_first=True).double()
    lengths = torch.tensor([2, 5, 0, 5, 1])
    x = torch.randn(5, 5, 3, dtype=torch.float64, requires_grad=True)
    p = PackedRows.build(lengths, 5)
    out = p.unpack(packed_gru(gru, p.pack(x), p))  # (B, L, H)
    mask = (torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1).double()
    ref = gru(x)[0] * mask
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn(5, 5, 4, dtype=torch.float64)
    params = [x, *gru.parameters()]
    for a, b in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        assert torch.allclose(a, b, atol=1e-10)
    with pytest.raises(ValueError, match="one-layer"):
        packed_gru(nn.GRU(3, 4, num_layers=2, batch_first=True), p.pack(x), p)
