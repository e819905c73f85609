"""NFM: linear part plus a DNN over the Bi-Interaction pooled embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import BiInteractionPooling
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import DeepArgs, LinearArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["NFM", "NFMConfig"]


@dataclass(frozen=True)
class NFMConfig(LinearArgs, DeepArgs):
    """DeepCTR-Torch's ``NFM`` arguments (feature columns as names; ``None`` = every feature)."""

    dnn_hidden_units: tuple[int, ...] = (128, 128)
    bi_dropout: float = 0.0


@register_model("NFM", NFMConfig)
class NFM(FieldModel):
    """Neural Factorization Machine (He & Chua, "Neural Factorization Machines for Sparse Predictive Analytics",
    SIGIR 2017).

    ``logit = linear(x) + w^T DNN([BiInteraction(e) ; dense])`` with ``BiInteraction(e) = sum_{i<j} e_i * e_j``.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: NFMConfig = NFMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self.build_fields("NFM", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        if not config.dnn_hidden_units:
            raise ValueError("NFM needs non-empty dnn_hidden_units")
        self.bi_pooling = BiInteractionPooling()
        self.bi_dropout = nn.Dropout(config.bi_dropout)
        self.dnn, self.dnn_linear = dnn_tower(self, self.embedding_dim + self.dense_cols.width, config, use_bn=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        bi = self.bi_dropout(self.bi_pooling(emb).squeeze(1))  # (B, D)
        x = torch.cat([bi, self.dense_cols(dense)], dim=1)  # (B, D + n)
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(self.dnn(x)))  # (B, T)
