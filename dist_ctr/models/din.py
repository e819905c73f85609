"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

Notation: ``B`` batch, ``L`` history length (``maxlen``), ``E`` width of one behaviour (the target features'
embedding dims, summed), ``N`` DNN input width, ``T`` tasks.

The history inputs (:class:`~dist_ctr.models.inputs.HistoryInputs`) are shared with DIEN, BST and DSIN.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("item", 10, 4),
...                    VarLenSparseFeat(SparseFeat("hist", 10, 4, embedding_name="item"), maxlen=3)))
>>> m = materialize(DIN(s, DINConfig(history_feature_list=("item",), dnn_hidden_units=(8,)))).eval()
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["item", "hist"], torch.tensor([1, 2, 3, 4, 5]),
...                                           torch.tensor([1, 1, 3, 0], dtype=torch.int32))
>>> tuple(m(torch.zeros(2, 0), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.sequence import AttentionSequencePoolingLayer
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.base import CTRModel
from dist_ctr.models.inputs import HistoryInputs, default_history_targets
from dist_ctr.models.config_blocks import BatchNormArgs, HistoryArgs, SequenceArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema

__all__ = ["DIN", "DINConfig"]


@dataclass(frozen=True)
class DINConfig(BatchNormArgs, SequenceArgs, HistoryArgs):
    """DeepCTR-Torch's ``DIN`` arguments; ``history_features`` optionally names each target's history."""

    att_hidden_size: tuple[int, ...] = (64, 16)
    att_activation: str = "Dice"
    att_weight_normalization: bool = False


@register_model("DIN", DINConfig)
class DIN(CTRModel):
    """``logit = w^T DNN([dense, pooled, att(q, keys)]) + b``: the history pooled by target attention
    (:class:`~dist_ctr.layers.sequence.AttentionSequencePoolingLayer`, raw scores by default as in the paper).

    Args:
        schema (FeatureSchema): features and labels.
        config (DINConfig): see the dataclass; ``history_feature_list`` is required.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    schema_requirements: tuple[str, ...] = ("sequence",)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> DINConfig:
        return DINConfig(history_feature_list=default_history_targets(schema))

    def __init__(self, schema: FeatureSchema, config: DINConfig = DINConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self.inputs = HistoryInputs(schema, cfg.history_feature_list, "DIN", cfg.history_features)
        E = self.inputs.query_dim
        self.attention = AttentionSequencePoolingLayer(cfg.att_hidden_size, cfg.att_activation,
                                                       cfg.att_weight_normalization, embedding_dim=E,
                                                       init_std=None)
        n_in = self.inputs.n_dense + self.inputs.pooled_dim + E
        self.dnn, self.dnn_linear = dnn_tower(self, n_in, cfg)
        self.out = TaskOutput(self.num_tasks)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, sparse)
        self.add_embedding_l2(self.config.l2_reg_embedding, x.pooled, x.keys)
        hist = self.attention(x.query, x.keys, x.lengths).squeeze(1)  # (B, E)
        z = torch.cat([x.dense, x.pooled, hist], dim=1)  # (B, N)
        return self.out(self.dnn_linear(self.dnn(z)))  # (B, T)
