"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016).

Notation: ``B`` batch, ``F`` pooled sparse features of the DNN, ``D`` embedding dim, ``N`` DNN input width
(dense values + flattened embeddings), ``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 4), DenseFeat("x")))
>>> m = materialize(WDL(s, WDLConfig(dnn_hidden_units=(8,))))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.ones(4, dtype=torch.int32))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.models.base import CTRModel
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.inputs import DeepInputs, carried_linear, deep_with_linear, linear_part

__all__ = ["WDL", "WDLConfig"]


@dataclass(frozen=True)
class WDLConfig(WideDeepArgs):
    """DeepCTR-Torch's ``WDL`` arguments (feature columns as names; ``None`` = all features)."""


@register_model("WDL", WDLConfig)
class WDL(CTRModel):
    """Wide & Deep: ``logit = linear(x) + w^T DNN([dense, e_1, ..., e_F]) + b``.

    Args:
        schema (FeatureSchema): features and labels.
        config (WDLConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: WDLConfig = WDLConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self.inputs: Optional[DeepInputs] = None
        self.dnn: Optional[DNN] = None
        inputs = DeepInputs(schema, cfg.dnn_feature_names, carried_linear(schema, cfg))
        if len(cfg.dnn_hidden_units) > 0 and inputs.output_dim > 0:
            self.inputs = inputs
        self.linear = linear_part(self, cfg.linear_feature_names, cfg.l2_reg_linear,
                                  shared=self.inputs.sparse if self.inputs is not None else None)
        if self.inputs is not None:
            self.dnn, self.dnn_linear = dnn_tower(self, inputs.output_dim, cfg)
        self.out = TaskOutput(self.num_tasks, shared=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        if self.inputs is None or self.dnn is None:
            return self.out(self.linear(dense, sparse))  # (B, T)
        _, x, logit = deep_with_linear(self, self.inputs, self.linear, self.config.l2_reg_embedding, dense, sparse)
        logit = logit + self.dnn_linear(self.dnn(x))  # (B, T)
        return self.out(logit)  # (B, T)
