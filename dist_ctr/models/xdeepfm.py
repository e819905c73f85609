"""xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender
Systems", KDD 2018).

Notation: ``B`` batch, ``F`` pooled sparse features of the DNN, ``D`` embedding dim, ``N`` DNN input width,
``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 4), DenseFeat("x")))
>>> m = materialize(xDeepFM(s, xDeepFMConfig(dnn_hidden_units=(8,), cin_layer_size=(4, 4))))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.ones(4, dtype=torch.int32))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.interaction import CIN
from dist_ctr.models.base import CTRModel
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.inputs import DeepInputs, carried_linear, deep_with_linear, linear_part
from dist_ctr.schema import FeatureSchema

__all__ = ["xDeepFM", "xDeepFMConfig"]


@dataclass(frozen=True)
class xDeepFMConfig(WideDeepArgs):  # noqa: N801 (DeepCTR's name)
    """DeepCTR-Torch's ``xDeepFM`` arguments (feature columns as names; ``None`` = all features)."""

    dnn_hidden_units: tuple[int, ...] = (256, 256)
    cin_layer_size: tuple[int, ...] = (256, 128)
    cin_split_half: bool = True
    cin_activation: str = "relu"
    l2_reg_cin: float = 0.0


@register_model("xDeepFM", xDeepFMConfig)
class xDeepFM(CTRModel):  # noqa: N801 (DeepCTR's name)
    """``logit = linear(x) + w_dnn^T DNN([dense, e_1..e_F]) + w_cin^T CIN(e_1..e_F) + b``.

    CIN needs one embedding dim over the sparse DNN features (a clear error names them otherwise) and is
    skipped when there are none (dense-only schemas).

    Args:
        schema (FeatureSchema): features and labels.
        config (xDeepFMConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: xDeepFMConfig = xDeepFMConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        inputs = DeepInputs(schema, cfg.dnn_feature_names, carried_linear(schema, cfg))
        self.use_cin = len(cfg.cin_layer_size) > 0 and inputs.num_fields > 0
        self.use_dnn = len(cfg.dnn_hidden_units) > 0 and inputs.output_dim > 0
        self.inputs: Optional[DeepInputs] = inputs if (self.use_cin or self.use_dnn) else None
        self.linear = linear_part(self, cfg.linear_feature_names, cfg.l2_reg_linear,
                                  shared=self.inputs.sparse if self.inputs is not None else None)
        self.dnn: Optional[DNN] = None
        self.cin: Optional[CIN] = None
        if self.use_dnn:
            self.dnn, self.dnn_linear = dnn_tower(self, inputs.output_dim, cfg)
        if self.use_cin:
            inputs.require_equal_dims("xDeepFM (CIN)")
            self.cin = CIN(inputs.num_fields, cfg.cin_layer_size, cfg.cin_activation, cfg.cin_split_half)
            self.cin_linear = nn.Linear(self.cin.featuremap_num, self.num_tasks, bias=False)
            self.register_l2(cfg.l2_reg_cin, [c.weight for c in self.cin.conv1ds])
        self.out = TaskOutput(self.num_tasks, shared=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        if self.inputs is None:
            return self.out(self.linear(dense, sparse))  # (B, T)
        emb, x, logit = deep_with_linear(self, self.inputs, self.linear, self.config.l2_reg_embedding, dense, sparse)
        if emb is not None and self.cin is not None:
            logit = logit + self.cin_linear(self.cin(emb.pooled))  # (B, F, D) -> (B, T)
        if self.dnn is not None:
            logit = logit + self.dnn_linear(self.dnn(x))  # (B, T)
        return self.out(logit)  # (B, T)
