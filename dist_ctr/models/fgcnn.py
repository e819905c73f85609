"""FGCNN: convolution-generated features join the raw embeddings in an IPNN-style DNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.convolution import FGCNNLayer
from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import InnerProductLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import DeepArgs, LinearArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse import SparseArch

__all__ = ["FGCNN", "FGCNNConfig"]


@positional_order("conv_kernel_width", "conv_filters", "new_maps", "pooling_width", "dnn_hidden_units",
                  "l2_reg_linear", "l2_reg_embedding", "l2_reg_dnn", "dnn_dropout", "dnn_activation", "init_std")
@dataclass(frozen=True)
class FGCNNConfig(LinearArgs, DeepArgs):
    """DeepCTR's ``FGCNN`` arguments (feature columns as names; ``None`` = every feature)."""

    conv_kernel_width: tuple[int, ...] = (7, 7, 7, 7)
    conv_filters: tuple[int, ...] = (14, 16, 18, 20)
    new_maps: tuple[int, ...] = (3, 3, 3, 3)
    pooling_width: tuple[int, ...] = (2, 2, 2, 2)
    dnn_hidden_units: tuple[int, ...] = (256, 128, 64)
    def __post_init__(self) -> None:
        if not (len(self.conv_kernel_width) == len(self.conv_filters) == len(self.new_maps)
                == len(self.pooling_width)):
            raise ValueError("FGCNN: conv_kernel_width, conv_filters, new_maps and pooling_width must have the "
                             "same length")


@register_model("FGCNN", FGCNNConfig)
class FGCNN(FieldModel):
    """Feature Generation by CNN (Liu et al., "Feature Generation by Convolutional Neural Network for
    Click-Through Rate Prediction", WWW 2019), as DeepCTR.

    A second embedding of the same features (tables ``fg__*``) feeds :class:`FGCNNLayer`; its new features join
    the raw embeddings, ``c = [e ; new]``, and ``logit = linear(x) + w^T DNN([flatten(c) ; <c_i, c_j>_{i<j}])``.
    Dense features reach only the linear part, as DeepCTR.

    Notation: ``B`` batch, ``F`` sparse features, ``N`` generated features, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: FGCNNConfig = FGCNNConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self.build_fields("FGCNN", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        Fn, D = self.num_fields, self.embedding_dim
        self.fg_embedding: Optional[SparseArch] = None
        self.fgcnn: Optional[FGCNNLayer] = None
        total = Fn
        if config.conv_filters:
            self.fg_embedding = SparseArch(schema, self.sparse_names, table_prefix="fg__")
            self.fgcnn = FGCNNLayer(Fn, D, config.conv_filters, config.conv_kernel_width, config.new_maps,
                                    config.pooling_width)
            total += self.fgcnn.new_feature_num
        self.inner = InnerProductLayer()
        self.dnn, self.dnn_linear = dnn_tower(self, total * D + total * (total - 1) // 2, config, use_bn=False,
                                              zero_bias=True)  # Keras Dense: zero biases (see DNN)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        combined = emb
        if self.fgcnn is not None and self.fg_embedding is not None:
            fg = self.fg_embedding(sparse).pooled  # (B, F, D)
            self.add_embedding_l2(self.config.l2_reg_embedding, fg)
            combined = torch.cat([emb, self.fgcnn(fg)], dim=1)  # (B, F + N, D)
        x = torch.cat([combined.flatten(start_dim=1), self.inner(combined).flatten(start_dim=1)], dim=1)
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(self.dnn(x)))  # (B, T)
