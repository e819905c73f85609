"""Rows of a :class:`PlantedModel` in memory, read as the loader reads them: column arrays, their truth and batches.

Notation: ``N`` rows, ``B`` batch size, ``F1`` single-valued sparse features, ``n_dense`` dense width, ``T`` tasks,
``L`` a history's ``maxlen``, ``C`` a history's categories.

The rows are :meth:`PlantedModel.sample`'s (the same as :func:`synth_table` with the same seeds), turned into
arrays by the loader's own :class:`~dist_ctr.data.transforms.TableTransform` (ids checked against their
vocabularies, dense nulls filled, ``log(1 + x)`` by default), so tests, benchmarks and the library see one
generator and one reading of it.

>>> from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat
>>> s = FeatureSchema((SparseFeat("a", 20, 4), SparseFeat("b", 30, 4), DenseFeat("x")), (LabelSpec("label"),))
>>> d = draw_arrays(PlantedModel(s, model_seed=0), 1000, seed=1)
>>> d.ids("a").shape, d.dense.shape, d.labels.shape, d.logits.shape
((1000,), (1000, 1), (1000, 1), (1000, 1))
>>> b = d.batches(384)
>>> len(b), b[0].sparse.keys(), tuple(b[2].labels.shape)
(3, ['a', 'b'], (232, 1))
>>> bool(0.5 < d.bayes_aucs()[0] < 1.0)
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dist_ctr.auc import exact_auc
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.columns import BatchLayout, Columns
from dist_ctr.data.config import DenseTransformConfig
from dist_ctr.data.synthetic.ids import _sigmoid
from dist_ctr.data.synthetic.model import ROW_ID, PlantedModel
from dist_ctr.data.transforms import TableTransform
from dist_ctr.schema import FeatureSchema, VarLenSparseFeat

__all__ = ["PlantedArrays", "draw_arrays", "history_categories"]


@dataclass
class PlantedArrays:
    """``N`` drawn rows as arrays, and their truth.

    Attributes:
        schema (FeatureSchema): the features read (the model's, or a schema with derived columns).
        columns (Columns): ``dense (N, n_dense)`` float32 after the dense transform, ``ids (N, F1)`` int64,
            ``lists`` ``(offsets (N + 1,), values)`` per ``VarLenSparseFeat``, ``labels (N, T)`` float32.
        layout (BatchLayout): where each KJT key's ids live in ``columns``.
        logits (np.ndarray): ``(N, T)`` float32 true logits (a chained task's: of reaching that step).
        first_order (np.ndarray): ``(N,)`` float32, task 0's additive logit (no pairwise / history-match terms).
    """

    schema: FeatureSchema
    columns: Columns
    layout: BatchLayout
    logits: np.ndarray
    first_order: np.ndarray

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def dense(self) -> np.ndarray:
        """``(N, n_dense)`` float32."""
        return self.columns.dense

    @property
    def labels(self) -> np.ndarray:
        """``(N, T)`` float32."""
        return self.columns.labels

    @property
    def probs(self) -> np.ndarray:
        """``(N, T)`` float64 true probabilities."""
        return _sigmoid(self.logits.astype(np.float64))

    def ids(self, name: str) -> np.ndarray:
        """``(N,)`` int64 ids of a single-valued feature."""
        kind, j = self.layout.order[self.layout.keys.index(name)]
        if kind != 0:
            raise ValueError(f"{name!r} is a VarLenSparseFeat: use bag() or padded()")
        return self.columns.ids[:, j]

    def bag(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets (N + 1,), values)`` int64 of a ``VarLenSparseFeat``."""
        kind, j = self.layout.order[self.layout.keys.index(name)]
        if kind != 1:
            raise ValueError(f"{name!r} is single-valued: use ids()")
        return self.columns.lists[j]

    def padded(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (N, L) int64, 0 beyond each row's length; lengths (N,) int64)`` of a ``VarLenSparseFeat``."""
        offsets, values = self.bag(name)
        lengths = np.diff(offsets)  # (N,)
        maxlen = self.schema.feature(name).maxlen  # type: ignore[union-attr]
        out = np.zeros((len(self), maxlen), np.int64)
        out[np.arange(maxlen)[None, :] < lengths[:, None]] = values  # row-major: each row's prefix
        return out, lengths

    def bayes_aucs(self) -> list[float]:
        """Exact AUC of the true probabilities against the drawn labels, per task (NaN with one class)."""
        return [exact_auc(self.logits[:, t].astype(np.float64), self.labels[:, t]) for t in range(self.logits.shape[1])]

    def rows(self, lo: int, hi: int) -> "PlantedArrays":
        """Rows ``[lo, hi)``."""
        return replace(self, columns=self.columns.slice(lo, hi), logits=self.logits[lo:hi],
                       first_order=self.first_order[lo:hi])

    def batches(self, batch_size: int) -> list[CTRBatch]:
        """Consecutive ``CTRBatch`` es of ``batch_size`` rows (the last may be shorter): key-major KJT (int64 ids,
        int32 lengths), dense ``(B, n_dense)``, labels ``(B, T)``, row ids ``(B,)``."""
        return [self.columns.slice(lo, min(lo + batch_size, len(self))).to_batch(self.layout)
                for lo in range(0, len(self), batch_size)]


def draw_arrays(model: PlantedModel, rows: int, seed: int = 0, dense: Optional[DenseTransformConfig] = None,
                schema: Optional[FeatureSchema] = None,
                derive: Optional[Callable[[pa.Table], pa.Table]] = None) -> PlantedArrays:
    """Draw ``rows`` rows of ``model`` (the rows :func:`synth_table` draws with this ``seed``) and read them.

    Args:
        model (PlantedModel): the truth.
        rows (int): ``N``.
        seed (int): seeds the rows (not the model).
        dense (DenseTransformConfig | None): the loader's dense transform (default ``log(1 + x)``, nulls -> 0).
        schema (FeatureSchema | None): the schema to read (default the model's); with ``derive``, it may name
            columns ``derive`` adds.
        derive (Callable[[pa.Table], pa.Table] | None): adds derived columns to the drawn table before it is read
            (e.g. :func:`history_categories`).

    Returns:
        PlantedArrays
    """
    table, z, z_first = model.sample(np.random.default_rng([seed, 0]), rows)
    if derive is not None:
        table = derive(table)
    transform = TableTransform(schema or model.schema, dense, row_id_column=ROW_ID)
    return PlantedArrays(transform.schema, transform.transform(table), transform.layout,
                         np.ascontiguousarray(z.T), z_first)


def history_categories(model: PlantedModel, names: Mapping[str, str]) -> Callable[[pa.Table], pa.Table]:
    """A ``derive`` for :func:`draw_arrays` that adds category columns of a linked history's ids (DIN's
    ``cate_id`` / ``hist_cate_id``): id ``i`` is in category ``i % C``, the history's own categories, so the
    history/target category match the model plants is what the category columns show.

    Args:
        model (PlantedModel): the model with the linked history.
        names (Mapping[str, str]): new column -> the history or target column it categorises.

    >>> from dist_ctr.data.synthetic.table import with_options
    >>> from dist_ctr.schema import FeatureSchema, LabelSpec
    >>> from dist_ctr.data.synthetic.signal import PlantedSignal
    >>> s = with_options(FeatureSchema((), (LabelSpec("label"),)), sequences=True, seq_maxlen=4, seq_vocab=40)
    >>> m = PlantedModel(s, signal=PlantedSignal(history_categories=5))
    >>> t, _, _ = m.sample(np.random.default_rng(0), 3)
    >>> t = history_categories(m, {"cate_id": "item_id", "hist_cate_id": "hist_item_id"})(t)
    >>> bool((t["item_id"].to_numpy() % 5 == t["cate_id"].to_numpy()).all()), t["hist_cate_id"].type
    (True, ListType(list<item: int64>))
    """
    n_cat = {}
    for h in model.histories:
        n_cat[h.hist] = n_cat[h.target] = h.n_cat

    def derive(table: pa.Table) -> pa.Table:
        for new, src in names.items():
            if src not in n_cat:
                raise ValueError(f"{src!r} is neither a linked history nor its target (histories: "
                                 f"{[h.hist for h in model.histories]})")
            col = table.column(src).combine_chunks()
            if pa.types.is_list(col.type):
                vals = pc.remainder(col.values, n_cat[src])
                col = pa.ListArray.from_arrays(col.offsets, vals)
            else:
                col = pc.remainder(col, n_cat[src])
            table = table.append_column(new, col)
        return table

    return derive
