"""MLR: a softmax gate over regions mixing per-region logistic regressions (piece-wise linear model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.models.inputs import DenseColumns, FeatureWeights, split_features
from dist_ctr.models.base import CTRModel
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse.arch import LINEAR_DIM, LINEAR_INIT_STD_SCALE

__all__ = ["MLR", "MLRConfig"]


@dataclass(frozen=True)
class MLRConfig:
    """DeepCTR-Torch's ``MLR`` arguments, with feature names for its column lists.

    ``region_feature_names=None`` means every feature; ``base_feature_names`` ``None`` or empty means the region
    features; ``bias_feature_names`` ``None`` or empty means no bias learner.
    """

    region_feature_names: Optional[tuple[str, ...]] = None
    base_feature_names: Optional[tuple[str, ...]] = None
    bias_feature_names: Optional[tuple[str, ...]] = None
    region_num: int = 4
    l2_reg_linear: float = 1e-5
    init_std: float = 1e-4
    # The base learners' weights ride in the region learners' rows when both read the same features: one lookup
    # per id, the same weights, init and arithmetic under an element-wise sparse optimizer (the compat facade turns
    # it on with one; see dist_ctr.models.config_blocks.LinearArgs).
    linear_in_embedding_tables: bool = False

    def __post_init__(self) -> None:
        if self.region_num <= 1:
            raise ValueError(f"MLR: region_num must be > 1, got {self.region_num}")


class _Linears(nn.Module):
    """``K`` independent linear learners (no bias) over some features: ``Tensor (B, K)``.

    Sparse weights are :class:`FeatureWeights` tables ``K * 4`` wide (distinct prefix, so distinct init per
    learner group), dense weights an ``nn.Linear`` with DeepCTR-Torch's normal(0, init_std) init. ``carry``
    (``(prefix, K')``) widens the rows by another group's ``K'`` learners, started as that group's own tables; their
    weights come back as the third output.
    """

    def __init__(self, schema: FeatureSchema, names: Sequence[str], k: int, prefix: str, init_std: float,
                 key: str, carry: Optional[tuple[str, int]] = None) -> None:
        super().__init__()
        sparse, dense = split_features(schema, names, "MLR", key)
        if not sparse and not dense:
            raise ValueError(f"MLR: {key} selects no feature")
        self.carried = carry[1] if carry is not None and sparse else 0
        self.sparse = FeatureWeights(schema, sparse, k + self.carried, prefix) if sparse else None
        if self.sparse is not None and carry is not None:
            ebc = self.sparse.arch.ebc
            assert ebc is not None, "MLR learners are pooled tables"
            ebc.column_tails = {c.name: (carry[0] + c.name[len(prefix):], LINEAR_DIM * carry[1],
                                         LINEAR_INIT_STD_SCALE) for c in ebc.embedding_bag_configs()}
        self.dense_cols = DenseColumns(schema, dense)
        self.dense = nn.Linear(self.dense_cols.width, k, bias=False) if dense else None
        if self.dense is not None:
            nn.init.normal_(self.dense.weight, mean=0.0, std=init_std)
        self.k = k

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the learners' outputs ``(B, K)``, the looked-up sparse weights ``(B, F, K)`` (for L2) and the
        carried group's weights ``(B, F, K')`` (``None`` unless ``carry``)."""
        out = dense.new_zeros(sparse.stride(), self.k)  # (B, K)
        w = self.sparse(sparse) if self.sparse is not None else None  # (B, F, K + K')
        carried = None
        if w is not None and self.carried:
            w, carried = w[..., : self.k], w[..., self.k :]  # (B, F, K), (B, F, K')
        if w is not None:
            out = out + w.sum(dim=1)  # (B, K)
        if self.dense is not None:
            out = out + self.dense(self.dense_cols(dense))  # (B, K)
        return out, w, carried


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@register_model("MLR", MLRConfig)
class MLR(CTRModel):
    """Mixed Logistic Regression / LS-PLM (Gai et al., "Learning Piece-wise Linear Models from Large Scale Data
    for Ad Click Prediction", 2017).

    ``p_t = sum_r softmax_r(u_r . x) * sigmoid(w_tr . x) [* sigmoid(v_t . x)]`` for binary tasks (the bias
    learner ``v`` only when bias features are given); a regression task mixes ``w_tr . x`` without the sigmoid.
    ``forward`` returns ``logit(p_t)`` (computed in log space) for binary tasks, so the sigmoid of prediction
    gives DeepCTR-Torch's output.

    There are no embeddings beyond linear weights: each learner group (region, base, bias) is one set of TorchRec
    tables ``K * 4`` wide (``mlr_region__*``, ``mlr_base__*``, ``mlr_bias__*``), so every region's weights start
    different (separate :class:`LinearArch` instances would share table names and hence identical init, and a
    symmetric mixture never separates). Multi-valued features use their combiner.

    Notation: ``B`` batch, ``R`` regions, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    schema_requirements: tuple[str, ...] = ()

    def __init__(self, schema: FeatureSchema, config: MLRConfig = MLRConfig()) -> None:
        super().__init__(schema)
        self.config = config
        all_names = [f.name for f in schema.features]
        region = list(config.region_feature_names) if config.region_feature_names is not None else all_names
        base = list(config.base_feature_names) if config.base_feature_names else region
        bias = list(config.bias_feature_names or ())
        R, T = config.region_num, self.num_tasks
        carry = config.linear_in_embedding_tables and split_features(schema, region, "MLR")[0] == \
            split_features(schema, base, "MLR")[0]
        self.region = _Linears(schema, region, R, "mlr_region__", config.init_std, "region_feature_names",
                               carry=("mlr_base__", R * T) if carry else None)
        base_sparse = [n for n in base if n not in set(schema.sparse_names)] if carry else base
        self.base = _Linears(schema, base_sparse, R * T, "mlr_base__", config.init_std, "base_feature_names") \
            if base_sparse else None
        self.bias = _Linears(schema, bias, T, "mlr_bias__", config.init_std,
                              "bias_feature_names") if bias else None
        self._carried: Optional[torch.Tensor] = None  # the base learners' weights from the region lookup
        for part in (self.region, self.base, self.bias):
            if part is not None and part.dense is not None:
                self.register_l2(config.l2_reg_linear, [part.dense.weight])
        types = schema.task_types or ["binary"] * T
        self.register_buffer("_binary", torch.tensor([t == "binary" for t in types][:T]), persistent=False)

    def _learners(self, part: _Linears, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        out, w, carried = part(dense, sparse)  # (B, K), (B, F, K), (B, F, K') | None
        if w is not None:
            self.add_embedding_l2(self.config.l2_reg_linear, w)
        if carried is not None:
            self._carried = carried
        return out

    def _base_learners(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """``(B, R * T)``: the base learners, their sparse weights carried by the region lookup or their own."""
        carried, self._carried = self._carried, None
        if carried is None:
            return self._learners(self.base, dense, sparse)  # type: ignore[arg-type]
        self.add_embedding_l2(self.config.l2_reg_linear, carried)
        out = carried.sum(dim=1)  # (B, R * T)
        if self.base is not None:  # the base learners' dense features
            out = out + self._learners(self.base, dense, sparse)
        return out

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        B, R, T = sparse.stride(), self.config.region_num, self.num_tasks
        log_gate = F.log_softmax(self._learners(self.region, dense, sparse), dim=-1).unsqueeze(1)  # (B, 1, R)
        base = self._base_learners(dense, sparse).view(B, T, R)  # (B, T, R)
        log_p = torch.logsumexp(log_gate + F.logsigmoid(base), dim=-1)  # (B, T)
        reg = (log_gate.exp() * base).sum(dim=-1)  # (B, T)
        if self.bias is not None:
            b = self._learners(self.bias, dense, sparse)  # (B, T)
            log_p = log_p + F.logsigmoid(b)
            reg = reg * torch.sigmoid(b)
        log_p = log_p.clamp(max=-1e-7)
        return torch.where(self._binary, log_p - _log1mexp(log_p), reg)  # (B, T)
