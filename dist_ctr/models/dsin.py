"""DSIN (Feng et al., "Deep Session Interest Network for Click-Through Rate Prediction", IJCAI 2019), with
DeepCTR's arguments and structure.

Notation: ``B`` batch, ``S`` sessions (``sess_max_count``), ``L`` behaviours per session (``maxlen``), ``E`` width
of one behaviour (target dims summed), ``h d`` self-attention width (``att_head_num * att_embedding_size``, must
equal ``E``), ``N`` DNN input width, ``T`` tasks.

1. Each session ``(B, L, E)`` (optionally + :class:`~dist_ctr.layers.attention.BiasEncoding`) goes through one
   shared self-attention :class:`~dist_ctr.layers.attention.Transformer` (blinding, no layer norm, positional
   encoding unless bias encoding) and is averaged over its valid positions: session interests ``(B, S, E)``.
2. A :class:`~dist_ctr.layers.rnn.BiLSTM` (2 layers, "ave") over the sessions gives interacted interests.
3. Both are pooled by target attention over the non-empty sessions (softmax over valid sessions):
   ``logit = w^T DNN([dense, pooled, att(q, I), att(q, BiLSTM(I))]) + b``.

**Sessions, without name prefixes.** DeepCTR finds sessions by the names ``sess_{i}_{feature}``. Here the config
names the target features (``sess_feature_list``) and, explicitly, the ``VarLenSparseFeat`` of each session
(``session_features``: one tuple per session, one feature per target, each on its target's table). Without it,
the ``VarLenSparseFeat`` s on each target's table are the sessions, in schema order. A row's sessions are filled
from the first: its session count is the number of non-empty sessions, and sessions at or beyond it are ignored.
When each target has a single history and ``sess_max_count = S > 1``, the history itself is divided into ``S``
consecutive sessions of ``ceil(L / S)`` positions (a fixed-size session division, for data without session
columns).

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("item", 10, 4),
...                    VarLenSparseFeat(SparseFeat("s0", 10, 4, embedding_name="item"), maxlen=3),
...                    VarLenSparseFeat(SparseFeat("s1", 10, 4, embedding_name="item"), maxlen=3)))
>>> cfg = DSINConfig(sess_feature_list=("item",), att_head_num=4, dnn_hidden_units=(8,))
>>> m = materialize(DSIN(s, cfg)).eval()
>>> m.sessions
[['s0'], ['s1']]
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["item", "s0", "s1"], torch.arange(1, 8),
...                                           torch.tensor([1, 1, 3, 0, 2, 0], dtype=torch.int32))
>>> tuple(m(torch.zeros(2, 0), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.attention import BiasEncoding, Transformer
from dist_ctr.layers.core import DNN
from dist_ctr.layers.rnn import BiLSTM
from dist_ctr.layers.sequence import AttentionSequencePoolingLayer
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.base import CTRModel
from dist_ctr.models.inputs import default_history_targets, target_columns
from dist_ctr.models.config_blocks import SequenceArgs, positional_order
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import SparseArch

__all__ = ["DSIN", "DSINConfig", "find_sessions"]


def find_sessions(schema: FeatureSchema, targets: tuple[str, ...],
                  session_features: Optional[tuple[tuple[str, ...], ...]]) -> list[list[str]]:
    """Session features ``[session][target]`` (see the module docstring); errors name the feature or key."""
    if not targets:
        raise ValueError("DSIN needs sess_feature_list: the target features whose session histories it reads")
    names = [f.name for f in schema.features]
    for t in targets:
        if t not in names:
            raise ValueError(f"DSIN: target feature {t!r} (sess_feature_list) is not in the schema (features: {names})")
        if not isinstance(schema.feature(t), SparseFeat):
            raise ValueError(f"DSIN: target feature {t!r} must be a single-valued SparseFeat")
    tables = {t: schema.feature(t).embedding_name for t in targets}  # type: ignore[union-attr]
    if session_features is not None:
        sessions = [list(s) for s in session_features]
        if not sessions:
            raise ValueError("DSIN: session_features is empty")
        for i, sess in enumerate(sessions):
            if len(sess) != len(targets):
                raise ValueError(f"DSIN: session_features[{i}] = {sess} must name one feature per target of "
                                 f"sess_feature_list {list(targets)}")
            for t, f in zip(targets, sess):
                if f not in {x.name for x in schema.features}:
                    raise ValueError(f"DSIN: session_features[{i}] names {f!r}, which is not a feature of the schema")
                ff = schema.feature(f)
                if not isinstance(ff, VarLenSparseFeat) or ff.embedding_name != tables[t]:
                    raise ValueError(f"DSIN: session feature {f!r} must be a VarLenSparseFeat on the table "
                                     f"{tables[t]!r} of its target {t!r}")
    else:
        per_target = {t: [v.name for v in schema.varlen_features if v.embedding_name == tables[t]] for t in targets}
        counts = {t: len(v) for t, v in per_target.items()}
        if len(set(counts.values())) != 1 or min(counts.values()) == 0:
            raise ValueError(f"DSIN: every target needs the same number (>= 1) of session VarLenSparseFeats on its "
                             f"table, got {per_target}; name them with session_features")
        sessions = [[per_target[t][s] for t in targets] for s in range(next(iter(counts.values())))]
    flat = [f for s in sessions for f in s]
    if len(set(flat)) != len(flat):
        raise ValueError(f"DSIN: a feature appears in two sessions: {sessions}")
    maxlens = {f: schema.feature(f).maxlen for f in flat}  # type: ignore[union-attr]
    if len(set(maxlens.values())) != 1:
        raise ValueError(f"DSIN: session features must have one maxlen, got {maxlens}")
    return sessions


@positional_order("sess_feature_list", "session_features", "sess_max_count", "bias_encoding", "att_embedding_size",
                  "att_head_num", "dnn_hidden_units", "dnn_activation", "dnn_dropout", "l2_reg_dnn",
                  "l2_reg_embedding", "init_std", "att_hidden_units", "att_activation", "bilstm_dropout")
@dataclass(frozen=True)
class DSINConfig(SequenceArgs):
    """DeepCTR's ``DSIN`` arguments; ``session_features`` names the sessions (see the module docstring);
    ``sess_max_count``, when given, must equal their number; ``att_hidden_units`` / ``att_activation`` are the
    target attentions' MLP (fixed in DeepCTR); ``bilstm_dropout`` is the interest-evolution BiLSTM's dropout
    between layers (DeepCTR hard-codes 0.2)."""

    sess_feature_list: tuple[str, ...] = ()
    session_features: Optional[tuple[tuple[str, ...], ...]] = None
    sess_max_count: Optional[int] = None
    bias_encoding: bool = False
    att_embedding_size: int = 1
    att_head_num: int = 8
    att_hidden_units: tuple[int, ...] = (64, 16)
    att_activation: str = "sigmoid"
    bilstm_dropout: float = 0.2


@register_model("DSIN", DSINConfig)
class DSIN(CTRModel):
    """Deep Session Interest Network; see the module docstring.

    Args:
        schema (FeatureSchema): features and labels.
        config (DSINConfig): ``sess_feature_list`` is required.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    schema_requirements: tuple[str, ...] = ("sequence",)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> DSINConfig:
        targets = default_history_targets(schema)
        E = sum(int(schema.feature(t).embedding_dim) for t in targets) or 1  # type: ignore[union-attr]
        return DSINConfig(sess_feature_list=targets, sess_max_count=2, att_embedding_size=1, att_head_num=E)

    def __init__(self, schema: FeatureSchema, config: DSINConfig = DSINConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        targets = tuple(cfg.sess_feature_list)
        self.sessions = find_sessions(schema, targets, cfg.session_features)
        flat = [f for s in self.sessions for f in s]
        seq_len = int(schema.feature(flat[0]).maxlen)  # type: ignore[union-attr]
        S = len(self.sessions)
        self.chunked = S == 1 and cfg.sess_max_count is not None and cfg.sess_max_count > 1
        if self.chunked:
            S = int(cfg.sess_max_count)  # type: ignore[arg-type]
            self.maxlen = -(-seq_len // S)  # positions per session
        else:
            if cfg.sess_max_count is not None and cfg.sess_max_count != S:
                raise ValueError(f"DSIN: sess_max_count={cfg.sess_max_count} but the schema has {S} sessions "
                                 f"{self.sessions}")
            self.maxlen = seq_len
        self.num_sessions = S
        pooled = [n for n in schema.sparse_names if n not in set(flat)]
        self.sparse = SparseArch(schema, pooled, sequence_features=flat)
        cols, self.pooled_dim = target_columns(self.sparse, targets)
        self.register_buffer("_target_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        E = self.embedding_width = len(cols)
        if cfg.att_embedding_size * cfg.att_head_num != E:
            raise ValueError(f"DSIN: att_embedding_size * att_head_num = {cfg.att_embedding_size} * "
                             f"{cfg.att_head_num} must equal the behaviour width E={E} (the embedding dims of "
                             f"{list(targets)}, summed)")
        self.bias: Optional[BiasEncoding] = BiasEncoding(S, self.maxlen, E) if cfg.bias_encoding else None
        self.self_attention = Transformer(E, cfg.att_embedding_size, cfg.att_head_num, 0.0,
                                          use_positional_encoding=not cfg.bias_encoding, use_res=True,
                                          use_feed_forward=True, use_layer_norm=False, blinding=True,
                                          output_type="mean")
        self.bilstm = BiLSTM(E, layers=2, res_layers=0, dropout_rate=cfg.bilstm_dropout, merge_mode="ave")
        self.interest_attention = AttentionSequencePoolingLayer(cfg.att_hidden_units, cfg.att_activation, True,
                                                                embedding_dim=E, init_std=None)
        self.lstm_attention = AttentionSequencePoolingLayer(cfg.att_hidden_units, cfg.att_activation, True,
                                                            embedding_dim=E, init_std=None)
        n_in = schema.n_dense + self.pooled_dim + 2 * E
        self.dnn, self.dnn_linear = dnn_tower(self, n_in, cfg, use_bn=False, zero_bias=True)  # Keras Dense
        self.out = TaskOutput(self.num_tasks)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        B, S, L, E = dense.shape[0], self.num_sessions, self.maxlen, self.embedding_width
        out = self.sparse(sparse)
        query = out.pooled_flat.index_select(1, self._target_cols).view(B, 1, E)  # (B, 1, E)
        sess = [torch.cat([out.sequences[f] for f in s], dim=-1) for s in self.sessions]  # (B, L_s, E) each
        if self.chunked:  # one history divided into S sessions of L positions
            seq = F.pad(sess[0], (0, 0, 0, S * L - sess[0].shape[1]))  # (B, S L, E)
            x = seq.view(B, S, L, E)  # (B, S, L, E)
            n = out.seq_lengths[self.sessions[0][0]].long().view(B, 1)  # (B, 1)
            starts = torch.arange(S, device=n.device).view(1, S) * L  # (1, S)
            lens = (n - starts).clamp(min=0, max=L)  # (B, S)
        else:
            x = torch.stack(sess, dim=1)  # (B, S, L, E)
            lens = torch.stack([out.seq_lengths[s[0]].long() for s in self.sessions], dim=1)  # (B, S)
        self.add_embedding_l2(self.config.l2_reg_embedding, out.pooled_flat, x)
        if self.bias is not None:
            x = self.bias(x)
        flat = x.reshape(B * S, L, E)  # (B S, L, E)
        flat_lens = lens.reshape(B * S)  # (B S,)
        interests = self.self_attention(flat, flat, flat_lens, flat_lens).view(B, S, E)  # (B, S, E)
        count = (lens > 0).sum(dim=1)  # (B,) non-empty sessions
        interest_att = self.interest_attention(query, interests, count).squeeze(1)  # (B, E)
        lstm_out = self.bilstm(interests, count)  # (B, S, E)
        lstm_att = self.lstm_attention(query, lstm_out, count).squeeze(1)  # (B, E)
        z = torch.cat([dense, out.pooled_flat, interest_att, lstm_att], dim=1)  # (B, N)
        return self.out(self.dnn_linear(self.dnn(z)))  # (B, T)
