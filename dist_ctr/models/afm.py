"""AFM: linear part plus an attention-weighted sum of pairwise embedding products."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.interaction import FM
from dist_ctr.layers.pairwise import AFMLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.config_blocks import DNNFeatureArgs, EmbeddingArgs, LinearArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["AFM", "AFMConfig"]


@dataclass(frozen=True)
class AFMConfig(LinearArgs, DNNFeatureArgs, EmbeddingArgs):
    """DeepCTR-Torch's ``AFM`` arguments (feature columns as names; ``None`` = every feature)."""

    use_attention: bool = True
    attention_factor: int = 8
    l2_reg_att: float = 1e-5
    afm_dropout: float = 0.0


@register_model("AFM", AFMConfig)
class AFM(FieldModel):
    """Attentional Factorization Machine (Xiao et al., "Attentional Factorization Machines: Learning the Weight
    of Feature Interactions via Attention Networks", IJCAI 2017).

    ``logit = linear(x) + p^T sum_{i<j} a_ij (e_i * e_j)`` (or the plain FM term without attention). The pairwise
    part is one scalar shared by the ``T`` task outputs, which differ by their bias.

    Notation: ``B`` batch, ``F`` sparse features (at least 2), ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: AFMConfig = AFMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self.build_fields("AFM", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear,
                          min_sparse=2)
        if config.use_attention:
            self.fm: torch.nn.Module = AFMLayer(self.embedding_dim, config.attention_factor, config.l2_reg_att,
                                                config.afm_dropout)
            self.register_l2(config.l2_reg_att, [self.fm.attention_W])
        else:
            self.fm = FM()

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        return self.out(self.linear_logit(dense, sparse) + self.fm(emb))  # (B, T)
