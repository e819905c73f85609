"""Seeded behaviour-sequence data as ``CTRBatch`` es, with a signal only a model reading the history can use.

Notation: ``B`` batch, ``L`` history ``maxlen``, ``V`` items, ``C`` categories.

Item ``i`` has category ``i % C``. A row has a user, a target item (and its category), a history of ``n ~ U{0..L}``
uniform items (and their categories; ``n = 0`` is an empty history) and one standard-normal dense value. Its label
is ``Bernoulli(p_in)`` when the target's category appears among the history's categories, else
``Bernoulli(p_out)``: the target alone, the user and the dense value carry no information, so a model without the
history (logistic regression on the target features) stays near AUC 0.5, while the Bayes AUC is well above.

Schema: ``user``; ``item_id``; ``cate_id``; ``hist_item_id`` / ``hist_cate_id`` (``VarLenSparseFeat`` on the
``item_id`` / ``cate_id`` tables, ``maxlen = L``); optionally ``neg_hist_item_id`` / ``neg_hist_cate_id`` (DIEN's
negatives: a random other item per history position, same lengths); dense ``x``; label ``label``. All embedding
dims are equal (TorchRec's ``EmbeddingCollection`` needs one dim).

>>> d = behaviour_sequences(n_train=256, n_test=128, batch_size=64, seed=0)
>>> len(d.train), len(d.test), d.train[0].sparse.keys()
(4, 2, ['user', 'item_id', 'cate_id', 'hist_item_id', 'hist_cate_id'])
>>> 0.75 < d.bayes_auc < 0.95
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from tests.models.planted import auc

__all__ = ["SequenceData", "behaviour_sequences", "sequence_schema"]


@dataclass
class SequenceData:
    schema: FeatureSchema
    train: list[CTRBatch]
    test: list[CTRBatch]
    bayes_auc: float  # AUC of the true probabilities on the test rows (NaN without both classes there)


def sequence_schema(n_users: int = 50, n_items: int = 200, n_cates: int = 10, maxlen: int = 10, dim: int = 8,
                    negatives: bool = False) -> FeatureSchema:
    """The schema of :func:`behaviour_sequences`."""
    feats = [
        SparseFeat("user", n_users, dim),
        SparseFeat("item_id", n_items, dim),
        SparseFeat("cate_id", n_cates, dim),
        VarLenSparseFeat(SparseFeat("hist_item_id", n_items, dim, embedding_name="item_id"), maxlen=maxlen),
        VarLenSparseFeat(SparseFeat("hist_cate_id", n_cates, dim, embedding_name="cate_id"), maxlen=maxlen),
    ]
    if negatives:
        feats += [
            VarLenSparseFeat(SparseFeat("neg_hist_item_id", n_items, dim, embedding_name="item_id"), maxlen=maxlen),
            VarLenSparseFeat(SparseFeat("neg_hist_cate_id", n_cates, dim, embedding_name="cate_id"), maxlen=maxlen),
        ]
    return FeatureSchema(tuple(feats) + (DenseFeat("x"),), (LabelSpec("label"),))


def _batches(schema: FeatureSchema, cols: dict[str, tuple[np.ndarray, np.ndarray]], dense: np.ndarray,
             labels: np.ndarray, batch_size: int) -> list[CTRBatch]:
    """Cut column-wise ``(values per row as a flat array, lengths)`` into key-major KJT batches."""
    n = labels.shape[0]
    offsets = {k: np.concatenate([[0], np.cumsum(ln)]) for k, (_, ln) in cols.items()}
    out = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        vals, lens = [], []
        for k in schema.sparse_names:
            v, ln = cols[k]
            vals.append(v[offsets[k][s]:offsets[k][e]])
            lens.append(ln[s:e])
        kjt = KeyedJaggedTensor.from_lengths_sync(schema.sparse_names, torch.from_numpy(np.concatenate(vals)),
                                                  torch.from_numpy(np.concatenate(lens).astype(np.int32)))
        out.append(CTRBatch(torch.from_numpy(dense[s:e]), kjt, torch.from_numpy(labels[s:e])))
    return out


def behaviour_sequences(n_train: int = 8000, n_test: int = 2000, batch_size: int = 256, n_users: int = 50,
                        n_items: int = 200, n_cates: int = 10, maxlen: int = 10, dim: int = 8,
                        p_in: float = 0.9, p_out: float = 0.1, negatives: bool = False, seed: int = 0) -> SequenceData:
    """Seeded train / test batches; see the module docstring."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    schema = sequence_schema(n_users, n_items, n_cates, maxlen, dim, negatives)
    user = rng.integers(0, n_users, n)
    item = rng.integers(0, n_items, n)
    lengths = rng.integers(0, maxlen + 1, n)
    hist = rng.integers(0, n_items, int(lengths.sum()))  # host-side generation, flat over rows
    row = np.repeat(np.arange(n), lengths)
    hit = np.zeros(n, dtype=bool)
    np.logical_or.at(hit, row, (hist % n_cates) == (item[row] % n_cates))
    p = np.where(hit, p_in, p_out)
    labels = (rng.random(n) < p).astype(np.float32).reshape(n, 1)
    dense = rng.standard_normal((n, 1)).astype(np.float32)
    ones = np.ones(n, dtype=np.int64)
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "user": (user, ones), "item_id": (item, ones), "cate_id": (item % n_cates, ones),
        "hist_item_id": (hist, lengths), "hist_cate_id": (hist % n_cates, lengths),
    }
    if negatives:
        neg = (hist + rng.integers(1, n_items, hist.shape[0])) % n_items  # another item than the clicked one
        cols["neg_hist_item_id"] = (neg, lengths)
        cols["neg_hist_cate_id"] = (neg % n_cates, lengths)
    cols = {k: (v.astype(np.int64), ln.astype(np.int64)) for k, (v, ln) in cols.items()}
    split = {k: ((v[: int(ln[:n_train].sum())], ln[:n_train]), (v[int(ln[:n_train].sum()):], ln[n_train:]))
             for k, (v, ln) in cols.items()}
    train = _batches(schema, {k: a for k, (a, _) in split.items()}, dense[:n_train], labels[:n_train], batch_size)
    test = _batches(schema, {k: b for k, (_, b) in split.items()}, dense[n_train:], labels[n_train:], batch_size)
    y_test = labels[n_train:, 0]
    bayes = auc(p[n_train:], y_test) if 0 < y_test.sum() < y_test.size else float("nan")  # NaN: no test AUC
    return SequenceData(schema, train, test, bayes)
