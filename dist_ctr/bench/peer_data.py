"""Planted-signal data for ``bench_peer_deepctr.py``'s sequence (DIN, DIEN) and multi-task (SharedBottom, ESMM,
MMOE, PLE) rows: NumPy only, vectorised, seeded; both libraries get the same arrays.

Notation: ``N`` rows, ``L`` history ``maxlen``, ``V`` items, ``C`` categories, ``T`` tasks.

**Behaviour sequences** (:func:`make_sequence_data`). Item ``i`` has category ``i % C``. Every row has a user (no
effect), an interest category ``k`` and an interest strength ``rho ~ U(0.2, 0.9)``; a history of ``n ~ U{1..L}``
items, oldest first, each from category ``k`` with probability ``rho`` (else a uniform category), uniform within its
category; a target item that is, with probabilities 0.2 / 0.4 / 0.4, a copy of one of the history's items, an item
of category ``k``, or a uniform item; and one dense value ``price ~ U(0, 1)``. The click logit is

    z = b + g[cate(target)] + 3 * (m - mean m) + 1.0 * [target in history] + (price - 0.5)

with ``g ~ N(0, 0.4^2)`` per category and ``m`` the recency-weighted share of the history in the target's
category (position ``t`` of ``n`` weighs ``exp(-(n - 1 - t) / 5)``, so recent behaviour counts most). The target
alone carries only ``g``; the rest needs the history read against the target (DIN's attention, DIEN's evolving
interest). ``b`` is set by bisection for a 25% CTR; the planted function depends on ``seed`` only, not on ``N``.

**Two tasks** (:func:`conversion_labels`): on top of the flat Criteo-shaped rows (the click label of
``bench_peer_deepctr.make_data``), a conversion given a click is drawn from ``sigmoid(g)`` with
``g = c + 0.6 (z_click - mean) + first-order effects on 4 other fields + a dense effect``, ``c`` set for a 30% mean
conversion rate; the second label is click-and-convert (CTCVR), so the tasks are correlated and conversion implies
click (ESMM's setting). The same two labels (``ctr``, ``ctcvr``) serve all four multi-task models.

>>> d = make_sequence_data(2000, seed=0)
>>> d.seqs["hist_item_id"].shape, d.label.shape, bool(d.seq_length.min() >= 1)
((2000, 20), (2000, 1), True)
>>> bool(0.2 < d.label.mean() < 0.3), bool(0.7 < task_aucs(d.label, d.prob)[0] < 0.95)
(True, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat

__all__ = ["SeqData", "conversion_labels", "make_sequence_data", "seq_peer_columns", "seq_schema", "seq_to_batches",
           "task_aucs"]

SEQ_TARGETS = ("item_id", "cate_id")  # history_feature_list on both sides
SEQ_LENGTH = "seq_length"  # the peer's length column (VarLenSparseFeat.length_name)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _bias_for(logit: np.ndarray, rate: float) -> float:
    """``b`` with ``mean(sigmoid(logit + b)) = rate`` (bisection)."""
    lo, hi = -15.0, 15.0
    for _ in range(50):
        b = (lo + hi) / 2
        lo, hi = (b, hi) if np.mean(_sigmoid(logit + b)) < rate else (lo, b)
    return (lo + hi) / 2


def task_aucs(y: np.ndarray, p: np.ndarray) -> list[float]:
    """Exact AUC per task: ``y, p: (N, T) | (N,) -> [T floats]`` (float64, ``sklearn.metrics.roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score

    n = y.shape[0]
    y2, p2 = y.reshape(n, -1).astype(np.float64), p.reshape(n, -1).astype(np.float64)  # (N, T)
    if y2.shape[1] != p2.shape[1]:
        raise ValueError(f"labels have {y2.shape[1]} task(s) but predictions {p2.shape[1]}")
    return [float(roc_auc_score(y2[:, t], p2[:, t])) for t in range(y2.shape[1])]


# ---- behaviour sequences ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class SeqData:
    """Rows with single-valued ids, right-padded histories and dense values (see the module docstring).

    Attributes:
        sparse (dict[str, ndarray]): single-valued feature -> ``(N,)`` int64 ids.
        seqs (dict[str, ndarray]): history feature -> ``(N, L)`` int64 ids, oldest first, 0 beyond the length.
        seq_length (ndarray): ``(N,)`` int64 true length of every row's history (all histories share it).
        dense (dict[str, ndarray]): dense feature -> ``(N,)`` float32.
        label (ndarray): ``(N, T)`` float32.
        prob (ndarray): ``(N, T)`` float64, the planted probabilities.
        base (ndarray): ``(N,)`` float64, the planted logit without the history terms (what a model that ignores
            the history can reach at best).
        vocab (dict[str, int]): vocabulary per table (single-valued feature name).
        history_of (dict[str, str]): history feature -> the target feature whose table it reads.
    """

    sparse: dict[str, np.ndarray]
    seqs: dict[str, np.ndarray]
    seq_length: np.ndarray
    dense: dict[str, np.ndarray]
    label: np.ndarray
    prob: np.ndarray
    base: np.ndarray
    vocab: dict[str, int]
    history_of: dict[str, str]

    def rows(self, lo: int, hi: int) -> "SeqData":
        return SeqData({k: v[lo:hi] for k, v in self.sparse.items()}, {k: v[lo:hi] for k, v in self.seqs.items()},
                       self.seq_length[lo:hi], {k: v[lo:hi] for k, v in self.dense.items()}, self.label[lo:hi],
                       self.prob[lo:hi], self.base[lo:hi], self.vocab, self.history_of)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def maxlen(self) -> int:
        return int(next(iter(self.seqs.values())).shape[1])

    def peer_x(self) -> dict[str, np.ndarray]:
        """DeepCTR-Torch's input dict: ``(N,)`` ids and dense values, ``(N, L)`` padded histories, and the
        ``seq_length`` column."""
        return {**self.sparse, **self.seqs, SEQ_LENGTH: self.seq_length, **self.dense}


def make_sequence_data(n: int, seed: int, n_users: int = 10_000, n_items: int = 10_000, n_cates: int = 100,
                       maxlen: int = 20, ctr: float = 0.25) -> SeqData:
    """``n`` behaviour-sequence rows (see the module docstring); ``n_items`` must be a multiple of ``n_cates``."""
    if n_items % n_cates:
        raise ValueError(f"n_items ({n_items}) must be a multiple of n_cates ({n_cates})")
    gp = np.random.default_rng([seed, 10])  # the planted function
    g = np.random.default_rng([seed, 11])  # the rows
    cate_effect = gp.normal(0.0, 0.4, n_cates)
    per_cate = n_items // n_cates

    user = g.integers(0, n_users, n)
    interest = g.integers(0, n_cates, n)  # (N,)
    rho = g.uniform(0.2, 0.9, n)  # (N,)
    length = g.integers(1, maxlen + 1, n)  # (N,)
    pos = np.arange(maxlen)
    valid = pos[None, :] < length[:, None]  # (N, L)
    h_cate = np.where(g.random((n, maxlen)) < rho[:, None], interest[:, None], g.integers(0, n_cates, (n, maxlen)))
    h_item = h_cate + n_cates * g.integers(0, per_cate, (n, maxlen))  # (N, L); item % C is its category
    h_item, h_cate = np.where(valid, h_item, 0), np.where(valid, h_cate, 0)

    u = g.random(n)
    copied = h_item[np.arange(n), (g.random(n) * length).astype(np.int64)]  # a random valid history item
    of_interest = interest + n_cates * g.integers(0, per_cate, n)
    target = np.where(u < 0.2, copied, np.where(u < 0.6, of_interest, g.integers(0, n_items, n)))  # (N,)
    t_cate = target % n_cates
    price = g.random(n).astype(np.float32)

    w = np.where(valid, np.exp(-(length[:, None] - 1 - pos[None, :]) / 5.0), 0.0)  # (N, L) recency weights
    share = (w * (h_cate == t_cate[:, None])).sum(1) / w.sum(1)  # (N,)
    repeat = (valid & (h_item == target[:, None])).any(1)  # (N,)
    base = cate_effect[t_cate] + (price - 0.5)
    logit = base + 3.0 * (share - share.mean()) + 1.0 * repeat
    prob = _sigmoid(logit + _bias_for(logit, ctr))
    label = (g.random(n) < prob).astype(np.float32)
    return SeqData(
        sparse={"user": user.astype(np.int64), "item_id": target.astype(np.int64), "cate_id": t_cate.astype(np.int64)},
        seqs={"hist_item_id": h_item.astype(np.int64), "hist_cate_id": h_cate.astype(np.int64)},
        seq_length=length.astype(np.int64), dense={"price": price}, label=label.reshape(n, 1),
        prob=prob.reshape(n, 1), base=base, vocab={"user": n_users, "item_id": n_items, "cate_id": n_cates},
        history_of={"hist_item_id": "item_id", "hist_cate_id": "cate_id"})


def seq_schema(d: SeqData, dim: int) -> FeatureSchema:
    """Our schema: each history ``VarLenSparseFeat`` reads its target's table (``embedding_name``)."""
    feats: list[Any] = [SparseFeat(k, d.vocab[k], dim) for k in d.sparse]
    feats += [VarLenSparseFeat(SparseFeat(h, d.vocab[t], dim, embedding_name=t), maxlen=d.maxlen)
              for h, t in d.history_of.items()]
    feats += [DenseFeat(k) for k in d.dense]
    return FeatureSchema(tuple(feats), (LabelSpec("label"),))


def seq_peer_columns(dc: Any, d: SeqData, dim: int) -> list[Any]:
    """DeepCTR-Torch's columns: the histories named ``hist_<target>`` on the target's table, with ``length_name``."""
    inp = dc.inputs
    cols: list[Any] = [inp.SparseFeat(k, vocabulary_size=d.vocab[k], embedding_dim=dim) for k in d.sparse]
    cols += [inp.VarLenSparseFeat(inp.SparseFeat(h, vocabulary_size=d.vocab[t], embedding_dim=dim, embedding_name=t),
                                  maxlen=d.maxlen, length_name=SEQ_LENGTH) for h, t in d.history_of.items()]
    cols += [inp.DenseFeat(k, 1) for k in d.dense]
    return cols


def seq_to_batches(d: SeqData, schema: FeatureSchema, batch: int) -> list[CTRBatch]:
    """Key-major KJT batches (int64 ids, int32 lengths; a history's values are its valid prefix) and ``(B,
    n_dense)`` dense values, ``(B, T)`` labels."""
    out = []
    for lo in range(0, len(d), batch):
        part = d.rows(lo, lo + batch)
        b = len(part)
        vals, lens = [], []
        for k in schema.sparse_names:
            if k in part.sparse:
                vals.append(part.sparse[k])
                lens.append(np.ones(b, dtype=np.int32))
            else:
                seq = part.seqs[k]  # (b, L)
                vals.append(seq[np.arange(seq.shape[1])[None, :] < part.seq_length[:, None]])  # row-major prefixes
                lens.append(part.seq_length.astype(np.int32))
        kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=torch.from_numpy(np.concatenate(vals)),
                                lengths=torch.from_numpy(np.concatenate(lens)))
        dense = np.stack([part.dense[k] for k in schema.dense_names], axis=1)  # (b, n_dense)
        out.append(CTRBatch(torch.from_numpy(dense), kjt, torch.from_numpy(part.label)))  # labels (b, T)
    return out


# ---- two correlated tasks ---------------------------------------------------------------------------------------
def conversion_labels(click: np.ndarray, click_prob: np.ndarray, sparse: np.ndarray, dense: np.ndarray,
                      vocabs: list[int], seed: int, cvr: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Click-and-convert labels and probabilities ``(N,) float32, (N,) float64`` for rows with click labels
    ``click (N,)`` of planted probability ``click_prob (N,)``, ids ``sparse (N, F)`` over vocabularies ``vocabs``,
    dense ``dense (N, n_dense)`` (see the module docstring). The planted function depends on ``seed`` and
    ``vocabs`` only."""
    gp = np.random.default_rng([seed, 20])
    g = np.random.default_rng([seed, 21])
    n = click.shape[0]
    p = np.clip(click_prob, 1e-12, 1 - 1e-12)
    z_click = np.log(p / (1 - p))
    logit = 0.6 * (z_click - z_click.mean())
    for f in gp.choice(sparse.shape[1], 4, replace=False):
        w = gp.normal(0.0, 0.6, vocabs[f])
        logit += w[sparse[:, f]]
    logit += (dense - dense.mean(0)) @ gp.normal(0.0, 1.5, dense.shape[1])
    p_conv = _sigmoid(logit + _bias_for(logit, cvr))
    conv = g.random(n) < p_conv
    return (click.astype(bool) & conv).astype(np.float32), click_prob * p_conv
