"""Sequence layers against masked formulas: pooling, masked softmax, target attention, weighting, Dice,
Transformer, BiasEncoding. Padded positions are filled with large noise to show they never matter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dist_ctr.layers.activation import Dice
from dist_ctr.layers.attention import BiasEncoding, Transformer, sinusoid_encoding
from dist_ctr.layers.core import activation_layer
from dist_ctr.layers.sequence import (
    AttentionSequencePoolingLayer,
    LocalActivationUnit,
    SequencePoolingLayer,
    WeightedSequenceLayer,
    masked_softmax,
    sequence_mask,
)

LENGTHS = [4, 1, 0, 2]


def _seq(E: int = 3, L: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(LENGTHS), L, E, generator=g), torch.tensor(LENGTHS)


def _noisy_padding(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = sequence_mask(lengths, seq.shape[1]).unsqueeze(-1)
    return torch.where(mask, seq, torch.randn_like(seq) * 100)


def test_sequence_mask():
    assert sequence_mask(torch.tensor([2, 0, 3]), 3).tolist() == [[True, True, False], [False] * 3, [True] * 3]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_sequence_pooling_equals_the_masked_formula(mode):
    seq, n = _seq()
    out = SequencePoolingLayer(mode)(_noisy_padding(seq, n), n)
    assert out.shape == (4, 1, 3)
    for b, ln in enumerate(LENGTHS):
        valid = seq[b, :ln]
        if ln == 0:
            want = torch.zeros(3)
        else:
            want = {"sum": valid.sum(0), "mean": valid.mean(0), "max": valid.max(0).values}[mode]
        torch.testing.assert_close(out[b, 0], want)


def test_sequence_pooling_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        SequencePoolingLayer("median")


def test_masked_softmax_ignores_masked_entries_and_zeroes_empty_rows():
    scores = torch.randn(3, 4)
    mask = sequence_mask(torch.tensor([4, 2, 0]), 4)
    p = masked_softmax(scores, mask)
    torch.testing.assert_close(p[0], torch.softmax(scores[0], 0))
    torch.testing.assert_close(p[1, :2], torch.softmax(scores[1, :2], 0))
    assert torch.equal(p[1, 2:], torch.zeros(2)) and torch.equal(p[2], torch.zeros(4))
    p2 = masked_softmax(torch.where(mask, scores, torch.randn(3, 4) * 1e4), mask)
    torch.testing.assert_close(p2, p)


def test_local_activation_unit_formula():
    torch.manual_seed(0)
    lau = LocalActivationUnit((6,), embedding_dim=3, activation="relu", init_std=None)
    q, k = torch.randn(2, 1, 3), torch.randn(2, 4, 3)
    lin = lau.dnn.layers[0]
    qe = q.expand(-1, 4, -1)
    x = torch.cat([qe, k, qe - k, qe * k], dim=-1)
    want = lau.dense(torch.relu(x @ lin.weight.t() + lin.bias))
    torch.testing.assert_close(lau(q, k), want)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("activation", ["Dice", "sigmoid"])
def test_attention_pooling_formula_and_padding_invariance(normalize, activation):
    torch.manual_seed(1)
    att = AttentionSequencePoolingLayer((8, 4), activation, weight_normalization=normalize, embedding_dim=3,
                                        init_std=None).eval()
    keys, n = _seq(seed=2)
    q = torch.randn(4, 1, 3)
    out = att(q, keys, n)
    assert out.shape == (4, 1, 3)
    raw = att.local_att(q, keys)[..., 0]  # (B, L)
    for b, ln in enumerate(LENGTHS):
        w = torch.softmax(raw[b, :ln], 0) if normalize else raw[b, :ln]
        want = (w.unsqueeze(1) * keys[b, :ln]).sum(0) if ln else torch.zeros(3)
        torch.testing.assert_close(out[b, 0], want)
    # Changing padded values changes nothing.
    torch.testing.assert_close(att(q, _noisy_padding(keys, n), n), out)
    scores = AttentionSequencePoolingLayer((8, 4), activation, normalize, return_score=True, embedding_dim=3)
    scores.load_state_dict(att.state_dict())
    s = scores.eval()(q, keys, n)
    assert s.shape == (4, 1, 4)
    assert torch.equal(s[1, 0, 1:], torch.zeros(3)) and torch.equal(s[2, 0], torch.zeros(4))
    if normalize:
        torch.testing.assert_close(s[0, 0].sum(), torch.tensor(1.0))
        assert att.local_att.dense.bias is None  # softmax ignores a common shift


def test_weighted_sequence_layer():
    seq, n = _seq()
    w = torch.randn(4, 4, 1)
    out = WeightedSequenceLayer(weight_normalization=False)(seq, n, w)
    mask = sequence_mask(n, 4).unsqueeze(-1).float()
    torch.testing.assert_close(out, seq * w * mask)
    outn = WeightedSequenceLayer(weight_normalization=True)(seq, n, w)
    torch.testing.assert_close(outn[0], seq[0] * torch.softmax(w[0, :, 0], 0).unsqueeze(1))
    assert torch.equal(outn[2], torch.zeros(4, 3))


def test_dice_formula_in_eval_and_rank_3_inputs():
    torch.manual_seed(3)
    d = Dice(3)
    with torch.no_grad():
        d.alpha.copy_(torch.tensor([0.1, -0.5, 2.0]))
        d.bn.running_mean.copy_(torch.tensor([0.2, 0.0, -1.0]))
        d.bn.running_var.copy_(torch.tensor([1.5, 0.5, 2.0]))
        d.bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        d.bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
    d.eval()
    x = torch.randn(5, 3)
    xn = (x - d.bn.running_mean) / torch.sqrt(d.bn.running_var + 1e-8) * d.bn.weight + d.bn.bias
    p = torch.sigmoid(xn)
    torch.testing.assert_close(d(x), p * x + (1 - p) * d.alpha * x)
    x3 = torch.randn(2, 4, 3)
    torch.testing.assert_close(d(x3), d(x3.reshape(8, 3)).view(2, 4, 3))
    assert isinstance(activation_layer("dice", 3), Dice)
    with pytest.raises(ValueError, match="width"):
        d(torch.randn(2, 4))


def test_sinusoid_encoding_values():
    pe = sinusoid_encoding(3, 4)
    assert pe.shape == (3, 4)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(pe[2, 2], torch.tensor(math.sin(2 / 10000 ** 0.5)))


def test_transformer_single_head_formula():
    """Without positional encoding, residual, feed-forward and norm: ``relu(softmax(QK^T / sqrt d) V)``."""
    torch.manual_seed(4)
    tr = Transformer(4, att_embedding_size=4, head_num=1, use_positional_encoding=False, use_res=False,
                     use_feed_forward=False, blinding=False, output_type=None)
    x, n = torch.randn(2, 3, 4), torch.tensor([3, 2])
    out = tr(x, x, n, n)
    for b, ln in enumerate([3, 2]):
        xb = x[b, :ln]
        q, k, v = tr.w_query(xb), tr.w_key(xb), tr.w_value(xb)
        want = torch.relu(torch.softmax(q @ k.t() / 2.0, dim=-1) @ v)
        torch.testing.assert_close(out[b, :ln], want)
    assert torch.equal(out[1, 2], torch.zeros(4))


@pytest.mark.parametrize("blinding", [True, False])
def test_transformer_ignores_padding_and_pools_valid_positions(blinding):
    torch.manual_seed(5)
    tr = Transformer(6, att_embedding_size=3, head_num=2, use_layer_norm=True, blinding=blinding,
                     output_type=None).eval()
    x, n = torch.randn(4, 5, 6), torch.tensor([5, 1, 0, 3])
    out = tr(x, x, n, n)
    noisy = _noisy_padding(x, n)
    torch.testing.assert_close(tr(noisy, noisy, n, n), out)
    for b, ln in enumerate([5, 1, 0, 3]):
        assert torch.equal(out[b, ln:], torch.zeros(5 - ln, 6))
    tr.output_type = "mean"
    pooled = tr(x, x, n, n)
    torch.testing.assert_close(pooled[3, 0], out[3, :3].mean(0))
    assert torch.equal(pooled[2, 0], torch.zeros(6))


def test_transformer_blinding_hides_each_position_from_itself():
    torch.manual_seed(6)
    tr = Transformer(4, att_embedding_size=4, head_num=1, use_positional_encoding=False, use_res=False,
                     use_feed_forward=False, blinding=True, output_type=None)
    x, n = torch.randn(1, 2, 4), torch.tensor([2])
    out = tr(x, x, n, n)
    # With two positions, each attends only to the other one.
    torch.testing.assert_close(out[0, 0], torch.relu(tr.w_value(x[0, 1])))
    torch.testing.assert_close(out[0, 1], torch.relu(tr.w_value(x[0, 0])))
    one = tr(x, x, torch.tensor([1]), torch.tensor([1]))  # nothing to attend to: zero attention vector
    assert torch.equal(one, torch.zeros(1, 2, 4))


def test_bias_encoding_formula():
    be = BiasEncoding(2, 3, 4, init_std=1.0)
    x = torch.randn(5, 2, 3, 4)
    out = be(x)
    s, l, e = 1, 2, 3
    torch.testing.assert_close(out[0, s, l, e], x[0, s, l, e] + be.sess_bias[s, 0, 0] + be.seq_bias[0, l, 0]
                               + be.item_bias[0, 0, e])
    assert all(isinstance(p, nn.Parameter) for p in be.parameters())


@pytest.mark.parametrize("use_bn,activation", [(False, "sigmoid"), (True, "dice"), (False, "relu")])
def test_local_activation_unit_matches_the_concatenated_mlp_with_gradients(use_bn, activation):
    """The split first layer equals the MLP on ``[q, k, q - k, q * k]``: outputs and gradients (inputs and every
    parameter), float64, with and without batch norm, at B = 1 and L = 1 too (batch norm needs B * L > 1)."""
    for B, L in ((3, 5), (2, 1)) if use_bn else ((3, 5), (1, 1), (2, 1)):
        torch.manual_seed(0)
        lau = LocalActivationUnit((6, 4), embedding_dim=3, activation=activation, use_bn=use_bn, init_std=None).double()
        q = torch.randn(B, 1, 3, dtype=torch.float64, requires_grad=True)
        k = torch.randn(B, L, 3, dtype=torch.float64, requires_grad=True)

        def reference() -> torch.Tensor:
            qe = q.expand(-1, L, -1)
            x = torch.cat([qe, k, qe - k, qe * k], dim=-1)  # (B, L, 12)
            return lau.dense(lau.dnn(x))

        params = [q, k, *lau.parameters()]
        out = lau(q, k)
        g_out = torch.autograd.grad(out.sum(), params)
        ref = reference()
        g_ref = torch.autograd.grad(ref.sum(), params)
        assert torch.allclose(out, ref, atol=1e-12)
        for a, b in zip(g_out, g_ref):
            assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("hidden,activation,normalise", [((6, 4), "relu", True), ((6,), "sigmoid", False),
                                                          ((), "relu", True)])
def test_packed_scores_equal_the_padded_scores_at_valid_positions_with_gradients(hidden, activation, normalise):
    """``packed_scores`` runs the MLP on the valid positions only: the scores of ``forward(..., return_score)``
    there (normalised over each row's valid positions or raw), float64, with the gradients of the query, the keys
    and every parameter; rows of length 0 and a batch of one included."""
    for lengths in ([3, 0, 5, 1], [5], [0, 0]):
        torch.manual_seed(0)
        att = AttentionSequencePoolingLayer(hidden, activation, weight_normalization=normalise, return_score=True,
                                            embedding_dim=3, init_std=None).double()
        B, L = len(lengths), 5
        n = torch.tensor(lengths)
        q = torch.randn(B, 1, 3, dtype=torch.float64, requires_grad=True)
        k = torch.randn(B, L, 3, dtype=torch.float64, requires_grad=True)
        valid = sequence_mask(n, L).reshape(B * L)  # (B L,)
        flat = valid.nonzero().squeeze(1)  # (P,)
        rows = flat // L
        assert att.positionwise
        got = att.packed_scores(q, k.reshape(B * L, 3).index_select(0, flat), rows, flat, L)  # (P,)
        want = att(q, k, n).reshape(B * L).index_select(0, flat)  # (P,)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
        w = torch.randn(flat.shape[0], dtype=torch.float64)
        params = [q, k, *att.parameters()]
        for a, b in zip(torch.autograd.grad((got * w).sum(), params, allow_unused=True),
                        torch.autograd.grad((want * w).sum(), params, allow_unused=True)):
            if a is None or b is None:
                assert a is None and b is None
                continue
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_pair_scores_need_a_positionwise_mlp():
    assert not LocalActivationUnit((4,), embedding_dim=3, activation="dice").positionwise
    assert not LocalActivationUnit((4,), embedding_dim=3, activation="relu", use_bn=True).positionwise
    dropped = LocalActivationUnit((4,), embedding_dim=3, activation="relu", dropout_rate=0.5)
    assert not dropped.positionwise and dropped.eval().positionwise
    with pytest.raises(ValueError, match="batch statistics"):
        LocalActivationUnit((4,), embedding_dim=3, activation="dice").pair_scores(
            torch.randn(1, 1, 3), torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
