"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017).

Notation: ``B`` batch, ``F`` pooled sparse features of the DNN, ``D`` embedding dim, ``N`` DNN input width,
``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 4), DenseFeat("x")))
>>> m = materialize(DeepFM(s, DeepFMConfig(dnn_hidden_units=(8,))))
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
from dist_ctr.layers.interaction import FM
from dist_ctr.models.base import CTRModel
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.inputs import DeepInputs, carried_linear, deep_with_linear, linear_part
from dist_ctr.schema import FeatureSchema

__all__ = ["DeepFM", "DeepFMConfig"]


@dataclass(frozen=True)
class DeepFMConfig(WideDeepArgs):
    """DeepCTR-Torch's ``DeepFM`` arguments (feature columns as names; ``None`` = all features)."""

    use_fm: bool = True


@register_model("DeepFM", DeepFMConfig)
class DeepFM(CTRModel):
    """``logit = linear(x) + FM(e_1..e_F) + w^T DNN([dense, e_1, ..., e_F]) + b``; FM and DNN share embeddings.

    The FM term needs one embedding dim over the sparse DNN features (a clear error names them otherwise) and is
    skipped when there are none (dense-only schemas).

    Args:
        schema (FeatureSchema): features and labels.
        config (DeepFMConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: DeepFMConfig = DeepFMConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        inputs = DeepInputs(schema, cfg.dnn_feature_names, carried_linear(schema, cfg))
        self.use_fm = cfg.use_fm and inputs.num_fields > 0
        self.use_dnn = len(cfg.dnn_hidden_units) > 0 and inputs.output_dim > 0
        if self.use_fm:
            inputs.require_equal_dims("DeepFM (use_fm=True)")
        self.inputs: Optional[DeepInputs] = inputs if (self.use_fm or self.use_dnn) else None
        self.linear = linear_part(self, cfg.linear_feature_names, cfg.l2_reg_linear,
                                  shared=self.inputs.sparse if self.inputs is not None else None)
        self.fm = FM()
        self.dnn: Optional[DNN] = None
        if self.use_dnn:
            self.dnn, self.dnn_linear = dnn_tower(self, inputs.output_dim, cfg)
        self.out = TaskOutput(self.num_tasks, shared=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        if self.inputs is None:
            return self.out(self.linear(dense, sparse))  # (B, T)
        emb, x, logit = deep_with_linear(self, self.inputs, self.linear, self.config.l2_reg_embedding, dense, sparse)
        if emb is not None and self.use_fm:
            logit = logit + self.fm(emb.pooled)  # (B, F, D) -> (B, 1)
        if self.dnn is not None:
            logit = logit + self.dnn_linear(self.dnn(x))  # (B, T)
        return self.out(logit)  # (B, T)
