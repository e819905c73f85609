"""Batch norm over the global batch: N data-parallel ranks normalise with the statistics one process would see.

Under DistributedDataParallel a plain ``BatchNorm`` normalises each rank's slice of the batch with that slice's
own mean and variance, so N workers train a different model than one worker on the same global batch (and the
running statistics drift apart per rank). :class:`GlobalBatchNorm` sums the per-channel counts, sums and squared
deviations over the process group with autograd-aware all-reduces, so the forward pass, the gradient (which flows
back through the statistics to every rank's rows) and the running statistics are those of the global batch.

Notation: ``N`` rows of this rank, ``C`` channels, ``L`` optional trailing positions (``BatchNorm1d`` on
``(N, C, L)``); statistics run over every dimension but ``C``.

``convert_global_batchnorm(module)`` swaps every ``BatchNorm1d/2d/3d`` of a module in place (parameters and buffers
kept, state-dict keys unchanged, so checkpoints move freely between world sizes and to plain models). At world
size 1, or in eval mode, the layer is exactly ``torch.nn.functional.batch_norm``.

>>> import torch
>>> bn = GlobalBatchNorm(3)
>>> x = torch.randn(8, 3)
>>> torch.allclose(bn(x), torch.nn.functional.batch_norm(x, None, None, training=True, eps=bn.eps), atol=1e-6)
True
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dist_ctr.layers.core import update_running_stats

__all__ = ["GlobalBatchNorm", "convert_global_batchnorm"]


class GlobalBatchNorm(_BatchNorm):
    """``BatchNorm{1,2,3}d`` whose training statistics span every rank of ``group`` (default: the world).

    Args:
        num_features (int): ``C``.
        eps, momentum, affine, track_running_stats: as in ``torch.nn.BatchNorm1d``.
        group: process group the statistics are summed over (``None``: the default group).

    Call: ``forward(x: Tensor (N, C, *)) -> Tensor (N, C, *)``. Every rank must call it the same number of times
    per step (ranks with ``N = 0`` rows take part too).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, group: dist.ProcessGroup | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.group = group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, *) input, got shape {tuple(x.shape)}")

    def _world_size(self) -> int:
        return dist.get_world_size(self.group) if dist.is_available() and dist.is_initialized() else 1

    def spans_processes(self) -> bool:
        """Whether the batch statistics are summed over more than one process (a layer that computes a batch
        norm's statistics itself must then defer to this module's forward)."""
        return self._world_size() > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or self._world_size() == 1:
            return super().forward(x)  # torch's batch norm: running stats, momentum and counter as usual
        return self._global(x)

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        C = self.num_features
        dims = [0] + list(range(2, x.dim()))
        shape = [1, C] + [1] * (x.dim() - 2)
        xf = x.float()
        n_local = x.numel() // C if C else 0
        # (C + 1,): per-channel sums and the row count, summed over ranks (gradients flow back to every rank).
        head = torch.cat([xf.sum(dims), xf.new_full((1,), float(n_local))])
        group = self.group or dist.group.WORLD
        head = all_reduce(head, group=group)
        count = head[C]  # a tensor: no host sync on accelerators
        mean = head[:C] / count  # (C,)
        centred = xf - mean.view(shape)
        sq = all_reduce(centred.pow(2).sum(dims), group=group)
        var = sq / count  # biased, as used for normalisation
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        update_running_stats(self, mean, var, count)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module, group: dist.ProcessGroup | None = None) -> int:
    """Replace every ``torch.nn`` batch norm inside ``module`` by a :class:`GlobalBatchNorm`, in place.

    Parameters and buffers move over unchanged (same state-dict keys). Returns how many layers were swapped.
    """
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats, group)
            new.train(child.training)
            with torch.no_grad():
                if child.affine:
                    new.weight = child.weight
                    new.bias = child.bias
                if child.track_running_stats:
                    new.running_mean = child.running_mean
                    new.running_var = child.running_var
                    new.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, new)
            swapped += 1
        else:
            swapped += convert_global_batchnorm(child, group)
    return swapped
