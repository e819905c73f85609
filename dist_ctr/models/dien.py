"""DIEN (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction", AAAI 2019), as RecBole
implements it, with DeepCTR-Torch's arguments.

Notation: ``B`` batch, ``L`` history length, ``E`` width of one behaviour (= GRU hidden width), ``N`` DNN input
width, ``T`` tasks.

1. **Interest extractor:** a GRU over the history ``e_1..e_L`` gives interest states ``h_1..h_L``.
2. **Auxiliary loss** (training only): ``h_t`` must tell the next clicked behaviour ``e_{t+1}`` from a negative
   ``ê_{t+1}``: ``aux = mean over valid pairs of [BCE(f(h_t, e_{t+1}), 1) + BCE(f(h_t, ê_{t+1}), 0)] / 2`` with
   ``f`` an MLP (sigmoid activations) on ``[h_t, e]``. A pair ``(t, t + 1)`` is valid when ``t + 1 < length``, so
   padding contributes nothing; the mean is over the ``2 x`` (valid pairs) terms, and 0 when there are none.
   Negatives come from a data column (``neg_history_feature_list``: ``VarLenSparseFeat`` s on the targets' tables,
   aligned position by position with the history) or, without one, are sampled in-batch: each position draws a
   behaviour uniformly from all valid history positions of the batch (it can, rarely, be the clicked one). The
   term ``alpha * aux`` is recorded with ``add_loss("dien_aux", ...)`` for ``CTRTask`` to add.
3. **Interest evolving** w.r.t. the target ``q`` (``gru_type``): "GRU" (a second GRU, then attention pooling),
   "AIGRU" (attention scores scale the GRU input), "AGRU" / "AUGRU" (attention in the cell, see
   :mod:`dist_ctr.layers.rnn`). Scores are softmax-normalised over the valid positions only
   (``att_weight_normalization``), and the final state is taken at each row's true length (zeros for length 0).
4. ``logit = w^T DNN([dense, pooled, evolved interest]) + b``.

The model packs the valid history positions once per batch (:class:`~dist_ctr.layers.rnn.PackedRows`, one host
sync for the lengths) and runs both GRUs, the target attention's MLP and the interest evolving on those ``P``
positions only: the GRUs loop over time steps, never over the batch, each step over its running rows, with the
whole recurrence's backward written by hand (:func:`~dist_ctr.layers.rnn.gru_steps`).

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("item", 10, 4),
...                    VarLenSparseFeat(SparseFeat("hist", 10, 4, embedding_name="item"), maxlen=3)))
>>> m = materialize(DIEN(s, DIENConfig(history_feature_list=("item",), gru_type="AUGRU", dnn_hidden_units=(8,))))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["item", "hist"], torch.tensor([1, 2, 3, 4, 5]),
...                                           torch.tensor([1, 1, 3, 0], dtype=torch.int32))
>>> tuple(m(torch.zeros(2, 0), kjt).shape), sorted(m.pop_losses())
((2, 1), ['dien_aux', 'l2_embedding'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.rnn import DynamicGRU, PackedRows, packed_gru
from dist_ctr.layers.sequence import AttentionSequencePoolingLayer, sequence_mask
from dist_ctr.models.heads import TaskOutput, dnn_tower
from dist_ctr.models.base import CTRModel
from dist_ctr.models.inputs import HistoryInputs, default_history_targets
from dist_ctr.models.config_blocks import HistoryArgs, SequenceArgs
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema, VarLenSparseFeat

__all__ = ["DIEN", "DIENConfig", "InterestExtractor", "InterestEvolving", "last_valid"]

GRU_TYPES = ("GRU", "AIGRU", "AGRU", "AUGRU")


def last_valid(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's output at its last valid position: ``Tensor (B, L, H), (B,) -> Tensor (B, H)``; zeros for
    length 0."""
    B, L, H = outputs.shape
    idx = (lengths.long() - 1).clamp(min=0).view(B, 1, 1).expand(B, 1, H)  # (B, 1, H)
    last = outputs.gather(1, idx).squeeze(1)  # (B, H)
    return last * (lengths > 0).view(B, 1).to(outputs.dtype)


class InterestExtractor(nn.Module):
    """DIEN's interest extractor GRU and its auxiliary loss.

    Args:
        embedding_dim (int): ``E`` (input and hidden width).
        aux_hidden_units (tuple[int, ...]): hidden widths of the auxiliary MLP (sigmoid activations; PyTorch's
            default ``nn.Linear`` init, as RecBole inits it at scale rather than DeepCTR-Torch's N(0, 1e-4), under
            which clicked and negative inputs score the same in float32 at first).

    Call: ``forward(keys: Tensor (B, L, E), lengths: Tensor (B,)) -> Tensor (B, L, E)`` interest states, zero at
    padded positions; ``forward_packed(keys: Tensor (P, E), packing: PackedRows) -> Tensor (P, E)`` the same on
    packed positions. ``aux_loss(interest, keys, neg_keys, lengths) -> Tensor ()`` (see the module docstring), and
    ``aux_loss_packed`` the same from packed positions, with the MLP on the valid pairs only.
    """

    def __init__(self, embedding_dim: int, aux_hidden_units: tuple[int, ...] = (100, 50)) -> None:
        super().__init__()
        self.gru = nn.GRU(embedding_dim, embedding_dim, batch_first=True)
        self.aux_dnn = DNN(2 * embedding_dim, aux_hidden_units, "sigmoid")
        for m in self.aux_dnn.layers:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        self.aux_out = nn.Linear(self.aux_dnn.output_dim, 1)

    def forward(self, keys: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packing = PackedRows.build(lengths, keys.shape[1])  # host sync
        return packing.unpack(self.forward_packed(packing.pack(keys), packing))  # (B, L, E), zero at padding

    def forward_packed(self, keys: torch.Tensor, packing: PackedRows) -> torch.Tensor:
        return packed_gru(self.gru, keys, packing)  # (P, E)

    def aux_loss(self, interest: torch.Tensor, keys: torch.Tensor, neg_keys: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
        L = keys.shape[1]
        if L < 2:
            return interest.sum() * 0.0
        h = interest[:, :-1]  # (B, L-1, E)
        pair = sequence_mask(lengths.long() - 1, L - 1).to(keys.dtype)  # (B, L-1): t + 1 < length
        pos = self.aux_out(self.aux_dnn(torch.cat([h, keys[:, 1:]], dim=-1))).squeeze(-1)  # (B, L-1)
        neg = self.aux_out(self.aux_dnn(torch.cat([h, neg_keys[:, 1:]], dim=-1))).squeeze(-1)  # (B, L-1)
        loss = (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="none")
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none"))  # (B, L-1)
        return (loss * pair).sum() / (2.0 * pair.sum()).clamp(min=1.0)

    def aux_loss_packed(self, interest: torch.Tensor, keys: torch.Tensor, neg_keys: torch.Tensor,
                        packing: PackedRows) -> torch.Tensor:
        """:meth:`aux_loss` from packed positions (``interest``, ``keys``, ``neg_keys``: ``Tensor (P, E)``): the
        MLP runs on the ``Q = P - active[0]`` valid pairs only. A packed position of step ``t + 1`` holds the next
        behaviour of the position ``active[t]`` before it (the same sorted row at step ``t``)."""
        active = packing.active
        Q = packing.num_packed - (active[0] if active else 0)
        if Q == 0:
            return interest.sum() * 0.0
        dev = interest.device
        step_width = torch.tensor(active[:-1], device=dev)  # (T - 1,) rows of step t, a pair's offset back
        nxt = torch.arange(active[0], packing.num_packed, device=dev)  # (Q,) positions of steps >= 1
        cur = nxt - torch.repeat_interleave(step_width, torch.tensor(active[1:], device=dev), output_size=Q)  # (Q,)
        h = interest.index_select(0, cur)  # (Q, E)
        pos = self.aux_out(self.aux_dnn(torch.cat([h, keys.index_select(0, nxt)], dim=-1))).squeeze(-1)  # (Q,)
        neg = self.aux_out(self.aux_dnn(torch.cat([h, neg_keys.index_select(0, nxt)], dim=-1))).squeeze(-1)  # (Q,)
        loss = (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos), reduction="sum")
                + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="sum"))
        return loss / (2.0 * Q)


class InterestEvolving(nn.Module):
    """DIEN's interest evolving layer.

    Args:
        embedding_dim (int): ``E``.
        gru_type (str): "GRU" | "AIGRU" | "AGRU" | "AUGRU".
        att_hidden_units (tuple[int, ...]), att_activation (str), att_weight_normalization (bool): the target
            attention (:class:`~dist_ctr.layers.sequence.AttentionSequencePoolingLayer`).
        att_init_std (float | None): normal init std of the attention MLP; ``None`` keeps PyTorch's default.

    Call: ``forward(query: Tensor (B, 1, E), interest: Tensor (B, L, E), lengths: Tensor (B,)) -> Tensor (B, E)``;
    ``forward_packed(query: Tensor (B, 1, E), interest: Tensor (P, E), packing: PackedRows, padded: Tensor (B, L, E)
    | None = None) -> Tensor (B, E)`` the same from packed positions (``padded`` feeds an attention MLP with batch
    statistics; default the unpacked ``interest``, zero at padded positions). The attention MLP runs on the valid
    positions only when it is position-wise (no batch norm, Dice or active dropout), otherwise on the padded batch.
    """

    def __init__(self, embedding_dim: int, gru_type: str = "GRU", att_hidden_units: tuple[int, ...] = (64, 16),
                 att_activation: str = "relu", att_weight_normalization: bool = True,
                 att_init_std: Optional[float] = None) -> None:
        super().__init__()
        if gru_type not in GRU_TYPES:
            raise ValueError(f"DIEN: gru_type must be one of {GRU_TYPES}, got {gru_type!r}")
        self.gru_type = gru_type
        self.attention = AttentionSequencePoolingLayer(att_hidden_units, att_activation, att_weight_normalization,
                                                       return_score=gru_type != "GRU", embedding_dim=embedding_dim,
                                                       init_std=att_init_std)
        if gru_type in ("GRU", "AIGRU"):
            self.gru: nn.Module = nn.GRU(embedding_dim, embedding_dim, batch_first=True)
        else:
            self.gru = DynamicGRU(embedding_dim, embedding_dim, gru_type=gru_type)

    def forward(self, query: torch.Tensor, interest: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packing = PackedRows.build(lengths, interest.shape[1])  # host sync
        return self.forward_packed(query, packing.pack(interest), packing, interest)

    def forward_packed(self, query: torch.Tensor, interest: torch.Tensor, packing: PackedRows,
                       padded: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.gru_type == "GRU":
            states = packing.unpack(packed_gru(self.gru, interest, packing))  # (B, L, E)
            return self.attention(query, states, packing.lengths).squeeze(1)  # (B, E)
        scores = self.scores(query, interest, packing, padded)  # (P,)
        if self.gru_type == "AIGRU":
            states = packed_gru(self.gru, interest * scores.unsqueeze(-1), packing)  # (P, E)
        else:
            states = self.gru.forward_packed(interest, packing, scores)  # (P, E)
        return packing.final(states)  # (B, E) at each row's length, zeros for length 0

    def scores(self, query: torch.Tensor, interest: torch.Tensor, packing: PackedRows,
               padded: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The normalised attention scores of the valid positions: ``Tensor (B, 1, E), (P, E) -> Tensor (P,)``.

        A position-wise MLP runs on the ``P`` valid positions; otherwise (batch statistics) on the padded batch
        ``padded: Tensor (B, L, E)`` (default: ``interest`` unpacked, zero at padded positions).
        """
        if self.attention.positionwise:
            return self.attention.packed_scores(query, interest, packing.rows, packing.flat, packing.max_len)
        keys = packing.unpack(interest) if padded is None else padded  # (B, L, E)
        scores = self.attention(query, keys, packing.lengths)  # (B, 1, L)
        return packing.pack(scores.squeeze(1))  # (P,)


@dataclass(frozen=True)
class DIENConfig(SequenceArgs, HistoryArgs):
    """DeepCTR-Torch's ``DIEN`` arguments plus RecBole's negatives.

    ``use_negsampling`` turns the auxiliary loss on (default on, as in RecBole; DeepCTR-Torch defaults it off);
    ``neg_history_feature_list`` names the negative sequence of each target (aligned with
    ``history_feature_list``); without it negatives are sampled in-batch. ``aux_hidden_units`` are the hidden
    widths of the auxiliary MLP. ``deepctr_init`` starts the weight matrices of both interest GRUs at
    ``N(0, init_std)`` and the attention MLP at ``N(0, 1e-4)``, as DeepCTR-Torch does (the facade's default); off,
    they keep PyTorch's default init, as RecBole, under which the attention scores differ across positions from the
    first step.
    """

    neg_history_feature_list: Optional[tuple[str, ...]] = None
    gru_type: str = "GRU"
    use_negsampling: bool = True
    alpha: float = 1.0
    use_bn: bool = False
    att_hidden_units: tuple[int, ...] = (64, 16)
    att_activation: str = "relu"
    att_weight_normalization: bool = True
    aux_hidden_units: tuple[int, ...] = (100, 50)
    deepctr_init: bool = False


@register_model("DIEN", DIENConfig)
class DIEN(CTRModel):
    """DIEN; see the module docstring.

    Args:
        schema (FeatureSchema): features and labels.
        config (DIENConfig): see the dataclass; ``history_feature_list`` is required.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits; in training mode with
    ``use_negsampling`` it also records ``"dien_aux"`` (``alpha * aux``).
    """

    schema_requirements: tuple[str, ...] = ("sequence",)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> DIENConfig:
        return DIENConfig(history_feature_list=default_history_targets(schema), gru_type="AUGRU")

    def __init__(self, schema: FeatureSchema, config: DIENConfig = DIENConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        if cfg.gru_type not in GRU_TYPES:
            raise ValueError(f"DIEN: gru_type must be one of {GRU_TYPES}, got {cfg.gru_type!r}")
        negs = list(cfg.neg_history_feature_list or ())
        if negs:
            self._check_negatives(schema, cfg, negs)
        self.neg_names = negs
        self.inputs = HistoryInputs(schema, cfg.history_feature_list, "DIEN", cfg.history_features,
                                    extra_sequences=negs)
        E = self.inputs.query_dim
        self.extractor = InterestExtractor(E, cfg.aux_hidden_units)
        self.evolving = InterestEvolving(E, cfg.gru_type, cfg.att_hidden_units, cfg.att_activation,
                                         cfg.att_weight_normalization, 1e-4 if cfg.deepctr_init else None)
        if cfg.deepctr_init:
            for name, p in [*self.extractor.gru.named_parameters(), *self.evolving.gru.named_parameters()]:
                if "weight" in name:
                    nn.init.normal_(p, mean=0.0, std=cfg.init_std)
        n_in = self.inputs.n_dense + self.inputs.pooled_dim + E
        self.dnn, self.dnn_linear = dnn_tower(self, n_in, cfg, use_bn=cfg.use_bn)
        self.out = TaskOutput(self.num_tasks)

    @staticmethod
    def _check_negatives(schema: FeatureSchema, cfg: DIENConfig, negs: list[str]) -> None:
        targets = list(cfg.history_feature_list)
        if len(negs) != len(targets):
            raise ValueError(f"DIEN: neg_history_feature_list {negs} must name one negative sequence per target "
                             f"of history_feature_list {targets}")
        known = {f.name for f in schema.features}
        for t, n in zip(targets, negs):
            if n not in known:
                raise ValueError(f"DIEN: neg_history_feature_list names {n!r}, which is not a feature of the schema")
            nf = schema.feature(n)
            if not isinstance(nf, VarLenSparseFeat):
                raise ValueError(f"DIEN: negative sequence {n!r} must be a VarLenSparseFeat")
            if t in known and nf.embedding_name != schema.feature(t).embedding_name:  # type: ignore[union-attr]
                raise ValueError(f"DIEN: negative sequence {n!r} must share the table of its target {t!r} "
                                 f"(embedding_name {schema.feature(t).embedding_name!r})")  # type: ignore[union-attr]

    def negatives(self, keys: torch.Tensor, lengths: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        """Negative behaviours ``Tensor (B, L, E)``: the configured columns, or in-batch samples (uniform over all
        valid history positions of the batch; the global torch generator, seeded per rank by the engine)."""
        B, L, E = keys.shape
        if self.neg_names:
            seqs = [extra[n] for n in self.neg_names]
            neg = torch.cat(seqs, dim=-1) if len(seqs) > 1 else seqs[0]  # (B, L_neg, E)
            if neg.shape[1] != L:  # align to the history's positions
                neg = F.pad(neg, (0, 0, 0, max(0, L - neg.shape[1])))[:, :L]  # (B, L, E)
            return neg
        w = lengths.to(keys.dtype)  # (B,) rows weighted by their valid positions
        w = w + (w.sum() == 0).to(w.dtype)  # an all-empty batch samples (masked) padding rather than failing
        rows = torch.multinomial(w, B * L, replacement=True).view(B, L)  # (B, L)
        pos = (torch.rand(B, L, device=keys.device) * lengths[rows].to(keys.dtype)).long().clamp(max=L - 1)  # (B, L)
        return keys[rows, pos]  # (B, L, E)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self.inputs(dense, sparse)
        self.add_embedding_l2(self.config.l2_reg_embedding, x.pooled, x.keys)
        packing = PackedRows.build(x.lengths, x.keys.shape[1])  # host sync
        keys = packing.pack(x.keys)  # (P, E)
        interest = self.extractor.forward_packed(keys, packing)  # (P, E)
        if self.training and self.config.use_negsampling:
            neg = packing.pack(self.negatives(x.keys, x.lengths, x.extra))  # (P, E)
            aux = self.extractor.aux_loss_packed(interest, keys, neg, packing)
            self.add_loss("dien_aux", self.config.alpha * aux)
        hist = self.evolving.forward_packed(x.query, interest, packing)  # (B, E)
        z = torch.cat([x.dense, x.pooled, hist], dim=1)  # (B, N)
        return self.out(self.dnn_linear(self.dnn(z)))  # (B, T)
