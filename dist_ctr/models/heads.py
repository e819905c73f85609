"""The output block the models share (TorchRec's ``OverArch`` role): a DNN tower to logits ``(B, T)`` with its L2
registration, and the output bias.

DeepCTR's tail is ``DNN -> Linear(H, T, bias=False) -> + bias``; :func:`dnn_tower` builds the first two (and
registers ``l2_reg_dnn`` on the DNN's kernels and the final linear's weight), :class:`TaskOutput` is the bias.

The tower is built by functions that return the modules instead of one wrapping ``nn.Module``: each model keeps
its parts under the attribute names its checkpoints store (``dnn.*``, ``dnn_linear.weight``, ``afn_dnn.*``,
``factor_estimating_net.*``, ...), since ``torch.distributed.checkpoint`` loads by fully qualified name. The
parts are created in the order the models always created them (DNN, then whatever sits beside it, then the final
linear), so a seed gives the same initial weights as before.

Notation: ``B`` batch, ``N`` tower input width, ``H`` tower output width, ``T`` tasks.

>>> import torch
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Cfg:
...     dnn_hidden_units: tuple = (8,); dnn_activation: str = "relu"; dnn_dropout: float = 0.0
...     dnn_use_bn: bool = False; init_std: float = 1e-4; l2_reg_dnn: float = 0.0
>>> from dist_ctr.models.base import CTRModel
>>> from dist_ctr.schema import DenseFeat, FeatureSchema
>>> m = CTRModel(FeatureSchema((DenseFeat("x"),)))
>>> dnn, linear = dnn_tower(m, 3, Cfg())
>>> tuple(TaskOutput(2)(linear(dnn(torch.randn(5, 3)))).shape)
(5, 2)
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

from dist_ctr.layers.core import DNN
from dist_ctr.models.base import CTRModel

__all__: list[str] = []  # shared plumbing; nothing re-exported by dist_ctr.models


class TaskOutput(nn.Module):
    """The output bias (DeepCTR's ``PredictionLayer``, logits: the sigmoid belongs to prediction).

    One semantics for every model: the logit ``(B, 1)`` or ``(B, T)`` is broadcast to ``(B, T)`` and the bias is
    added, broadcast over the tasks. The bias is one value per task (``(T,)``, zeros) unless ``shared``: then
    one scalar ``(1,)`` shared by the tasks, as DeepCTR's single-output models (WDL, DeepFM, DCN, DCNMix, xDeepFM,
    LR) always had it; those keep the scalar so that their checkpoints (``out.bias`` of shape ``(1,)``) load.

    Args:
        num_tasks (int): ``T``.
        use_bias (bool): learn a bias.
        shared (bool): one bias for all tasks instead of one per task.

    Call: ``forward(x: Tensor (B, 1) | (B, T)) -> Tensor (B, T)``.
    """

    def __init__(self, num_tasks: int, use_bias: bool = True, shared: bool = False) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.bias = nn.Parameter(torch.zeros(1 if shared else num_tasks)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(x.shape[0], self.num_tasks)  # (B, T)
        return x + self.bias if self.bias is not None else x


def make_dnn(in_features: int, cfg: Any, hidden_units: Optional[Sequence[int]] = None,
             use_bn: Optional[bool] = None, zero_bias: bool = False) -> DNN:
    """DeepCTR's DNN from a config's ``dnn_*`` / ``init_std`` arguments.

    ``hidden_units`` defaults to ``cfg.dnn_hidden_units``, ``use_bn`` to ``cfg.dnn_use_bn`` (``False`` for the
    configs without it); ``zero_bias`` starts the biases at 0 (Keras ``Dense``, see :class:`DNN`).
    """
    units = cfg.dnn_hidden_units if hidden_units is None else hidden_units
    bn = getattr(cfg, "dnn_use_bn", False) if use_bn is None else use_bn
    return DNN(in_features, units, cfg.dnn_activation, cfg.dnn_dropout, bn, cfg.init_std, zero_bias=zero_bias)


def logit_layer(model: CTRModel, width: int, l2: float, tower: Iterable[torch.Tensor] = (),
                out_features: Optional[int] = None, bias: bool = False, regularize: bool = True) -> nn.Linear:
    """The final ``Linear(width, T)`` (bias-free unless ``bias``); registers ``l2`` on the ``tower`` kernels and,
    when ``regularize``, on its own weight. ``out_features`` defaults to the model's ``T``."""
    linear = nn.Linear(width, model.num_tasks if out_features is None else out_features, bias=bias)
    params = list(tower) + ([linear.weight] if regularize else [])
    if params:
        model.register_l2(l2, params)
    return linear


def dnn_tower(model: CTRModel, in_features: int, cfg: Any, extra_width: int = 0,
              hidden_units: Optional[Sequence[int]] = None, use_bn: Optional[bool] = None,
              zero_bias: bool = False, out_features: Optional[int] = None,
              bias: bool = False) -> tuple[DNN, nn.Linear]:
    """``DNN(in_features) -> Linear(H + extra_width, T)``, with ``cfg.l2_reg_dnn`` on the DNN's kernels and the
    linear's weight; ``extra_width`` columns of another branch join the DNN output before the linear (FLEN).

    Call the pair as ``linear(dnn(x))`` (``x: Tensor (B, N) -> Tensor (B, T)``).
    """
    dnn = make_dnn(in_features, cfg, hidden_units, use_bn, zero_bias)
    linear = logit_layer(model, dnn.output_dim + extra_width, cfg.l2_reg_dnn, dnn.weights(), out_features, bias)
    return dnn, linear
