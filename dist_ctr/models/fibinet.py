"""FiBiNET: SENET field importance and bilinear interactions feeding a DNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.field_attention import SENETLayer
from dist_ctr.layers.pairwise import BilinearInteraction
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import DeepArgs, LinearArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["FiBiNET", "FiBiNETConfig"]


@dataclass(frozen=True)
class FiBiNETConfig(LinearArgs, DeepArgs):
    """DeepCTR-Torch's ``FiBiNET`` arguments (feature columns as names; ``None`` = every feature)."""

    bilinear_type: str = "interaction"
    reduction_ratio: int = 3
    dnn_hidden_units: tuple[int, ...] = (128, 128)


@register_model("FiBiNET", FiBiNETConfig)
class FiBiNET(FieldModel):
    """FiBiNET (Huang et al., "FiBiNET: Combining Feature Importance and Bilinear feature Interaction for
    Click-Through Rate Prediction", RecSys 2019).

    ``p = Bilinear(SENET(e))``, ``q = Bilinear(e)`` (one bilinear layer applied to both, as DeepCTR-Torch);
    ``logit = linear(x) + w^T DNN([flatten(p) ; flatten(q) ; dense])``.

    Notation: ``B`` batch, ``F`` sparse features (at least 2), ``P = F (F - 1) / 2``, ``D`` embedding dim,
    ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: FiBiNETConfig = FiBiNETConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.dnn_hidden_units:
            raise ValueError("FiBiNET needs non-empty dnn_hidden_units")
        self.build_fields("FiBiNET", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear,
                          min_sparse=2)
        Fn, D = self.num_fields, self.embedding_dim
        self.se = SENETLayer(Fn, config.reduction_ratio)
        self.bilinear = BilinearInteraction(Fn, D, config.bilinear_type)
        self.dnn, self.dnn_linear = dnn_tower(self, Fn * (Fn - 1) * D + self.dense_cols.width, config, use_bn=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        B = emb.shape[0]
        # The shared bilinear layer applied once to SENET(e) and e stacked on the batch axis (half the ops).
        pq = self.bilinear(torch.cat([self.se(emb), emb], dim=0)).flatten(start_dim=1)  # (2 B, P * D)
        x = torch.cat([pq[:B], pq[B:], self.dense_cols(dense)], dim=1)  # (B, 2 P D + n): p, q, dense
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(self.dnn(x)))  # (B, T)
