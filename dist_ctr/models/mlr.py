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

    def __post_init__(self) -> None:
        if self.region_num <= 1:
            raise ValueError(f"MLR: region_num must be > 1, got {self.region_num}")


class _Linears(nn.Module):
    """``K`` independent linear learners (no bias) over some features: ``Tensor (B, K)``.

    Sparse weights are :class:`FeatureWeights` tables ``K * 4`` wide (distinct prefix, so distinct init per
    learner group), dense weights an ``nn.Linear`` with DeepCTR-Torch's normal(0, init_std) init.
    """

    def __init__(self, schema: FeatureSchema, names: Sequence[str], k: int, prefix: str, init_std: float,
                 key: str) -> None:
        super().__init__()
        sparse, dense = split_features(schema, names, "MLR", key)
        if not sparse and not dense:
            raise ValueError(f"MLR: {key} selects no feature")
        self.sparse = FeatureWeights(schema, sparse, k, prefix) if sparse else None
        self.dense_cols = DenseColumns(schema, dense)
        self.dense = nn.Linear(self.dense_cols.width, k, bias=False) if dense else None
        if self.dense is not None:
            nn.init.normal_(self.dense.weight, mean=0.0, std=init_std)
        self.k = k

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the learners' outputs ``(B, K)`` and the looked-up sparse weights ``(B, F, K)`` (for L2)."""
        out = dense.new_zeros(sparse.stride(), self.k)  # (B, K)
        w = self.sparse(sparse) if self.sparse is not None else None  # (B, F, K)
        if w is not None:
            out = out + w.sum(dim=1)  # (B, K)
        if self.dense is not None:
            out = out + self.dense(self.dense_cols(dense))  # (B, K)
        return out, w


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
        self.region = _Linears(schema, region, R, "mlr_region__", config.init_std,
                               "region_feature_names")
        self.base = _Linears(schema, base, R * T, "mlr_base__", config.init_std, "base_feature_names")
        self.bias = _Linears(schema, bias, T, "mlr_bias__", config.init_std,
                              "bias_feature_names") if bias else None
        for part in (self.region, self.base, self.bias):
            if part is not None and part.dense is not None:
                self.register_l2(config.l2_reg_linear, [part.dense.weight])
        types = schema.task_types or ["binary"] * T
        self.register_buffer("_binary", torch.tensor([t == "binary" for t in types][:T]), persistent=False)

    def _learners(self, part: _Linears, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        out, w = part(dense, sparse)  # (B, K), (B, F, K)
        if w is not None:
            self.add_embedding_l2(self.config.l2_reg_linear, w)
        return out

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        B, R, T = sparse.stride(), self.config.region_num, self.num_tasks
        log_gate = F.log_softmax(self._learners(self.region, dense, sparse), dim=-1).unsqueeze(1)  # (B, 1, R)
        base = self._learners(self.base, dense, sparse).view(B, T, R)  # (B, T, R)
        log_p = torch.logsumexp(log_gate + F.logsigmoid(base), dim=-1)  # (B, T)
        reg = (log_gate.exp() * base).sum(dim=-1)  # (B, T)
        if self.bias is not None:
            b = self._learners(self.bias, dense, sparse)  # (B, T)
            log_p = log_p + F.logsigmoid(b)
            reg = reg * torch.sigmoid(b)
        log_p = log_p.clamp(max=-1e-7)
        return torch.where(self._binary, log_p - _log1mexp(log_p), reg)  # (B, T)
