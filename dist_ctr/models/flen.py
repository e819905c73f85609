"""FLEN: field-wise bi-interaction across feature groups beside a DNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import FieldWiseBiInteraction
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import WideDeepArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["FLEN", "FLENConfig"]


@positional_order("dnn_hidden_units", "l2_reg_linear", "l2_reg_embedding", "l2_reg_dnn", "init_std", "dnn_dropout",
                  "dnn_activation", "dnn_use_bn")
@dataclass(frozen=True)
class FLENConfig(WideDeepArgs):
    """DeepCTR's ``FLEN`` arguments (feature columns as names; ``None`` = every feature)."""

    dnn_hidden_units: tuple[int, ...] = (256, 128, 64)


@register_model("FLEN", FLENConfig)
class FLEN(FieldModel):
    """Field-Leveraged Embedding Network (Chen et al., "FLEN: Leveraging Field for Scalable CTR Prediction",
    2019), as DeepCTR.

    Fields are the features' ``group_name`` values (e.g. user / item / context), in first-appearance order.
    ``logit = linear(x) + w^T [FieldWiseBiInteraction(e) ; DNN([flatten(e) ; dense])]``. With a single group
    the inter-group (MF) term is its bias only.

    Notation: ``B`` batch, ``F`` sparse features, ``G`` groups, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: FLENConfig = FLENConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self.build_fields("FLEN", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        names = [schema.feature(n).group_name for n in self.sparse_names]  # type: ignore[union-attr]
        self.group_names = list(dict.fromkeys(names))
        ids = [self.group_names.index(g) for g in names]
        self.register_buffer("_groups", torch.tensor(ids, dtype=torch.long), persistent=False)  # (F,)
        D = self.embedding_dim
        self.fwbi = FieldWiseBiInteraction(len(self.group_names), D)
        self.dnn, self.dnn_linear = dnn_tower(self, self.num_fields * D + self.dense_cols.width, config, extra_width=D,
                                              zero_bias=True)  # Keras Dense: zero biases (see DNN)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        fm_mf = self.fwbi(emb, self._groups)  # (B, D)
        deep = self.dnn(torch.cat([emb.flatten(start_dim=1), self.dense_cols(dense)], dim=1))  # (B, H)
        logit = self.dnn_linear(torch.cat([fm_mf, deep], dim=1))  # (B, T)
        return self.out(self.linear_logit(dense, sparse) + logit)  # (B, T)
