"""``FieldModel``: the base of the field-interaction models (CCPM, PNN, NFM, AFM, AutoInt, ONN, FiBiNET, IFM,
DIFM, AFN, FGCNN, FwFM, FLEN), built from the shared input blocks (:mod:`dist_ctr.models.inputs`) and the output
bias (:mod:`dist_ctr.models.heads`).

Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.models.base import CTRModel
from dist_ctr.models.heads import TaskOutput
from dist_ctr.models.inputs import DenseColumns, carried_linear, common_dim, linear_part, require_sparse, split_features
from dist_ctr.sparse import LinearArch, SparseArch

__all__: list[str] = []  # private helpers; nothing re-exported by dist_ctr.models


class FieldModel(CTRModel):
    """Base of the field-interaction models: the embedding arch over the deep features, the linear arch, the
    selected dense columns and the per-task output, built from DeepCTR's arguments.

    A subclass sets ``self.config``, calls :meth:`build_fields` in ``__init__`` and, in ``forward``, :meth:`embed`
    before :meth:`linear_logit` (under ``linear_in_embedding_tables`` the embedding lookup also returns the linear
    weights, which ``linear_logit`` then adds).

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
        has_linear = linear_feature_names is not False
        names = None if linear_feature_names in (None, False) else list(linear_feature_names)  # type: ignore[arg-type]
        if names is not None:
            split_features(self.schema, names, model, "linear_feature_names")  # validates the names
        carry = carried_linear(self.schema, getattr(self, "config", None)) if has_linear else []
        self.embedding: Optional[SparseArch] = (SparseArch(self.schema, self.sparse_names, linear_features=carry)
                                                if build_embedding else None)
        self.dense_cols = DenseColumns(self.schema, self.dense_names)
        self.linear: Optional[LinearArch] = linear_part(self, names, l2_reg_linear, shared=self.embedding) \
            if has_linear else None
        self._carried: Optional[torch.Tensor] = None  # this forward's SparseOutput.linear (B, F_c, 4), from embed()
        self.out = TaskOutput(self.num_tasks)

    @property
    def num_fields(self) -> int:
        """``F``: deep sparse features."""
        return len(self.sparse_names)

    def embed(self, sparse: KeyedJaggedTensor, l2_reg_embedding: float) -> torch.Tensor:
        """Pooled embeddings ``Tensor (B, F, D)`` with their L2 recorded. Needs equal dims."""
        assert self.embedding is not None, "embed() needs build_fields(build_embedding=True)"
        out = self.embedding(sparse)
        self._carried = out.linear  # (B, F_c, 4) or None
        emb = out.pooled  # (B, F, D)
        assert emb is not None, "embed() needs equal embedding dims (build_fields(equal_dims=True))"
        self.add_embedding_l2(l2_reg_embedding, emb)
        return emb

    def linear_logit(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """DeepCTR's linear logit ``Tensor (B, 1)`` (zeros when the model has no linear part)."""
        if self.linear is None:
            return dense.new_zeros(sparse.stride(), 1)
        carried, self._carried = self._carried, None
        return self.linear(dense, sparse, carried)
