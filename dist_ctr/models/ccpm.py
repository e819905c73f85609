"""CCPM: convolutions with k-max pooling over the field axis, then a DNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.convolution import ConvLayer
from dist_ctr.layers.core import DNN
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["CCPM", "CCPMConfig"]


@dataclass(frozen=True)
class CCPMConfig(WideDeepArgs):
    """DeepCTR-Torch's ``CCPM`` arguments (feature columns as names; ``None`` = every feature)."""

    conv_kernel_width: tuple[int, ...] = (6, 5)
    conv_filters: tuple[int, ...] = (4, 4)
    dnn_hidden_units: tuple[int, ...] = (256,)
    def __post_init__(self) -> None:
        if len(self.conv_kernel_width) != len(self.conv_filters):
            raise ValueError("CCPM: conv_kernel_width must have as many elements as conv_filters")


@register_model("CCPM", CCPMConfig)
class CCPM(FieldModel):
    """Convolutional Click Prediction Model (Liu et al., "A Convolutional Click Prediction Model", CIKM 2015).

    ``logit = linear(x) + w^T DNN(flatten(ConvLayer(e)))``; as DeepCTR-Torch, dense features reach only the
    linear part.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: CCPMConfig = CCPMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.dnn_hidden_units:
            raise ValueError("CCPM needs non-empty dnn_hidden_units")
        self.build_fields("CCPM", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        self.conv_layer = ConvLayer(self.num_fields, config.conv_kernel_width, config.conv_filters)
        width = self.conv_layer.filed_shape * self.embedding_dim * config.conv_filters[-1]
        self.dnn, self.dnn_linear = dnn_tower(self, width, config)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        pooled = self.conv_layer(emb.unsqueeze(1))  # (B, C, K, D)
        logit = self.dnn_linear(self.dnn(pooled.flatten(start_dim=1)))  # (B, T)
        return self.out(self.linear_logit(dense, sparse) + logit)  # (B, T)
