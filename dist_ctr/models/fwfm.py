"""FwFM: field-weighted factorization machine, optionally beside a DNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import FwFMLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import WideDeepArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import DEFAULT_GROUP_NAME, FeatureSchema

__all__ = ["FwFM", "FwFMConfig"]


@positional_order("fm_group", "dnn_hidden_units", "l2_reg_linear", "l2_reg_embedding", "l2_reg_field_strength",
                  "l2_reg_dnn", "init_std", "dnn_dropout", "dnn_activation", "dnn_use_bn")
@dataclass(frozen=True)
class FwFMConfig(WideDeepArgs):
    """DeepCTR's ``FwFM`` arguments (feature columns as names; ``None`` = every feature)."""

    fm_group: tuple[str, ...] = (DEFAULT_GROUP_NAME,)
    dnn_hidden_units: tuple[int, ...] = (256, 128, 64)
    l2_reg_field_strength: float = 1e-5


@register_model("FwFM", FwFMConfig)
class FwFM(FieldModel):
    """Field-weighted Factorization Machine (Pan et al., "Field-weighted Factorization Machines for Click-Through
    Rate Prediction in Display Advertising", WWW 2018), in DeepCTR's DeepFwFM form.

    ``logit = linear(x) + sum_{g in fm_group} sum_{i<j in g} r_ij <e_i, e_j> + w^T DNN([flatten(e) ; dense])``;
    one :class:`FwFMLayer` per group of ``fm_group`` (features' ``group_name``), and no DNN when
    ``dnn_hidden_units`` is empty. The field strengths get ``l2_reg_field_strength``.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: FwFMConfig = FwFMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self.build_fields("FwFM", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        groups = [schema.feature(n).group_name for n in self.sparse_names]  # type: ignore[union-attr]
        self.fm_groups = [g for g in dict.fromkeys(groups) if g in set(config.fm_group)]
        if not self.fm_groups:
            raise ValueError(f"FwFM: no sparse feature has a group_name in fm_group {list(config.fm_group)}; "
                             f"groups present: {sorted(set(groups))}")
        for k, g in enumerate(self.fm_groups):  # field indices of each FM group
            idx = [i for i, gi in enumerate(groups) if gi == g]
            self.register_buffer(f"_group_{k}", torch.tensor(idx, dtype=torch.long), persistent=False)
        self.fwfm = nn.ModuleList([FwFMLayer(sum(gi == g for gi in groups)) for g in self.fm_groups])
        self.register_l2(config.l2_reg_field_strength, [m.field_strengths for m in self.fwfm])
        self.dnn: Optional[DNN] = None
        if config.dnn_hidden_units:
            self.dnn, self.dnn_linear = dnn_tower(self, self.num_fields * self.embedding_dim + self.dense_cols.width,
                                                  config, zero_bias=True)  # Keras Dense: zero biases (see DNN)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        logit = self.linear_logit(dense, sparse)  # (B, 1)
        for i, layer in enumerate(self.fwfm):
            logit = logit + layer(emb.index_select(1, getattr(self, f"_group_{i}")))  # (B, 1)
        if self.dnn is not None:
            x = torch.cat([emb.flatten(start_dim=1), self.dense_cols(dense)], dim=1)  # (B, F D + n)
            logit = logit + self.dnn_linear(self.dnn(x))  # (B, T)
        return self.out(logit)  # (B, T)
