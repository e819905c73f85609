"""Logistic regression: the linear (wide) part alone. The baseline every model must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.models.base import CTRModel
from dist_ctr.models.heads import TaskOutput
from dist_ctr.models.config_blocks import InitArgs, LinearArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.models.inputs import linear_part

__all__ = ["LogisticRegression", "LogisticRegressionConfig"]


@positional_order("l2_reg_linear", "init_std")
@dataclass(frozen=True)
class LogisticRegressionConfig(LinearArgs, InitArgs):
    """Arguments of the logistic regression: DeepCTR's linear part; ``init_std`` is the std of the linear
    tables' ``N(0, init_std ** 2)`` init."""


@register_model("LogisticRegression", LogisticRegressionConfig)
class LogisticRegression(CTRModel):
    """``logit = b + sum_f w_f[id_f] + w_dense . x`` per task (one linear arch per task).

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)``.
    """

    def __init__(self, schema: FeatureSchema, config: LogisticRegressionConfig = LogisticRegressionConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if self.num_tasks != 1:
            raise ValueError("LogisticRegression is single-task; use a multi-task model for several labels")
        self.linear = linear_part(self, config.linear_feature_names, config.l2_reg_linear)
        self.out = TaskOutput(self.num_tasks, shared=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.out(self.linear(dense, sparse))  # (B, 1)
