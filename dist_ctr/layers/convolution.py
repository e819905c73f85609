"""Convolutions over the field axis: k-max pooling, CCPM's convolution stack and FGCNN's feature generation.

Notation: ``B`` batch, ``C`` channels (filters), ``F`` fields (pooled sparse features), ``D`` embedding dim,
``K`` kept rows. Convolutions slide along the field axis only (kernels ``(width, 1)``) with TensorFlow's "same"
padding: ``width - 1`` rows of zeros, ``(width - 1) // 2`` on top and the rest below.

Pure torch; DeepCTR-Torch's (CCPM) and DeepCTR's (FGCNN) constructor names without ``seed`` / ``device``.

>>> import torch
>>> e = torch.randn(3, 6, 4)
>>> tuple(KMaxPooling(k=2, axis=1)(e).shape)
(3, 2, 4)
>>> conv = ConvLayer(6, conv_kernel_width=(6, 5), conv_filters=(4, 4))
>>> tuple(conv(e.unsqueeze(1)).shape), conv.filed_shape
((3, 4, 3, 4), 3)
>>> tuple(FGCNNLayer(6, 4, filters=(2, 3), kernel_width=(3, 3), new_maps=(2, 2), pooling_width=(2, 2))(e).shape)
(3, 8, 4)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvLayer", "FGCNNLayer", "FieldConv2d", "KMaxPooling"]


class KMaxPooling(nn.Module):
    """The ``k`` largest values along ``axis``, largest first (DeepCTR's and DeepCTR-Torch's semantics:
    ``topk(..., sorted=True)``; both libraries return them sorted, not in their original order).

    Args:
        k (int): values kept.
        axis (int): dimension to pool (``1 <= axis < ndim``).
        keep_order (bool): return the kept values in their original order instead (DCNN's k-max pooling).

    Call: ``forward(inputs: Tensor (B, ..., N, ...)) -> Tensor (B, ..., k, ...)``.
    """

    def __init__(self, k: int, axis: int, keep_order: bool = False) -> None:
        super().__init__()
        self.k = int(k)
        self.axis = int(axis)
        self.keep_order = keep_order

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not 0 <= self.axis < inputs.dim():
            raise ValueError(f"KMaxPooling: axis must be in 0..{inputs.dim() - 1}, got {self.axis}")
        if not 1 <= self.k <= inputs.shape[self.axis]:
            raise ValueError(f"KMaxPooling: k must be in 1..{inputs.shape[self.axis]}, got {self.k}")
        if not self.keep_order:
            return torch.topk(inputs, k=self.k, dim=self.axis, sorted=True).values
        idx = torch.topk(inputs, k=self.k, dim=self.axis, sorted=False).indices.sort(dim=self.axis).values
        return inputs.gather(self.axis, idx)


class FieldConv2d(nn.Conv2d):
    """``Conv2d`` with a ``(width, 1)`` kernel, stride 1 and TensorFlow "same" padding along the field axis.

    Xavier-uniform weights. The bias follows the library the layer comes from: ``zero_bias=False`` keeps torch's
    ``Conv2d`` default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as DeepCTR-Torch's ``Conv2dSame`` (CCPM) does;
    ``zero_bias=True`` starts it at 0, as Keras's ``Conv2D`` in DeepCTR (FGCNN). With embeddings at ``init_std``
    1e-4 the bias is what the tanh sees at first, so it changes how training starts.

    With more than one input channel the convolution runs in channels-last memory format (the same values; its
    output is channels-last too). :meth:`banded` gives the same convolution as one matrix for rows laid out
    ``(C, F)`` (what :class:`ConvLayer` multiplies by).

    Call: ``forward(x: Tensor (B, C_in, F, D)) -> Tensor (B, C_out, F, D)``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, zero_bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=(width, 1), stride=1, padding=0, bias=True)
        nn.init.xavier_uniform_(self.weight)
        if zero_bias:
            nn.init.zeros_(self.bias)
        self.pad = (0, 0, (width - 1) // 2, width - 1 - (width - 1) // 2)
        self._band_index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def band_entries(self, length: int) -> int:
        """Entries of :meth:`banded` ``(length)``: ``C_in F * C_out F``."""
        return self.in_channels * self.out_channels * length * length

    def banded(self, length: int) -> torch.Tensor:
        """The convolution over ``length`` fields as a matrix ``M (C_in F, C_out F)``: for ``x (N, C_in F)``
        holding rows ``(c, f)`` of a ``(C_in, F)`` map, ``x M + bias.repeat_interleave(F)`` equals the convolution
        with its "same" padding (each kernel tap on its diagonal, zeros elsewhere). Differentiable in ``weight``.

        Returns:
            Tensor: ``(C_in * length, C_out * length)``.
        """
        key = (int(length), self.weight.device)
        index = self._band_index.get(key)
        if index is None:
            index = self._band_index[key] = self._make_band_index(*key)
        taps = torch.cat([self.weight.reshape(-1), self.weight.new_zeros(1)])  # (C_out C_in w + 1,), last = 0
        return taps[index]  # (C_in F, C_out F)

    def _make_band_index(self, length: int, device: torch.device) -> torch.Tensor:
        """``index (C_in F, C_out F)`` into ``weight.reshape(-1)`` with one extra slot (a zero) for no tap."""
        c_out, c_in, width = self.out_channels, self.in_channels, self.kernel_size[0]
        o, c, i, k = torch.meshgrid(torch.arange(c_out), torch.arange(c_in), torch.arange(length),
                                    torch.arange(width), indexing="ij")  # each (C_out, C_in, F, w)
        p = i + k - self.pad[2]  # input row that tap k of output row i reads
        keep = (p >= 0) & (p < length)
        index = torch.full((c_in * length, c_out * length), c_out * c_in * width, dtype=torch.long)
        index[(c * length + p)[keep], (o * length + i)[keep]] = ((o * c_in + c) * width + k)[keep]
        return index.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels > 1:  # oneDNN's channels-last kernels run these thin convolutions about twice as fast
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(F.pad(x, self.pad))


class ConvLayer(nn.Module):
    """CCPM's convolution stack (Liu et al., "A Convolutional Click Prediction Model", CIKM 2015).

    Layer ``i = 1..l``: ``FieldConv2d(width_i) -> tanh -> KMaxPooling(k_i, axis=2)`` with
    ``k_i = max(1, int((1 - (i / l) ** (l - i)) * F))`` for ``i < l`` and 3 for the last (each capped by the rows
    left), as DeepCTR-Torch.

    Args:
        field_size (int): ``F``.
        conv_kernel_width (Sequence[int]): width per layer.
        conv_filters (Sequence[int]): filters per layer (same length).

    Where every convolution's :meth:`FieldConv2d.banded` matrix is small (at most ``BANDED_MAX_ENTRIES``
    entries, as CCPM's default 4 and 4 filters over 26 fields), the stack runs on ``(B D, C F)`` rows: each
    convolution one GEMM by its banded matrix, tanh in place, the k-max pooling a ``topk`` along the contiguous
    last dim. The same values as the convolutions (up to float rounding); thin convolutions with one input channel
    run several times slower in oneDNN than the GEMM, zeros included. Larger stacks run the convolutions.

    Attributes:
        filed_shape (int): rows left after the last pooling (DeepCTR-Torch's name).
        runs_banded (bool): whether :meth:`forward` takes the banded-GEMM path.

    Call: ``forward(inputs: Tensor (B, 1, F, D)) -> Tensor (B, conv_filters[-1], filed_shape, D)``.
    """

    BANDED_MAX_ENTRIES = 1 << 16

    def __init__(self, field_size: int, conv_kernel_width: Sequence[int], conv_filters: Sequence[int]) -> None:
        super().__init__()
        if len(conv_kernel_width) != len(conv_filters) or not conv_filters:
            raise ValueError(f"conv_kernel_width {tuple(conv_kernel_width)} and conv_filters {tuple(conv_filters)} "
                             "must be non-empty and of equal length")
        n, l_, rows = int(field_size), len(conv_filters), int(field_size)
        layers: list[nn.Module] = []
        for i in range(1, l_ + 1):
            in_ch = 1 if i == 1 else conv_filters[i - 2]
            k = max(1, int((1 - pow(i / l_, l_ - i)) * n)) if i < l_ else 3
            rows = min(k, rows)
            layers += [FieldConv2d(in_ch, conv_filters[i - 1], conv_kernel_width[i - 1]), nn.Tanh(),
                       KMaxPooling(k=rows, axis=2)]
        self.conv_layer = nn.Sequential(*layers)
        self.filed_shape = rows
        self.field_size = n
        self.runs_banded = self._bands_fit()

    def _stages(self) -> list[tuple[FieldConv2d, KMaxPooling]]:
        mods = list(self.conv_layer)
        return list(zip(mods[0::3], mods[2::3]))  # type: ignore[arg-type]

    def _bands_fit(self) -> bool:
        """Whether every convolution's banded matrix has at most ``BANDED_MAX_ENTRIES`` entries."""
        length, entries = self.field_size, []
        for conv, pool in self._stages():
            entries.append(conv.band_entries(length))
            length = pool.k
        return max(entries) <= self.BANDED_MAX_ENTRIES

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 4 or inputs.shape[1] != 1 or inputs.shape[2] != self.field_size:
            raise ValueError(f"ConvLayer: expected inputs of shape (B, 1, {self.field_size}, D), "
                             f"got {tuple(inputs.shape)}")
        if not self.runs_banded:
            return self.conv_layer(inputs)
        B, _, length, D = inputs.shape
        x = inputs[:, 0].transpose(1, 2).reshape(B * D, length)  # (B D, C F) with C = 1
        channels = 1
        for conv, pool in self._stages():
            channels = conv.out_channels
            y = torch.addmm(conv.bias.repeat_interleave(length), x, conv.banded(length)).tanh_()  # (B D, C F)
            x = torch.topk(y.view(B * D, channels, length), pool.k, dim=-1).values  # (B D, C, k)
            length = pool.k
            x = x.reshape(B * D, channels * length)  # (B D, C k)
        return x.view(B, D, channels, length).permute(0, 2, 3, 1)  # (B, C, K, D)


class FGCNNLayer(nn.Module):
    """FGCNN's feature generation (Liu et al., "Feature Generation by Convolutional Neural Network for
    Click-Through Rate Prediction", WWW 2019): per layer ``i``, convolution (tanh) -> max pooling over
    ``pooling_width_i`` rows -> a dense recombination (tanh) into ``new_maps_i * F_i`` new ``D``-dim features.

    ``F_i = F_{i-1} // p_i`` as DeepCTR, with ``p_i = min(pooling_width_i, F_{i-1})`` so that few fields keep one
    row instead of none (DeepCTR fails there). The recombination reads the pooled maps flattened channels-last
    (``(F_i, D, C)``), as DeepCTR's Keras ``Flatten``.

    Args:
        field_size (int): ``F``.
        embedding_size (int): ``D``.
        filters, kernel_width, new_maps, pooling_width (Sequence[int]): per-layer settings, equal lengths.

    Attributes:
        new_feature_num (int): ``sum_i new_maps_i * F_i``.

    Call: ``forward(inputs: Tensor (B, F, D)) -> Tensor (B, new_feature_num, D)``.
    """

    def __init__(self, field_size: int, embedding_size: int, filters: Sequence[int] = (14, 16),
                 kernel_width: Sequence[int] = (7, 7), new_maps: Sequence[int] = (3, 3),
                 pooling_width: Sequence[int] = (2, 2)) -> None:
        super().__init__()
        if not len(filters) == len(kernel_width) == len(new_maps) == len(pooling_width):
            raise ValueError("filters, kernel_width, new_maps and pooling_width must have the same length")
        self.convs = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.dense = nn.ModuleList()
        self.rows: list[int] = []
        self.new_maps = tuple(int(m) for m in new_maps)
        rows, in_ch = int(field_size), 1
        for c, w, m, p in zip(filters, kernel_width, new_maps, pooling_width):
            p = max(1, min(int(p), rows))
            self.convs.append(FieldConv2d(in_ch, c, w, zero_bias=True))
            self.pools.append(nn.MaxPool2d(kernel_size=(p, 1)))
            rows = rows // p
            self.dense.append(nn.Linear(c * rows * embedding_size, m * rows * embedding_size))
            self.rows.append(rows)
            in_ch = c
        self.embedding_size = embedding_size
        self.new_feature_num = sum(m * r for m, r in zip(self.new_maps, self.rows))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3:
            raise ValueError(f"FGCNNLayer: expected inputs of shape (B, F, D), got {tuple(inputs.shape)}")
        B, D = inputs.shape[0], self.embedding_size
        x = inputs.unsqueeze(1)  # (B, 1, F, D)
        new: list[torch.Tensor] = []
        for conv, pool, dense, m, rows in zip(self.convs, self.pools, self.dense, self.new_maps, self.rows):
            x = pool(torch.tanh(conv(x)))  # (B, C_i, F_i, D)
            flat = x.permute(0, 2, 3, 1).reshape(B, -1)  # (B, F_i * D * C_i) channels-last
            new.append(torch.tanh(dense(flat)).view(B, m * rows, D))  # (B, m_i * F_i, D)
        return torch.cat(new, dim=1)  # (B, new_feature_num, D)
