"""ONN (NFFM): field-aware embeddings, one per feature and partner field, multiplied per pair into a DNN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import pair_indices
from dist_ctr.models._fields import FieldModel, common_dim
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse import SparseArch

__all__ = ["ONN", "ONNConfig"]


@dataclass(frozen=True)
class ONNConfig:
    """DeepCTR-Torch's ``ONN`` arguments (feature columns as names; ``None`` = every feature)."""

    dnn_hidden_units: tuple[int, ...] = (128, 128)
    l2_reg_embedding: float = 1e-5
    l2_reg_linear: float = 1e-5
    l2_reg_dnn: float = 0.0
    dnn_dropout: float = 0.0
    init_std: float = 1e-4
    dnn_use_bn: bool = False
    dnn_activation: str = "relu"
    linear_feature_names: Optional[tuple[str, ...]] = None
    dnn_feature_names: Optional[tuple[str, ...]] = None


@register_model("ONN", ONNConfig)
class ONN(FieldModel):
    """Operation-aware Neural Network / NFFM (Yang et al., "Operation-aware Neural Networks for User Response
    Prediction", Neural Networks 2020), as DeepCTR-Torch.

    Feature ``i`` has one embedding ``e_i^(j)`` per partner field ``j != i``; pair ``i < j`` contributes
    ``e_i^(j) * e_j^(i)``, and ``logit = linear(x) + w^T DNN([pair products ; dense])``.

    The ``F (F - 1)`` field-aware tables live in ``F`` :class:`SparseArch` s (arch ``j`` embeds every feature but
    ``j`` for partner ``j``, tables ``onn_<j>__<embedding_name>``), so DMP shards them like any other table.

    Notation: ``B`` batch, ``F`` sparse features (at least 2), ``P = F (F - 1) / 2``, ``D`` embedding dim,
    ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: ONNConfig = ONNConfig()) -> None:
        super().__init__(schema)
        self.config = config
        if not config.dnn_hidden_units:
            raise ValueError("ONN needs non-empty dnn_hidden_units")
        self.build_fields("ONN", config.dnn_feature_names, config.linear_feature_names, config.l2_reg_linear,
                          min_sparse=2, build_embedding=False)
        names, Fn = self.sparse_names, self.num_fields
        D = common_dim(schema, names, "ONN")
        self.field_archs = nn.ModuleList(
            [SparseArch(schema, [n for n in names if n != partner], table_prefix=f"onn_{partner}__")
             for partner in names])
        # Archs' outputs concatenated: slot (j, i) holds e_i^(j) at j * (F - 1) + (i if i < j else i - 1).
        rows, cols = pair_indices(Fn)
        left = cols * (Fn - 1) + rows  # e_i^(j), i < j
        right = rows * (Fn - 1) + cols - 1  # e_j^(i), j > i
        self.register_buffer("_left", left, persistent=False)
        self.register_buffer("_right", right, persistent=False)
        self.dnn = DNN(Fn * (Fn - 1) // 2 * D + self.dense_cols.width, config.dnn_hidden_units,
                       config.dnn_activation, config.dnn_dropout, config.dnn_use_bn, config.init_std)
        self.dnn_linear = nn.Linear(self.dnn.output_dim, self.num_tasks, bias=False)
        self.register_l2(config.l2_reg_dnn, self.dnn.weights() + [self.dnn_linear.weight])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        field_aware = torch.cat([arch(sparse).pooled for arch in self.field_archs], dim=1)  # (B, F (F-1), D)
        self.add_embedding_l2(self.config.l2_reg_embedding, field_aware)
        pairs = field_aware.index_select(1, self._left) * field_aware.index_select(1, self._right)  # (B, P, D)
        x = torch.cat([pairs.flatten(start_dim=1), self.dense_cols(dense)], dim=1)  # (B, P D + n)
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(self.dnn(x)))  # (B, T)
