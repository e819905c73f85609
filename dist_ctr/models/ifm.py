"""IFM and DIFM: factorization machines whose feature terms are re-weighted per input by a learnt factor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.field_attention import InteractingLayer
from dist_ctr.layers.interaction import FM
from dist_ctr.models._fields import FieldModel
from dist_ctr.models.inputs import FeatureWeights, linear_part, split_features
from dist_ctr.models.heads import dnn_tower, logit_layer, make_dnn
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse import SparseArch

__all__ = ["DIFM", "DIFMConfig", "IFM", "IFMConfig"]


@dataclass(frozen=True)
class IFMConfig(WideDeepArgs):
    """DeepCTR-Torch's ``IFM`` arguments (feature columns as names; ``None`` = every feature)."""


@dataclass(frozen=True)
class DIFMConfig(IFMConfig):
    """DeepCTR-Torch's ``DIFM`` arguments. ``att_embedding_size`` is accepted and unused, as in DeepCTR-Torch
    (each head has ``D / att_head_num`` dims)."""

    att_embedding_size: int = 8
    att_head_num: int = 4
    att_res: bool = True


class _InputAwareFM(FieldModel):
    """Shared part of IFM / DIFM: ``logit = sum_f m_f w_f[id_f] + w_dense . x + FM(m * e)`` for an input-aware
    factor ``m (B, F)`` given by :meth:`factor`. The refined linear weights are the deep sparse features' own
    dim-1 tables; ``linear_feature_names`` may add dense features and must not name other sparse ones. Under
    ``linear_in_embedding_tables`` they ride in the embedding rows when every deep sparse feature can carry its
    weight there (pooled tables, fields in table order; see :class:`dist_ctr.sparse.SparseArch`)."""

    def _build(self, name: str, config: IFMConfig) -> None:
        if not config.dnn_hidden_units:
            raise ValueError(f"{name} needs non-empty dnn_hidden_units")
        self.build_fields(name, config.dnn_feature_names, False)
        lin_sparse, lin_dense = split_features(self.schema, config.linear_feature_names, name,
                                              "linear_feature_names")
        extra = sorted(set(lin_sparse) - set(self.sparse_names))
        if extra:
            raise ValueError(f"{name}: linear sparse feature(s) {extra} are not deep sparse features; the refined "
                             "linear part re-weights the deep sparse features only")
        if config.linear_in_embedding_tables:
            arch = SparseArch(self.schema, self.sparse_names, linear_features=self.sparse_names)
            if arch.linear_names == self.sparse_names:
                self.embedding = arch
        carried = self.embedding is not None and bool(self.embedding.linear_names)
        self.linear_weights = None if carried else FeatureWeights(self.schema, self.sparse_names, 1, "linear__")
        self.linear = linear_part(self, lin_dense, config.l2_reg_linear)
        self.fm = FM()

    def factor(self, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Abstract hook: per-field input-aware factors ``(B, F)`` (IFM: FEN, DIFM: dual FEN)."""
        raise NotImplementedError(f"{type(self).__name__} must implement factor")

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embed(sparse, self.config.l2_reg_embedding)  # (B, F, D)
        m = self.factor(emb)  # (B, F)
        if self.linear_weights is None:  # carried in the embedding rows: (B, F, 4) -> their means
            w, self._carried = self._carried.mean(dim=-1), None  # type: ignore[union-attr]
        else:
            w = self.linear_weights(sparse).squeeze(-1)  # (B, F)
        self.add_embedding_l2(self.config.l2_reg_linear, w)
        logit = (w * m).sum(dim=1, keepdim=True) + self.linear(dense, sparse)  # (B, 1)
        logit = logit + self.fm(emb * m.unsqueeze(-1))  # (B, 1)
        return self.out(logit)  # (B, T)


@register_model("IFM", IFMConfig)
class IFM(_InputAwareFM):
    """Input-aware Factorization Machine (Yu et al., "An Input-aware Factorization Machine for Sparse Prediction",
    IJCAI 2019).

    ``m = F * softmax(P DNN(flatten(e)))``; FM and linear terms of feature ``f`` are scaled by ``m_f``. The
    ``T`` task outputs share this scalar and differ by their bias.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: IFMConfig = IFMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self._build("IFM", config)
        self.factor_estimating_net, self.transform_weight_matrix_P = dnn_tower(
            self, self.num_fields * self.embedding_dim, config, out_features=self.num_fields)

    def factor(self, emb: torch.Tensor) -> torch.Tensor:
        h = self.factor_estimating_net(emb.flatten(start_dim=1))  # (B, H)
        return self.num_fields * torch.softmax(self.transform_weight_matrix_P(h), dim=1)  # (B, F)


@register_model("DIFM", DIFMConfig)
class DIFM(_InputAwareFM):
    """Dual Input-aware Factorization Machine (Lu et al., "A Dual Input-aware Factorization Machine for CTR
    Prediction", IJCAI 2020).

    ``m = P_vec flatten(Interacting(e)) + P_bit DNN(flatten(e))`` (vector-wise: multi-head self-attention with
    scaling and residual; bit-wise: a DNN); FM and linear terms of feature ``f`` are scaled by ``m_f``.

    Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim (a multiple of ``att_head_num``), ``T`` tasks.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: DIFMConfig = DIFMConfig()) -> None:
        super().__init__(schema)
        self.config = config
        self._build("DIFM", config)
        Fn, D = self.num_fields, self.embedding_dim
        if D % config.att_head_num != 0:
            raise ValueError(f"DIFM: embedding_dim {D} of feature {self.sparse_names[0]!r} is not a multiple of "
                             f"att_head_num {config.att_head_num}; pass a smaller att_head_num")
        self.vector_wise_net = InteractingLayer(D, config.att_head_num, config.att_res, scaling=True)
        self.bit_wise_net = make_dnn(Fn * D, config)
        self.transform_matrix_P_vec = nn.Linear(Fn * D, Fn, bias=False)
        self.transform_matrix_P_bit = logit_layer(self, self.bit_wise_net.output_dim, config.l2_reg_dnn,
                                                  self.bit_wise_net.weights() + [self.transform_matrix_P_vec.weight],
                                                  out_features=Fn)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> DIFMConfig:
        """Defaults with ``att_head_num`` lowered to the largest of 8, 4, 2, 1 dividing the schema's dim."""
        dims = {f.embedding_dim for f in schema.sparse_features}
        d = dims.pop() if len(dims) == 1 else 8
        return DIFMConfig(att_head_num=next(h for h in (8, 4, 2, 1) if d % h == 0))

    def factor(self, emb: torch.Tensor) -> torch.Tensor:
        m_vec = self.transform_matrix_P_vec(self.vector_wise_net(emb).flatten(start_dim=1))  # (B, F)
        m_bit = self.transform_matrix_P_bit(self.bit_wise_net(emb.flatten(start_dim=1)))  # (B, F)
        return m_vec + m_bit
