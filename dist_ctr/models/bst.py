"""BST (Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in Alibaba", DLP-KDD 2019), with
DeepCTR's arguments and structure.

Notation: ``B`` batch, ``L`` history length, ``E`` width of one behaviour (target dims summed), ``h`` heads,
``N`` DNN input width, ``T`` tasks.

The history ``(B, L, E)`` goes through ``transformer_num`` :class:`~dist_ctr.layers.attention.Transformer` layers
(sinusoidal positional encoding, residual, feed-forward, layer norm, ``E / h`` per head); the result is pooled by
target attention (softmax over valid positions) and, with the dense values and the other pooled embeddings, feeds
the DNN: ``logit = w^T DNN([dense, pooled, att(q, Transformer(keys))]) + b``. Targets and histories are linked as
in :mod:`dist_ctr.models.din`.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("item", 10, 4),
...                    VarLenSparseFeat(SparseFeat("hist", 10, 4, embedding_name="item"), maxlen=3)))
>>> m = materialize(BST(s, BSTConfig(history_feature_list=("item",), att_head_num=2, dnn_hidden_units=(8,))))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["item", "hist"], torch.tensor([1, 2, 3, 4, 5]),
...                                           torch.tensor([1, 1, 3, 0], dtype=torch.int32))
>>> tuple(m.eval()(torch.zeros(2, 0), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.attention import Transformer
from dist_ctr.layers.core import DNN
from dist_ctr.layers.sequence import AttentionSequencePoolingLayer
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.base import CTRModel
from dist_ctr.models.inputs import HistoryInputs, default_history_targets
from dist_ctr.models.config_blocks import HistoryArgs, SequenceArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["BST", "BSTConfig"]


@positional_order("history_feature_list", "history_features", "transformer_num", "att_head_num", "use_bn",
                  "dnn_hidden_units", "dnn_activation", "att_hidden_units", "att_activation", "l2_reg_dnn",
                  "l2_reg_embedding", "dnn_dropout", "init_std")
@dataclass(frozen=True)
class BSTConfig(SequenceArgs, HistoryArgs):
    """DeepCTR's ``BST`` arguments; ``history_features`` optionally names each target's history;
    ``att_hidden_units`` / ``att_activation`` are the target attention's MLP (fixed to (64, 16) in DeepCTR)."""

    transformer_num: int = 1
    att_head_num: int = 8
    use_bn: bool = False
    att_hidden_units: tuple[int, ...] = (64, 16)
    att_activation: str = "sigmoid"


@register_model("BST", BSTConfig)
class BST(CTRModel):
    """Behaviour Sequence Transformer; see the module docstring.

    Args:
        schema (FeatureSchema): features and labels.
        config (BSTConfig): ``history_feature_list`` is required; ``att_head_num`` must divide ``E``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    schema_requirements: tuple[str, ...] = ("sequence",)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> BSTConfig:
        targets = default_history_targets(schema)
        E = sum(int(schema.feature(t).embedding_dim) for t in targets) or 1  # type: ignore[union-attr]
        heads = max(h for h in range(1, 9) if E % h == 0)
        return BSTConfig(history_feature_list=targets, att_head_num=heads)

    def __init__(self, schema: FeatureSchema, config: BSTConfig = BSTConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self.inputs = HistoryInputs(schema, cfg.history_feature_list, "BST", cfg.history_features)
        E = self.inputs.query_dim
        if cfg.att_head_num < 1 or E % cfg.att_head_num:
            raise ValueError(f"BST: att_head_num={cfg.att_head_num} must divide the behaviour width E={E} "
                             f"(the embedding dims of {list(cfg.history_feature_list)}, summed)")
        if cfg.transformer_num < 0:
            raise ValueError(f"BST: transformer_num must be >= 0, got {cfg.transformer_num}")
        self.transformers = nn.ModuleList(
            Transformer(E, E // cfg.att_head_num, cfg.att_head_num, cfg.dnn_dropout, use_positional_encoding=True,
                        use_res=True, use_feed_forward=True, use_layer_norm=True, blinding=False, output_type=None)
            for _ in range(cfg.transformer_num))
        self.attention = AttentionSequencePoolingLayer(cfg.att_hidden_units, cfg.att_activation,
                                                       weight_normalization=True, embedding_dim=E,
                                                       init_std=None)
        n_in = self.inputs.n_dense + self.inputs.pooled_dim + E
        self.dnn, self.dnn_linear = dnn_tower(self, n_in, cfg, use_bn=cfg.use_bn, zero_bias=True)  # Keras Dense
        self.out = TaskOutput(self.num_tasks)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, sparse)
        self.add_embedding_l2(self.config.l2_reg_embedding, x.pooled, x.keys)
        seq = x.keys  # (B, L, E)
        for tr in self.transformers:
            seq = tr(seq, seq, x.lengths, x.lengths)  # (B, L, E)
        hist = self.attention(x.query, seq, x.lengths).squeeze(1)  # (B, E)
        z = torch.cat([x.dense, x.pooled, hist], dim=1)  # (B, N)
        return self.out(self.dnn_linear(self.dnn(z)))  # (B, T)
