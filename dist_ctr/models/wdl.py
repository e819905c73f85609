"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016), plus ``DeepInputs``,
the DNN input block the DeepCTR-style models of this package share.

Notation: ``B`` batch, ``F`` pooled sparse features of the DNN, ``D`` embedding dim, ``N`` DNN input width
(dense values + flattened embeddings), ``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 4), DenseFeat("x")))
>>> m = materialize(WDL(s, WDLConfig(dnn_hidden_units=(8,))))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.ones(4, dtype=torch.int32))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN, PredictionLayer
from dist_ctr.models.base import CTRModel
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse import LinearArch, SparseArch, SparseOutput

__all__ = ["DeepInputs", "WDL", "WDLConfig", "check_feature_names"]


def check_feature_names(schema: FeatureSchema, names: Optional[Iterable[str]], what: str) -> list[str]:
    """Feature names of a config argument (``None`` = every feature of the schema), each checked to exist."""
    all_names = [f.name for f in schema.features]
    if names is None:
        return all_names
    names = list(names)
    unknown = [n for n in names if n not in set(all_names)]
    if unknown:
        raise ValueError(f"{what}: unknown feature(s) {unknown}; the schema has {all_names}")
    return names


class DeepInputs(nn.Module):
    """DeepCTR's ``dnn_feature_columns``: pooled embeddings of the sparse ones, values of the dense ones.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Iterable[str] | None): the DNN features (default: all).

    Attributes:
        sparse (SparseArch | None): ``None`` when no sparse feature is selected.
        num_fields (int): ``F``; ``embedding_dim`` (int | None): ``D`` when all fields agree, else ``None``.
        output_dim (int): ``N = n_dense_selected + sum_f D_f``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> (SparseOutput | None, Tensor (B, N))``; the flat
    tensor is the selected dense values followed by the pooled embeddings in feature order.
    """

    def __init__(self, schema: FeatureSchema, feature_names: Optional[Iterable[str]] = None) -> None:
        super().__init__()
        names = check_feature_names(schema, feature_names, "dnn_feature_names")
        sparse_set, dense_set = set(schema.sparse_names), set(schema.dense_names)
        sparse = [n for n in names if n in sparse_set]
        self.sparse: Optional[SparseArch] = SparseArch(schema, sparse) if sparse else None
        self.sparse_names = sparse
        cols: list[int] = []
        start = 0
        for f in schema.dense_features:
            if f.name in names and f.name in dense_set:
                cols.extend(range(start, start + f.dimension))
            start += f.dimension
        self.register_buffer("_dense_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self._all_dense = cols == list(range(schema.n_dense))
        self.dense_dim = len(cols)
        self.num_fields = self.sparse.num_pooled if self.sparse is not None else 0
        self.embedding_dim: Optional[int] = self.sparse.uniform_dim if self.sparse is not None else None
        self.output_dim = self.dense_dim + (sum(self.sparse.pooled_dims) if self.sparse is not None else 0)

    def require_equal_dims(self, model: str) -> None:
        """Raise a clear error when the sparse fields have different embedding dims (FM, CIN need one ``D``)."""
        if self.sparse is not None and self.embedding_dim is None:
            dims = dict(zip(self.sparse.pooled_names, self.sparse.pooled_dims))
            raise ValueError(f"{model} needs one embedding_dim for all sparse DNN features, got {dims}")

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> tuple[Optional[SparseOutput], torch.Tensor]:
        x = dense if self._all_dense else dense.index_select(1, self._dense_cols)  # (B, n_dense_selected)
        if self.sparse is None:
            return None, x
        out = self.sparse(sparse)
        flat = torch.cat([x, out.pooled_flat], dim=1) if self.dense_dim else out.pooled_flat  # (B, N)
        return out, flat


@dataclass(frozen=True)
class WDLConfig:
    """DeepCTR-Torch's ``WDL`` arguments (feature columns as names; ``None`` = all features)."""

    dnn_hidden_units: tuple[int, ...] = (256, 128)
    l2_reg_linear: float = 1e-5
    l2_reg_embedding: float = 1e-5
    l2_reg_dnn: float = 0.0
    init_std: float = 1e-4
    dnn_dropout: float = 0.0
    dnn_activation: str = "relu"
    dnn_use_bn: bool = False
    linear_feature_names: Optional[tuple[str, ...]] = None
    dnn_feature_names: Optional[tuple[str, ...]] = None


@register_model("WDL", WDLConfig)
class WDL(CTRModel):
    """Wide & Deep: ``logit = linear(x) + w^T DNN([dense, e_1, ..., e_F]) + b``.

    Args:
        schema (FeatureSchema): features and labels.
        config (WDLConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: WDLConfig = WDLConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self.linear = LinearArch(schema, check_feature_names(schema, cfg.linear_feature_names, "linear_feature_names"),
                                 init_std=self.embedding_init_std)
        self.inputs: Optional[DeepInputs] = None
        self.dnn: Optional[DNN] = None
        inputs = DeepInputs(schema, cfg.dnn_feature_names)
        if len(cfg.dnn_hidden_units) > 0 and inputs.output_dim > 0:
            self.inputs = inputs
            self.dnn = DNN(inputs.output_dim, cfg.dnn_hidden_units, cfg.dnn_activation, cfg.dnn_dropout,
                           cfg.dnn_use_bn, cfg.init_std)
            self.dnn_linear = nn.Linear(self.dnn.output_dim, self.num_tasks, bias=False)
            self.register_l2(cfg.l2_reg_dnn, self.dnn.weights() + [self.dnn_linear.weight])
        if self.linear.dense_weight is not None:
            self.register_l2(cfg.l2_reg_linear, self.linear.dense_weight.parameters())
        self.out = PredictionLayer("binary")

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        logit = self.linear(dense, sparse)  # (B, 1)
        if self.inputs is not None and self.dnn is not None:
            emb, x = self.inputs(dense, sparse)  # x: (B, N)
            if emb is not None:
                self.add_embedding_l2(self.config.l2_reg_embedding, emb.pooled_flat)
            logit = logit + self.dnn_linear(self.dnn(x))  # (B, T)
        return self.out(logit.expand(-1, self.num_tasks))  # (B, T)
