"""KMaxPooling, CCPM's ConvLayer and FGCNNLayer against torch references."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from dist_ctr.layers.convolution import ConvLayer, FGCNNLayer, FieldConv2d, KMaxPooling


def test_kmax_pooling_is_sorted_topk_as_deepctr():
    x = torch.tensor([[[3.0, 0.0], [1.0, 5.0], [2.0, 4.0], [7.0, 1.0]]])  # (1, 4, 2)
    out = KMaxPooling(k=2, axis=1)(x)
    torch.testing.assert_close(out, torch.topk(x, 2, dim=1).values)
    torch.testing.assert_close(out, torch.tensor([[[7.0, 5.0], [3.0, 4.0]]]))  # largest first, per column


def test_kmax_pooling_keep_order_keeps_original_positions():
    x = torch.randn(4, 3, 9, 2)
    out = KMaxPooling(k=4, axis=2, keep_order=True)(x)
    for b, c, d in itertools.product(range(4), range(3), range(2)):
        col = x[b, c, :, d]
        keep = torch.topk(col, 4).indices.sort().values
        torch.testing.assert_close(out[b, c, :, d], col[keep])


def test_kmax_pooling_rejects_bad_k_and_axis():
    with pytest.raises(ValueError, match="k must be in 1..3"):
        KMaxPooling(k=4, axis=1)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="axis must be in 0..1"):
        KMaxPooling(k=1, axis=2)(torch.randn(2, 3))


@pytest.mark.parametrize("width", [1, 2, 3, 6])
def test_field_conv_is_tf_same_padding(width):
    conv = FieldConv2d(2, 3, width)
    x = torch.randn(2, 2, 5, 4)
    total = width - 1
    ref = F.conv2d(F.pad(x, (0, 0, total // 2, total - total // 2)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), ref)
    assert conv(x).shape == (2, 3, 5, 4)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_field_conv_gradients_match_the_plain_convolution(in_channels):
    """The channels-last path (in_channels > 1) gives the plain NCHW convolution's values and gradients."""
    torch.manual_seed(0)
    conv = FieldConv2d(in_channels, 3, 5)
    x = torch.randn(16, in_channels, 13, 8, requires_grad=True)
    g = torch.randn(16, 3, 13, 8)
    out = conv(x)
    gx, gw, gb = torch.autograd.grad(out, (x, conv.weight, conv.bias), g)
    x_ref = x.detach().clone().requires_grad_()
    w_ref, b_ref = conv.weight.detach().clone().requires_grad_(), conv.bias.detach().clone().requires_grad_()
    ref = F.conv2d(F.pad(x_ref, (0, 0, 2, 2)), w_ref, b_ref)  # NCHW-contiguous reference
    ref.backward(g)
    assert out.shape == ref.shape == (16, 3, 13, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, w_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gb, b_ref.grad, rtol=1e-4, atol=1e-4)
    conv64 = FieldConv2d(in_channels, 2, 3).double()
    assert torch.autograd.gradcheck(conv64, (torch.randn(2, in_channels, 5, 3, dtype=torch.float64,
                                                          requires_grad=True),))


def test_conv_layer_follows_deepctr_k_schedule_and_ops():
    n, widths, filters = 10, (3, 2, 2), (2, 3, 4)
    layer = ConvLayer(n, widths, filters)
    l_ = len(filters)
    ks, rows = [], n
    for i in range(1, l_ + 1):
        rows = min(max(1, int((1 - (i / l_) ** (l_ - i)) * n)) if i < l_ else 3, rows)
        ks.append(rows)
    assert ks == [8, 3, 3] and layer.filed_shape == 3  # int((1 - 1/9) * 10), int((1 - 2/3) * 10), 3
    x = torch.randn(2, 1, n, 4)
    ref = x
    convs = [m for m in layer.conv_layer if isinstance(m, FieldConv2d)]
    for conv, k in zip(convs, ks):
        ref = torch.topk(torch.tanh(conv(ref)), k, dim=2).values
    torch.testing.assert_close(layer(x), ref)
    assert layer(x).shape == (2, 4, 3, 4)


@pytest.mark.parametrize("in_channels,width,length", [(1, 6, 26), (4, 5, 13), (3, 2, 5), (2, 7, 3)])
def test_banded_matrix_is_the_same_padding_convolution(in_channels, width, length):
    """x M + bias on (C, F)-ordered rows equals the convolution, whatever the kernel's reach past the edges."""
    torch.manual_seed(0)
    conv = FieldConv2d(in_channels, 3, width)
    x = torch.randn(5, in_channels, length, 4)
    ref = conv(x)  # (5, 3, F, 4)
    rows = x.permute(0, 3, 1, 2).reshape(5 * 4, in_channels * length)  # (B D, C_in F)
    out = rows @ conv.banded(length) + conv.bias.repeat_interleave(length)  # (B D, C_out F)
    torch.testing.assert_close(out.view(5, 4, 3, length).permute(0, 2, 3, 1), ref, rtol=1e-5, atol=1e-5)
    band = conv.banded(length)
    assert band.shape == (in_channels * length, 3 * length)
    assert int((band != 0).sum()) <= 3 * in_channels * width * length  # taps only, zeros elsewhere


def _conv_stack_reference(layer, x):
    """The convolution path: conv -> tanh -> k-max pooling along the field axis, NCHW."""
    out = x
    for conv, pool in layer._stages():
        out = torch.topk(torch.tanh(conv(out)), pool.k, dim=2).values
    return out


@pytest.mark.parametrize("fields,widths,filters", [(26, (6, 5), (4, 4)), (10, (3, 2, 2), (2, 3, 4))])
def test_banded_conv_layer_matches_the_convolutions_values_and_gradients(fields, widths, filters):
    torch.manual_seed(0)
    layer = ConvLayer(fields, widths, filters)
    assert layer.runs_banded
    x = torch.randn(32, 1, fields, 8, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(out, [x, *params], g)
    x_ref = x.detach().clone().requires_grad_()
    ref = _conv_stack_reference(layer, x_ref)
    grads_ref = torch.autograd.grad(ref, [x_ref, *params], g)
    assert out.shape == ref.shape == (32, filters[-1], layer.filed_shape, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    layer64 = ConvLayer(7, (3, 2), (2, 2)).double()
    assert layer64.runs_banded
    x64 = torch.randn(3, 1, 7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *ps: layer64(x), (x64, *layer64.parameters()))


def test_conv_layer_runs_wide_stacks_as_convolutions():
    torch.manual_seed(0)
    layer = ConvLayer(10, (6, 5), (64, 64))
    assert not layer.runs_banded  # 64 * 64 * 8 * 8 entries in the second banded matrix
    x = torch.randn(4, 1, 10, 3)
    torch.testing.assert_close(layer(x), _conv_stack_reference(layer, x))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(B, 1, 10, D\)"):
        layer(torch.randn(4, 1, 9, 3))


def test_conv_bias_init_follows_the_source_library():
    """CCPM's convolutions keep torch's default bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as DeepCTR-Torch's
    Conv2dSame (it re-draws only the weight); FGCNN's start at 0 as Keras's Conv2D in DeepCTR."""
    torch.manual_seed(0)
    ccpm = [m for m in ConvLayer(10, (6, 5), (64, 64)).conv_layer if isinstance(m, FieldConv2d)]
    for conv, fan_in in zip(ccpm, (6 * 1, 5 * 64)):
        bound = fan_in ** -0.5
        assert float(conv.bias.abs().max()) <= bound
        assert float(conv.bias.std()) == pytest.approx(bound / 3 ** 0.5, rel=0.35)
    fgcnn = FGCNNLayer(6, 4, filters=(2, 3), kernel_width=(3, 3), new_maps=(2, 2), pooling_width=(2, 2))
    assert all(float(c.bias.abs().sum()) == 0 for c in fgcnn.convs)


def test_conv_layer_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="equal length"):
        ConvLayer(5, (3,), (2, 2))


def test_fgcnn_layer_one_stage_by_hand():
    Fn, D = 7, 3
    layer = FGCNNLayer(Fn, D, filters=(2, 3), kernel_width=(3, 2), new_maps=(2, 1), pooling_width=(2, 3))
    assert layer.rows == [3, 1] and layer.new_feature_num == 2 * 3 + 1 * 1
    x = torch.randn(4, Fn, D)
    out = layer(x)
    assert out.shape == (4, 7, D)
    conv, dense = layer.convs[0], layer.dense[0]
    pooled = F.max_pool2d(torch.tanh(conv(x.unsqueeze(1))), kernel_size=(2, 1))  # (4, 2, 3, D)
    assert pooled.shape == (4, 2, 3, D)
    first = torch.tanh(dense(pooled.permute(0, 2, 3, 1).reshape(4, -1))).view(4, 6, D)
    torch.testing.assert_close(out[:, :6], first)


def test_fgcnn_layer_keeps_a_row_when_fields_run_out():
    layer = FGCNNLayer(3, 4, filters=(2, 2, 2), kernel_width=(3, 3, 3), new_maps=(1, 1, 1), pooling_width=(2, 2, 2))
    assert layer.rows == [1, 1, 1]
    assert layer(torch.randn(2, 3, 4)).shape == (2, 3, 4)
