"""ONN (NFFM): field-aware embeddings, one per feature and partner field, multiplied per pair into a DNN."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.pairwise import pair_indices
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.inputs import common_dim
from dist_ctr.models.heads import dnn_tower
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import SparseArch

__all__ = ["ONN", "ONNConfig"]


@dataclass(frozen=True)
class ONNConfig(WideDeepArgs):
    """DeepCTR-Torch's ``ONN`` arguments (feature columns as names; ``None`` = every feature)."""

    dnn_hidden_units: tuple[int, ...] = (128, 128)


@register_model("ONN", ONNConfig)
class ONN(FieldModel):
    """Operation-aware Neural Network / NFFM (Yang et al., "Operation-aware Neural Networks for User Response
    Prediction", Neural Networks 2020), as DeepCTR-Torch.

    Feature ``i`` has one embedding ``e_i^(j)`` per partner field ``j != i``; pair ``i < j`` contributes
    ``e_i^(j) * e_j^(i)``, and ``logit = linear(x) + w^T DNN([pair products ; dense])``.

    The field-aware vectors of a feature are one wide row: the table ``onn__<embedding_name>`` holds, per id, the
    ``D``-vectors for every partner field in field order (``(F - 1) D`` wide; ``F D`` when several features read
    the table, so that they share each partner's vector as they share the table). One :class:`SparseArch` looks
    up all of them at once (``F`` tables instead of ``F (F - 1)``: one fused lookup, and FBGEMM's backward costs
    per table); DMP shards the wide tables like any other. A row-wise optimizer (``rowwise_adagrad``) keeps one
    state per wide row, i.e. per id across its partner fields.

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
        names, Fn, D = self.sparse_names, self.num_fields, common_dim(schema, self.sparse_names, "ONN")
        partners = _partner_fields(schema, names)
        wide = _with_table_dims(schema, {t: len(js) * D for t, js in partners.items()})
        self.field_aware = SparseArch(wide, names, table_prefix="onn__")
        # D-slot of e_i^(j) in the arch's (B, S, D) output: feature i's row, at partner j's place in it.
        slot: dict[tuple[int, int], int] = {}
        start = 0
        for i, n in enumerate(names):
            js = partners[schema.feature(n).embedding_name]  # type: ignore[union-attr]
            slot.update({(i, j): start + k for k, j in enumerate(js)})
            start += len(js)
        rows, cols = pair_indices(Fn)
        left = [slot[(i, j)] for i, j in zip(rows.tolist(), cols.tolist())]  # e_i^(j), i < j
        right = [slot[(j, i)] for i, j in zip(rows.tolist(), cols.tolist())]  # e_j^(i)
        self.register_buffer("_slots", torch.tensor(left + right, dtype=torch.long), persistent=False)
        self.dnn, self.dnn_linear = dnn_tower(self, Fn * (Fn - 1) // 2 * D + self.dense_cols.width, config)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        flat = self.field_aware(sparse).pooled_flat  # (B, S * D): every feature's wide row
        wide = flat.view(flat.shape[0], -1, self.embedding_dim)  # (B, S, D)
        used = wide[:, self._slots]  # (B, 2 P, D): e_i^(j) per pair, then e_j^(i); each vector in use once
        self.add_embedding_l2(self.config.l2_reg_embedding, used)
        P = self._slots.numel() // 2
        pairs = used[:, :P] * used[:, P:]  # (B, P, D)
        x = torch.cat([pairs.flatten(start_dim=1), self.dense_cols(dense)], dim=1)  # (B, P D + n)
        return self.out(self.linear_logit(dense, sparse) + self.dnn_linear(self.dnn(x)))  # (B, T)


def _partner_fields(schema: FeatureSchema, names: list[str]) -> dict[str, list[int]]:
    """Partner fields (indices into ``names``) with a vector in each table's row, in field order: all fields
    but the reader's own when one feature reads the table, all ``F`` when several do."""
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        readers.setdefault(schema.feature(n).embedding_name, []).append(i)  # type: ignore[union-attr]
    return {t: [j for j in range(len(names)) if not (len(r) == 1 and j == r[0])] for t, r in readers.items()}


def _with_table_dims(schema: FeatureSchema, dims: dict[str, int]) -> FeatureSchema:
    """The schema with every sparse feature of a table in ``dims`` re-declared at that table's width (same ids,
    vocabularies and combiners)."""
    feats = []
    for f in schema.features:
        if isinstance(f, VarLenSparseFeat) and f.sparsefeat.embedding_name in dims:
            f = dataclasses.replace(f, sparsefeat=dataclasses.replace(
                f.sparsefeat, embedding_dim=dims[f.sparsefeat.embedding_name]))
        elif isinstance(f, SparseFeat) and f.embedding_name in dims:
            f = dataclasses.replace(f, embedding_dim=dims[f.embedding_name])
        feats.append(f)
    return FeatureSchema(tuple(feats), schema.labels)
