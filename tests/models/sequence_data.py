"""Seeded behaviour-sequence data as ``CTRBatch`` es, drawn from the library's planted generator
(:class:`dist_ctr.data.synthetic.PlantedModel` with a linked history, read by
:func:`dist_ctr.data.synthetic.draw_arrays`), with a signal only a model reading the history against the target can
use.

Notation: ``B`` batch, ``L`` history ``maxlen``, ``V`` items, ``C`` categories.

Item ``i`` has category ``i % C``. A row has a user, an interest category, a target item (from the interest half
of the time, else uniform), a history of ``n ~ U{0..L}`` items (``n = 0`` is an empty history; each item from the
interest with probability 0.7, else uniform) and one dense count. The true logit is the generator's
``b + scale * (m - mean m)``, ``m`` the share of the history in the target's category (``m = mean m`` for an empty
history); ids are uniform (within a category too) and there are no first-order or dense effects, so the target
alone, the user, the dense value and the history's length carry (almost) no information: a model without the
history (logistic regression on the target features) stays near AUC 0.5, while the Bayes AUC is about 0.9. ``b``
sets a 50% positive rate.

Schema: ``user``; ``item_id``; ``cate_id``; ``hist_item_id`` / ``hist_cate_id`` (``VarLenSparseFeat`` on the
``item_id`` / ``cate_id`` tables, ``maxlen = L``); optionally ``neg_hist_item_id`` / ``neg_hist_cate_id`` (DIEN's
negatives: a random other item per history position, same lengths); dense ``x``; label ``label``. All embedding
dims are equal (TorchRec's ``EmbeddingCollection`` needs one dim). The category columns are derived from the
drawn items (:func:`dist_ctr.data.synthetic.history_categories`).

>>> d = behaviour_sequences(n_train=256, n_test=128, batch_size=64, seed=0)
>>> len(d.train), len(d.test), d.train[0].sparse.keys()
(4, 2, ['user', 'item_id', 'cate_id', 'hist_item_id', 'hist_cate_id'])
>>> 0.75 < d.bayes_auc < 0.95
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.synthetic import PlantedModel, PlantedSignal, draw_arrays, history_categories
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from tests.models.planted import UNIFORM

__all__ = ["SequenceData", "behaviour_sequences", "sequence_schema"]

CATEGORIES = {"cate_id": "item_id", "hist_cate_id": "hist_item_id"}  # derived column -> the items it categorises


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


def _negatives(n_items: int, n_cates: int, seed: int) -> Callable[[pa.Table], pa.Table]:
    """Adds ``neg_hist_item_id`` (another item than the clicked one, per history position) and its categories."""
    def derive(table: pa.Table) -> pa.Table:
        hist = table.column("hist_item_id").combine_chunks()
        vals = hist.values.to_numpy().astype(np.int64)  # (sum of lengths,)
        neg = (vals + np.random.default_rng([seed, 3]).integers(1, n_items, vals.shape[0])) % n_items
        table = table.append_column("neg_hist_item_id", pa.ListArray.from_arrays(hist.offsets, pa.array(neg)))
        return table.append_column("neg_hist_cate_id", pa.ListArray.from_arrays(hist.offsets, pa.array(neg % n_cates)))
    return derive


def behaviour_sequences(n_train: int = 8000, n_test: int = 2000, batch_size: int = 256, n_users: int = 50,
                        n_items: int = 200, n_cates: int = 10, maxlen: int = 10, dim: int = 8, scale: float = 6.0,
                        negatives: bool = False, seed: int = 0) -> SequenceData:
    """Seeded train / test batches; see the module docstring. ``scale``: logit change per unit of match share."""
    base = FeatureSchema((SparseFeat("user", n_users, dim), SparseFeat("item_id", n_items, dim),
                          VarLenSparseFeat(SparseFeat("hist_item_id", n_items, dim, embedding_name="item_id"),
                                           maxlen=maxlen), DenseFeat("x")), (LabelSpec("label"),))
    signal = PlantedSignal(first_order_scale=0.0, dense_scale=0.0, sequence_scale=scale, history_categories=n_cates,
                           history_zipf=0.0, zipf_range=UNIFORM)
    model = PlantedModel(base, seed, signal, positive_rate=0.5)
    cats = history_categories(model, CATEGORIES)
    neg = _negatives(n_items, n_cates, seed) if negatives else None
    d = draw_arrays(model, n_train + n_test, seed, schema=sequence_schema(n_users, n_items, n_cates, maxlen, dim,
                                                                         negatives),
                    derive=cats if neg is None else (lambda t: neg(cats(t))))
    train, test = d.rows(0, n_train), d.rows(n_train, n_train + n_test)
    return SequenceData(d.schema, train.batches(batch_size), test.batches(batch_size), test.bayes_aucs()[0])
