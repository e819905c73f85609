"""Core blocks: activations by name, ``DNN`` (the MLP tower every model uses), ``PredictionLayer``, and the
running-statistics update of a batch norm whose statistics are computed outside its forward.

Notation: ``B`` batch, ``N`` input width, ``H`` hidden width.

>>> import torch
>>> dnn = DNN(8, (16, 4), activation="relu", dropout_rate=0.0, use_bn=True)
>>> tuple(dnn(torch.randn(3, 8)).shape)
(3, 4)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["DNN", "PredictionLayer", "activation_layer", "update_running_stats"]


def activation_layer(name: str | Callable[[], nn.Module] | nn.Module, hidden_size: int | None = None) -> nn.Module:
    """Activation by DeepCTR's names: relu, sigmoid, tanh, prelu, dice, linear, leakyrelu, gelu, silu."""
    if isinstance(name, nn.Module):
        return name
    if callable(name) and not isinstance(name, str):
        return name()
    key = name.lower()
    if key == "relu":
        return nn.ReLU()
    if key == "sigmoid":
        return nn.Sigmoid()
    if key == "tanh":
        return nn.Tanh()
    if key == "prelu":
        return nn.PReLU()
    if key == "linear":
        return nn.Identity()
    if key == "leakyrelu":
        return nn.LeakyReLU()
    if key == "gelu":
        return nn.GELU()
    if key in ("silu", "swish"):
        return nn.SiLU()
    if key == "dice":
        from dist_ctr.layers.activation import Dice  # noqa: PLC0415  (sequence helpers own Dice)

        if hidden_size is None:
            raise ValueError("activation 'dice' needs the hidden size")
        return Dice(hidden_size)
    raise ValueError(f"unknown activation {name!r}")


class DNN(nn.Module):
    """Fully connected tower: ``[Linear -> (BatchNorm) -> activation -> Dropout] x len(hidden_units)``.

    Args:
        inputs_dim (int): ``N``.
        hidden_units (Sequence[int]): widths ``H_1..H_k``; empty means identity.
        activation (str): see :func:`activation_layer`.
        dropout_rate (float): dropout after each activation.
        use_bn (bool): batch norm before each activation.
        init_std (float): normal init std of the weights (DeepCTR's ``init_std``).
        zero_bias (bool): biases start at 0, as Keras's ``Dense`` in DeepCTR (the TensorFlow library: BST, DSIN,
            FGCNN, FwFM, FLEN). Default ``False``: ``nn.Linear``'s ``U(-1/sqrt(N_in), 1/sqrt(N_in))``, as
            DeepCTR-Torch's ``DNN`` (it re-draws only the weights). With weights at 1e-4 the biases are what the
            activations see at first, so this choice shapes early training; narrow ReLU layers started this way
            can lose every unit (a dead tower), in DeepCTR-Torch as here.

    Call: ``forward(x: Tensor (B, N)) -> Tensor (B, H_k)`` (also ``(..., N) -> (..., H_k)`` without BN).
    """

    def __init__(
        self,
        inputs_dim: int,
        hidden_units: Sequence[int],
        activation: str = "relu",
        dropout_rate: float = 0.0,
        use_bn: bool = False,
        init_std: float = 1e-4,
        zero_bias: bool = False,
    ) -> None:
        super().__init__()
        dims = [int(inputs_dim)] + [int(h) for h in hidden_units]
        self.output_dim = dims[-1]
        self.init_std = init_std
        self.zero_bias = zero_bias
        layers: list[nn.Module] = []
        for i in range(len(hidden_units)):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if use_bn:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(activation_layer(activation, dims[i + 1]))
            if dropout_rate > 0:
                layers.append(nn.Dropout(dropout_rate))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.layers:
            if isinstance(m, nn.Linear):
                m.reset_parameters()  # nn.Linear's default bias init
                nn.init.normal_(m.weight, mean=0.0, std=self.init_std)
                if self.zero_bias:
                    nn.init.zeros_(m.bias)

    def weights(self) -> list[torch.Tensor]:
        """Linear weight matrices (targets of ``l2_reg_dnn``)."""
        return [m.weight for m in self.layers if isinstance(m, nn.Linear)]

    def split_first(self) -> tuple[nn.Linear, nn.Sequential]:
        """The first ``Linear`` and the rest of the tower, for a layer that computes that ``Linear`` itself
        (fused with its own output): ``rest(first(x))`` equals ``self(x)`` for ``x (B, N)``."""
        if not len(self.layers):
            raise ValueError("DNN.split_first: the tower has no layers (empty hidden_units)")
        first = self.layers[0]
        assert isinstance(first, nn.Linear)
        return first, self.layers[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.layers) and any(isinstance(m, nn.BatchNorm1d) for m in self.layers) and x.dim() > 2:
            lead = x.shape[:-1]
            return self.layers(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)  # (..., H_k)
        return self.layers(x)


class PredictionLayer(nn.Module):
    """DeepCTR's output layer: adds a bias; returns logits (the sigmoid belongs to prediction, not the model).

    Args:
        task (str): "binary" or "regression" (kept for DeepCTR compatibility; both return the raw value).
        use_bias (bool): learn a scalar bias.

    Call: ``forward(x: Tensor (B, 1)) -> Tensor (B, 1)``.
    """

    def __init__(self, task: str = "binary", use_bias: bool = True) -> None:
        super().__init__()
        if task not in ("binary", "regression", "multiclass"):
            raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
        self.task = task
        self.bias = nn.Parameter(torch.zeros(1)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias if self.bias is not None else x


def fusable_batch_norm(bn: nn.Module) -> bool:
    """Whether ``bn`` normalises with this process's batch statistics and an affine map, so that a fused function
    that computes the statistics itself (and then :func:`update_running_stats`) computes what its forward would:
    training mode (or no running statistics), and not a batch norm whose statistics span several processes
    (``spans_processes()``, as the engine's global batch norm under data parallelism)."""
    if not isinstance(bn, _BatchNorm) or not bn.affine:
        return False
    if not (bn.training or bn.running_mean is None):
        return False
    spans = getattr(bn, "spans_processes", None)
    return not (callable(spans) and spans())


def update_running_stats(bn: _BatchNorm, mean: torch.Tensor, var: torch.Tensor,
                         count: float | torch.Tensor) -> None:
    """A batch norm's running-statistics update from batch statistics computed outside its forward, as
    ``torch.nn.BatchNorm`` does it in training mode: ``num_batches_tracked`` counts the step, the average weight is
    ``momentum`` (``1 / steps`` when ``momentum`` is None), the running variance takes the unbiased estimate.

    Args:
        bn: the batch norm whose buffers are updated (nothing happens unless it is training and tracking).
        mean, var (Tensor (C,)): the batch mean and biased variance per channel.
        count (float | Tensor): values per channel behind them (a tensor keeps accelerators free of host syncs).
    """
    if not (bn.training and bn.track_running_stats) or bn.running_mean is None or bn.running_var is None:
        return
    assert bn.num_batches_tracked is not None
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else float(bn.momentum)
        n = torch.as_tensor(count, dtype=var.dtype, device=var.device)
        unbiased = var.detach() * n / (n - 1).clamp_min(1)
        bn.running_mean.mul_(1.0 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
        bn.running_var.mul_(1.0 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
