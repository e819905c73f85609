"""AutoInt: stacked multi-head self-attention over fields, optionally beside a DNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.field_attention import InteractingLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import logit_layer, make_dnn
from dist_ctr.models.config_blocks import BatchNormArgs, DeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["AutoInt", "AutoIntConfig"]


@dataclass(frozen=True)
class AutoIntConfig(BatchNormArgs, DeepArgs):
    """DeepCTR-Torch's ``AutoInt`` arguments (feature columns as names; ``None`` = every feature). As DeepCTR-Torch, no
    ``l2_reg_linear``: the linear part is unregularised."""

    att_layer_num: int = 3
    att_head_num: int = 2
    att_res: bool = True
    linear_feature_names: Optional[tuple[str, ...]] = None
    linear_in_embedding_tables: bool = False  # see dist_ctr.models.config_blocks.LinearArgs


@register_model("AutoInt", AutoIntConfig)
class AutoInt(FieldModel):
    """AutoInt (Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural Networks",
    CIKM 2019).

    ``logit = linear(x) + W [flatten(Att^L(e)) ; DNN([flatten(e) ; dense])]`` where ``Att`` is an
    :class:`InteractingLayer`; either branch may be switched off (``att_layer_num = 0`` or no hidden units), not
    both. As DeepCTR-Torch, the linear part is unregularised.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim (a multiple of ``att_head_num``), ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: AutoIntConfig = AutoIntConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.dnn_hidden_units and config.att_layer_num <= 0:
            raise ValueError("AutoInt: either dnn_hidden_units or att_layer_num must be > 0")
        self.build_fields("AutoInt", config.dnn_feature_names, config.linear_feature_names, 0.0)
        D, Fn = self.embedding_dim, self.num_fields
        if D % config.att_head_num != 0:
            raise ValueError(f"AutoInt: embedding_dim {D} of feature {self.sparse_names[0]!r} is not a multiple of "
                             f"att_head_num {config.att_head_num}")
        self.int_layers = nn.ModuleList(
            [InteractingLayer(D, config.att_head_num, config.att_res) for _ in range(config.att_layer_num)])
        self.dnn: Optional[DNN] = None
        width = Fn * D if config.att_layer_num > 0 else 0
        if config.dnn_hidden_units:
            self.dnn = make_dnn(Fn * D + self.dense_cols.width, config)
            width += self.dnn.output_dim
        # As DeepCTR-Torch: l2_reg_dnn on the DNN's kernels, not on the final linear.
        self.dnn_linear = logit_layer(self, width, config.l2_reg_dnn, self.dnn.weights() if self.dnn else [],
                                      regularize=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        parts: list[torch.Tensor] = []
        if len(self.int_layers):
            att = emb
            for layer in self.int_layers:
                att = layer(att)  # (B, F, D)
            parts.append(att.flatten(start_dim=1))  # (B, F * D)
        if self.dnn is not None:
            parts.append(self.dnn(torch.cat([emb.flatten(start_dim=1), self.dense_cols(dense)], dim=1)))  # (B, H)
        stack = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(stack))  # (B, T)
