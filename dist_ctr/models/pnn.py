"""PNN: a DNN over the embeddings and their inner and/or outer products."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import InnerProductLayer, OutterProductLayer
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import DeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["PNN", "PNNConfig"]


@dataclass(frozen=True)
class PNNConfig(DeepArgs):
    """DeepCTR-Torch's ``PNN`` arguments (feature columns as names; ``None`` = every feature). PNN has no linear
    part, so no ``linear_feature_names``."""

    dnn_hidden_units: tuple[int, ...] = (128, 128)
    use_inner: bool = True
    use_outter: bool = False
    kernel_type: str = "mat"
    def __post_init__(self) -> None:
        if self.kernel_type not in ("mat", "vec", "num"):
            raise ValueError(f"PNN: kernel_type must be 'mat', 'vec' or 'num', got {self.kernel_type!r}")


@register_model("PNN", PNNConfig)
class PNN(FieldModel):
    """Product-based Neural Network (Qu et al., "Product-based Neural Networks for User Response Prediction",
    ICDM 2016): IPNN (``use_inner``), OPNN (``use_outter`` with kernel ``mat`` / ``vec`` / ``num``) or both.

    ``logit = w^T DNN([flatten(e) ; <e_i, e_j>_{i<j} ; outer_{i<j} ; dense])``.

    Notation: ``B`` batch, ``F`` sparse features, ``P = F (F - 1) / 2``, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: PNNConfig = PNNConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.dnn_hidden_units:
            raise ValueError("PNN needs non-empty dnn_hidden_units")
        self.build_fields("PNN", config.dnn_feature_names, False, min_sparse=2 if config.use_outter else 1)
        Fn, D = self.num_fields, self.embedding_dim
        P = Fn * (Fn - 1) // 2
        self.inner = InnerProductLayer() if config.use_inner else None
        self.outer = OutterProductLayer(Fn, D, config.kernel_type) if config.use_outter else None
        width = Fn * D + P * (int(config.use_inner) + int(config.use_outter)) + self.dense_cols.width
        self.dnn, self.dnn_linear = dnn_tower(self, width, config, use_bn=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        parts = [emb.flatten(start_dim=1)]  # (B, F * D)
        if self.inner is not None:
            parts.append(self.inner(emb).flatten(start_dim=1))  # (B, P)
        if self.outer is not None:
            parts.append(self.outer(emb))  # (B, P)
        parts.append(self.dense_cols(dense))  # (B, n)
        return self.out(self.dnn_linear(self.dnn(torch.cat(parts, dim=1))))  # (B, T)
