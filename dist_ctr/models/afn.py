"""AFN: logarithmic neurons learn cross features of adaptive order, then a DNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.field_attention import LogTransformLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import BatchNormArgs, DNNFeatureArgs, DNNOptions, EmbeddingArgs, LinearArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["AFN", "AFNConfig"]


@dataclass(frozen=True)
class AFNConfig(BatchNormArgs, LinearArgs, DNNFeatureArgs, DNNOptions, EmbeddingArgs):
    """DeepCTR-Torch's ``AFN`` arguments (feature columns as names; ``None`` = every feature).

    ``dnn_use_bn`` is an addition: DeepCTR-Torch always uses batch norm in AFN's DNN (the default here), which
    cannot train on a batch of one row.
    """

    ltl_hidden_size: int = 256
    afn_dnn_hidden_units: tuple[int, ...] = (256, 128)
    dnn_use_bn: bool = True


@register_model("AFN", AFNConfig)
class AFN(FieldModel):
    """Adaptive Factorization Network (Cheng et al., "Adaptive Factorization Network: Learning Adaptive-Order
    Feature Interactions", AAAI 2020).

    ``logit = linear(x) + w^T DNN(LogTransform(e)) + b``; neuron ``n`` of the logarithmic layer computes
    ``prod_f |e_f| ** w_fn`` per embedding dim. Dense features reach only the linear part, as DeepCTR-Torch.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``N`` logarithmic neurons, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: AFNConfig = AFNConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.afn_dnn_hidden_units:
            raise ValueError("AFN needs non-empty afn_dnn_hidden_units")
        self.build_fields("AFN", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear)
        D = self.embedding_dim
        self.ltl = LogTransformLayer(self.num_fields, D, config.ltl_hidden_size)
        self.afn_dnn, self.afn_dnn_linear = dnn_tower(self, D * config.ltl_hidden_size, config,
                                                      hidden_units=config.afn_dnn_hidden_units, bias=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        first, rest = self.afn_dnn.split_first()  # the tower's first Linear runs fused into the log layer
        logit = self.afn_dnn_linear(rest(self.ltl(emb, head=first)))  # (B, T)
        return self.out(self.linear_logit(dense, sparse) + logit)  # (B, T)
