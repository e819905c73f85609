"""Plumbing shared by the field-interaction models (CCPM, PNN, MLR, NFM, AFM, AutoInt, ONN, FiBiNET, IFM, DIFM,
AFN, FGCNN, FwFM, FLEN): feature selection with clear errors, equal-dim checks, dense column selection,
per-feature linear weights on TorchRec tables, and the per-task output bias.

Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``K`` outputs per feature, ``T`` tasks.

>>> from dist_ctr.schema import FeatureSchema, SparseFeat, DenseFeat
>>> s = FeatureSchema((SparseFeat("a", 10, 4), DenseFeat("x"), SparseFeat("b", 10, 4)))
>>> split_features(s, None, "NFM")
(['a', 'b'], ['x'])
>>> common_dim(s, ["a", "b"], "NFM")
4
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.models.base import CTRModel
from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import LinearArch, SparseArch
from dist_ctr.sparse.arch import LINEAR_DIM, mark_linear_tables

__all__: list[str] = []  # private helpers; nothing re-exported by dist_ctr.models


def split_features(schema: FeatureSchema, names: Optional[Sequence[str]], model: str,
                   key: str = "dnn_feature_names") -> tuple[list[str], list[str]]:
    """Sparse and dense feature names among ``names`` (default: every feature), in schema order.

    Raises:
        ValueError: a name is not a feature of the schema (the message names the model, the config key and it).
    """
    known = {f.name for f in schema.features}
    if names is not None:
        for n in names:
            if n not in known:
                raise ValueError(f"{model}: {key} names {n!r}, which is not a feature of the schema "
                                 f"(features: {[f.name for f in schema.features]})")
    chosen = set(names) if names is not None else known
    sparse = [n for n in schema.sparse_names if n in chosen]
    dense = [n for n in schema.dense_names if n in chosen]
    return sparse, dense


def require_sparse(sparse: Sequence[str], model: str, minimum: int = 1) -> None:
    """Raise a clear error when a model gets fewer sparse features than it needs."""
    if len(sparse) < minimum:
        what = "any sparse feature" if minimum == 1 else f"at least {minimum} sparse features (to form pairs)"
        raise ValueError(f"{model} needs {what}; got {list(sparse)}")


def common_dim(schema: FeatureSchema, sparse: Sequence[str], model: str) -> int:
    """The one ``embedding_dim`` all ``sparse`` features share; the error names the first feature that differs."""
    require_sparse(sparse, model)
    dims = {n: int(schema.feature(n).embedding_dim) for n in sparse}  # type: ignore[union-attr]
    if len(set(dims.values())) > 1:
        odd = next(n for n in sparse if dims[n] != dims[sparse[0]])
        raise ValueError(f"{model} needs one embedding_dim for all its sparse features; feature {odd!r} differs "
                         f"(embedding_dim per feature: {dims})")
    return dims[sparse[0]]


class DenseColumns(nn.Module):
    """Selects the columns of chosen dense features from the schema's ``(B, n_dense)`` tensor.

    Call: ``forward(dense: Tensor (B, n_dense)) -> Tensor (B, width)``.
    """

    def __init__(self, schema: FeatureSchema, dense_names: Sequence[str]) -> None:
        super().__init__()
        cols: list[int] = []
        start = 0
        for f in schema.dense_features:
            if f.name in set(dense_names):
                cols.extend(range(start, start + f.dimension))
            start += f.dimension
        self.width = len(cols)
        self._all = cols == list(range(schema.n_dense))
        self.register_buffer("_cols", torch.tensor(cols, dtype=torch.long), persistent=False)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense if self._all else dense.index_select(1, self._cols)  # (B, width)


def _widened(schema: FeatureSchema, width: int) -> FeatureSchema:
    """The schema with every sparse feature re-declared at ``embedding_dim = width`` (same ids, tables,
    combiners; all of them, so that features sharing a table still agree)."""
    feats = []
    for f in schema.features:
        if isinstance(f, VarLenSparseFeat):
            f = dataclasses.replace(f, sparsefeat=dataclasses.replace(f.sparsefeat, embedding_dim=width))
        elif isinstance(f, SparseFeat):
            f = dataclasses.replace(f, embedding_dim=width)
        feats.append(f)
    return FeatureSchema(tuple(feats), schema.labels)


class FeatureWeights(nn.Module):
    """Per-feature linear weights ``w_f[id_f]`` with ``K`` outputs each, on TorchRec tables.

    DeepCTR's dim-1 linear embedding, kept in the schema's order per feature (IFM / DIFM re-weight each feature's
    linear term; MLR needs ``K`` independent linear learners). Like :class:`~dist_ctr.sparse.LinearArch`, each
    scalar is stored as ``LINEAR_DIM`` = 4 values that are averaged (FBGEMM needs widths divisible by 4; the mean
    trains like a dim-1 weight under Adagrad / Adam, and starts from ``N(0, init_std ** 2)``); the tables
    are ``K * 4`` wide and named ``table_prefix + embedding_name``, so distinct prefixes give distinct (and
    distinctly initialised) tables.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Sequence[str]): sparse features (non-empty).
        num_outputs (int): ``K``.
        table_prefix (str): TorchRec table-name prefix, unique within the model.

    Call: ``forward(features: KeyedJaggedTensor) -> Tensor (B, F, K)``.
    """

    def __init__(self, schema: FeatureSchema, feature_names: Sequence[str], num_outputs: int = 1,
                 table_prefix: str = "linear__") -> None:
        super().__init__()
        names = list(feature_names)
        self.num_features = len(names)
        self.num_outputs = int(num_outputs)
        self.arch = SparseArch(_widened(schema, LINEAR_DIM * self.num_outputs), names, table_prefix=table_prefix)
        mark_linear_tables(self.arch)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        flat = self.arch(features).pooled_flat  # (B, F * K * 4)
        return flat.view(-1, self.num_features, self.num_outputs, LINEAR_DIM).mean(dim=-1)  # (B, F, K)


class TaskOutput(nn.Module):
    """DeepCTR's ``PredictionLayer`` for ``T`` tasks: broadcasts ``(B, 1)`` or ``(B, T)`` logits to ``(B, T)``
    and adds one learnt bias per task (logits; the sigmoid belongs to prediction).

    Call: ``forward(x: Tensor (B, 1) | (B, T)) -> Tensor (B, T)``.
    """

    def __init__(self, num_tasks: int, use_bias: bool = True) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.bias = nn.Parameter(torch.zeros(num_tasks)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(x.shape[0], self.num_tasks)  # (B, T)
        return x + self.bias if self.bias is not None else x


class FieldModel(CTRModel):
    """Base of the field-interaction models: the embedding arch over the deep features, the linear arch, the
    selected dense columns and the per-task output, built from DeepCTR's arguments.

    A subclass calls :meth:`build_fields` in ``__init__`` and :meth:`embed` in ``forward``.

    Attributes (after ``build_fields``):
        sparse_names (list[str]): deep sparse features ``F``, schema order.
        dense_names (list[str]): deep dense features.
        embedding_dim (int | None): the common ``D`` (``None`` when the model allows unequal dims).
        embedding (SparseArch): pooled embeddings of ``sparse_names``.
        dense_cols (DenseColumns): their dense values ``(B, n)``.
        linear (LinearArch | None): DeepCTR's linear part over ``linear_feature_names``.
        out (TaskOutput): ``(B, 1) | (B, T) -> (B, T)`` plus a bias per task.
    """

    schema_requirements: tuple[str, ...] = ("sparse",)

    def build_fields(self, model: str, dnn_feature_names: Optional[Sequence[str]],
                     linear_feature_names: Optional[Sequence[str]] | bool = None, l2_reg_linear: float = 0.0,
                     min_sparse: int = 1, equal_dims: bool = True, build_embedding: bool = True) -> None:
        """Build the shared parts. ``linear_feature_names=False`` builds no linear part (PNN);
        ``build_embedding=False`` no shared embedding arch (ONN embeds per field itself)."""
        self.sparse_names, self.dense_names = split_features(self.schema, dnn_feature_names, model)
        require_sparse(self.sparse_names, model, min_sparse)
        self.embedding_dim = common_dim(self.schema, self.sparse_names, model) if equal_dims else None
        self.embedding: Optional[SparseArch] = SparseArch(self.schema, self.sparse_names) if build_embedding else None
        self.dense_cols = DenseColumns(self.schema, self.dense_names)
        self.linear: Optional[LinearArch] = None
        if linear_feature_names is not False:
            names = None if linear_feature_names is None else list(linear_feature_names)  # type: ignore[arg-type]
            if names is not None:
                split_features(self.schema, names, model, "linear_feature_names")  # validates the names
            self.linear = LinearArch(self.schema, names, init_std=self.embedding_init_std)
            if self.linear.dense_weight is not None:
                self.register_l2(l2_reg_linear, self.linear.dense_weight.parameters())
        self.out = TaskOutput(self.num_tasks)

    @property
    def num_fields(self) -> int:
        """``F``: deep sparse features."""
        return len(self.sparse_names)

    def embed(self, sparse: KeyedJaggedTensor, l2_reg_embedding: float) -> torch.Tensor:
        """Pooled embeddings ``Tensor (B, F, D)`` with their L2 recorded. Needs equal dims."""
        assert self.embedding is not None, "embed() needs build_fields(build_embedding=True)"
        emb = self.embedding(sparse).pooled  # (B, F, D)
        assert emb is not None, "embed() needs equal embedding dims (build_fields(equal_dims=True))"
        self.add_embedding_l2(l2_reg_embedding, emb)
        return emb

    def linear_logit(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """DeepCTR's linear logit ``Tensor (B, 1)`` (zeros when the model has no linear part)."""
        if self.linear is None:
            return dense.new_zeros(sparse.stride(), 1)
        return self.linear(dense, sparse)
