"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018), and the history inputs
that every behaviour-sequence model here (DIN, DIEN, BST, DSIN) shares.

Notation: ``B`` batch, ``L`` history length (``maxlen``), ``E`` width of one behaviour (the target features'
embedding dims, summed), ``N`` DNN input width, ``T`` tasks.

**How a target finds its history.** The config names the target features (``history_feature_list``, DeepCTR's
argument, e.g. ``("item_id", "cate_id")``). The history of a target is the ``VarLenSparseFeat`` that reads the same
embedding table (same ``embedding_name``): ``SparseFeat("item_id", V, D)`` and
``VarLenSparseFeat(SparseFeat("hist_item_id", V, D, embedding_name="item_id"), maxlen=L)``. No name prefix is
looked at; no or several candidates is an error naming the target, and ``history_features`` (target -> history)
names them explicitly. History features become TorchRec ``EmbeddingCollection`` sequences ``(B, L, D)``; all other
sparse features are pooled as usual and, with the dense values, feed the DNN.

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
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.sequence import AttentionSequencePoolingLayer
from dist_ctr.models._fields import TaskOutput
from dist_ctr.models.base import CTRModel
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import SparseArch

__all__ = ["DIN", "DINConfig", "HistoryInputs", "SequenceBatch", "default_history_targets", "find_history"]


def find_history(schema: FeatureSchema, target: str, model: str, explicit: Optional[Mapping[str, str]] = None,
                 exclude: Iterable[str] = ()) -> str:
    """The history feature of ``target``: ``explicit[target]`` when given, else the one ``VarLenSparseFeat`` on
    the target's embedding table (features in ``exclude`` are not candidates).

    Raises:
        ValueError: the target is not a single-valued sparse feature, the history does not share its table, or
            there is no or more than one candidate (the message names the model, the target and the candidates).
    """
    names = [f.name for f in schema.features]
    if target not in names:
        raise ValueError(f"{model}: target feature {target!r} (history_feature_list) is not in the schema "
                         f"(features: {names})")
    tf = schema.feature(target)
    if not isinstance(tf, SparseFeat):
        raise ValueError(f"{model}: target feature {target!r} must be a single-valued SparseFeat, got "
                         f"{type(tf).__name__}")
    if explicit is not None and target in explicit:
        h = explicit[target]
        if h not in names:
            raise ValueError(f"{model}: history_features[{target!r}] = {h!r} is not a feature of the schema")
        hf = schema.feature(h)
        if not isinstance(hf, VarLenSparseFeat):
            raise ValueError(f"{model}: history feature {h!r} of target {target!r} must be a VarLenSparseFeat")
        if hf.embedding_name != tf.embedding_name:
            raise ValueError(f"{model}: history feature {h!r} reads table {hf.embedding_name!r} but its target "
                             f"{target!r} reads {tf.embedding_name!r}; they must share one table (embedding_name)")
        return h
    skip = set(exclude)
    cands = [f.name for f in schema.varlen_features
             if f.embedding_name == tf.embedding_name and f.name not in skip]
    if len(cands) != 1:
        what = "no VarLenSparseFeat" if not cands else f"several VarLenSparseFeats {cands}"
        raise ValueError(f"{model}: target feature {target!r} (table {tf.embedding_name!r}) has {what} on its "
                         f"table to serve as its history; name it with history_features={{{target!r}: ...}}")
    return cands[0]


def default_history_targets(schema: FeatureSchema) -> tuple[str, ...]:
    """For examples and the registry-wide tests: the first single-valued feature (schema order) whose table is
    read by exactly one ``VarLenSparseFeat``, as a one-element ``history_feature_list`` (empty when none)."""
    for f in schema.single_sparse:
        if sum(v.embedding_name == f.embedding_name for v in schema.varlen_features) == 1:
            return (f.name,)
    return ()


class SequenceBatch(NamedTuple):
    """What :class:`HistoryInputs` returns.

    Attributes:
        dense (Tensor): ``(B, n_dense)`` dense values.
        pooled (Tensor): ``(B, P)`` pooled embeddings of the other sparse features (targets included).
        query (Tensor): ``(B, 1, E)`` the target features' embeddings, concatenated.
        keys (Tensor): ``(B, L, E)`` the history features' embeddings, concatenated; zero at padded positions.
        lengths (Tensor): ``(B,)`` true history lengths (of the first history feature).
        extra (dict[str, Tensor]): other requested sequences ``(B, L_x, D)`` (e.g. DIEN's negatives).
    """

    dense: torch.Tensor
    pooled: torch.Tensor
    query: torch.Tensor
    keys: torch.Tensor
    lengths: torch.Tensor
    extra: dict[str, torch.Tensor]


class HistoryInputs(nn.Module):
    """The inputs of a behaviour-sequence model: targets, their histories, the other features.

    Args:
        schema (FeatureSchema): features.
        targets (Sequence[str]): target features (``history_feature_list``), non-empty.
        model (str): model name for error messages.
        history_features (Mapping[str, str] | None): explicit target -> history links.
        extra_sequences (Sequence[str]): more var-len features kept as sequences and excluded from the DNN input
            and from the history search (DIEN's negative sequences).

    Attributes:
        histories (list[str]): the history feature of each target, in target order.
        maxlen (int): ``L``; query_dim (int): ``E``; pooled_dim (int): ``P``; n_dense (int).

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> SequenceBatch``.
    """

    def __init__(self, schema: FeatureSchema, targets: Sequence[str], model: str,
                 history_features: Optional[Mapping[str, str]] = None, extra_sequences: Sequence[str] = ()) -> None:
        super().__init__()
        targets = list(targets)
        if not targets:
            raise ValueError(f"{model} needs history_feature_list: the target features whose histories it attends "
                             f"over (e.g. ('item_id',)); the schema's features are {[f.name for f in schema.features]}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"{model}: history_feature_list has duplicates: {targets}")
        if history_features is not None:
            unknown = sorted(set(history_features) - set(targets))
            if unknown:
                raise ValueError(f"{model}: history_features names target(s) {unknown} that are not in "
                                 f"history_feature_list {targets}")
        extra = list(extra_sequences)
        self.histories = [find_history(schema, t, model, history_features, exclude=extra) for t in targets]
        if len(set(self.histories)) != len(self.histories):
            raise ValueError(f"{model}: two targets share one history feature: {dict(zip(targets, self.histories))}")
        maxlens = {h: schema.feature(h).maxlen for h in self.histories}  # type: ignore[union-attr]
        if len(set(maxlens.values())) != 1:
            raise ValueError(f"{model}: history features must have one maxlen, got {maxlens}")
        self.targets = targets
        self.extra_names = extra
        self.maxlen = next(iter(maxlens.values()))
        seq_set = set(self.histories) | set(extra)
        pooled = [n for n in schema.sparse_names if n not in seq_set]
        self.sparse = SparseArch(schema, pooled, sequence_features=self.histories + extra)
        dims = dict(zip(self.sparse.pooled_names, self.sparse.pooled_dims))
        offsets, start = {}, 0
        for n in self.sparse.pooled_names:
            offsets[n] = start
            start += dims[n]
        cols = [i for t in targets for i in range(offsets[t], offsets[t] + dims[t])]
        self.register_buffer("_target_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self.query_dim = len(cols)
        self.pooled_dim = start
        self.n_dense = schema.n_dense

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> SequenceBatch:
        out = self.sparse(sparse)
        B = dense.shape[0]
        query = out.pooled_flat.index_select(1, self._target_cols).view(B, 1, self.query_dim)  # (B, 1, E)
        seqs = [out.sequences[h] for h in self.histories]
        keys = torch.cat(seqs, dim=-1) if len(seqs) > 1 else seqs[0]  # (B, L, E)
        lengths = out.seq_lengths[self.histories[0]].long()  # (B,)
        extra = {n: out.sequences[n] for n in self.extra_names}
        return SequenceBatch(dense, out.pooled_flat, query, keys, lengths, extra)


@dataclass(frozen=True)
class DINConfig:
    """DeepCTR-Torch's ``DIN`` arguments; ``history_features`` optionally names each target's history."""

    history_feature_list: tuple[str, ...] = ()
    history_features: Optional[Mapping[str, str]] = None
    dnn_use_bn: bool = False
    dnn_hidden_units: tuple[int, ...] = (256, 128)
    dnn_activation: str = "relu"
    att_hidden_size: tuple[int, ...] = (64, 16)
    att_activation: str = "Dice"
    att_weight_normalization: bool = False
    l2_reg_dnn: float = 0.0
    l2_reg_embedding: float = 1e-6
    dnn_dropout: float = 0.0
    init_std: float = 1e-4


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
        self.dnn = DNN(n_in, cfg.dnn_hidden_units, cfg.dnn_activation, cfg.dnn_dropout, cfg.dnn_use_bn, cfg.init_std)
        self.dnn_linear = nn.Linear(self.dnn.output_dim, self.num_tasks, bias=False)
        self.out = TaskOutput(self.num_tasks)
        self.register_l2(cfg.l2_reg_dnn, self.dnn.weights() + [self.dnn_linear.weight])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, sparse)
        self.add_embedding_l2(self.config.l2_reg_embedding, x.pooled, x.keys)
        hist = self.attention(x.query, x.keys, x.lengths).squeeze(1)  # (B, E)
        z = torch.cat([x.dense, x.pooled, hist], dim=1)  # (B, N)
        return self.out(self.dnn_linear(self.dnn(z)))  # (B, T)
