"""Arrow tables -> NumPy columns -> ``CTRBatch``, vectorised (no Python loop per row). The column blocks and their
assembly into a batch live in :mod:`dist_ctr.data.columns` (re-exported here).

Notation: ``N`` rows of a block, ``B`` batch size, ``F1`` single-valued sparse features, ``n_dense`` dense
width, ``T`` tasks.

Per feature, whole columns at a time:

- ``SparseFeat`` without ``use_hash``: integer ids taken as they are, checked to lie in
  ``[0, vocabulary_size)`` (negative or too large ids raise :class:`BadValueError` naming file, row group and
  column);
- ``use_hash``: :func:`dist_ctr.schema.stable_hash` of the raw value (hex string, bytes or int) modulo the
  vocabulary -- the schema's one hash, so training and serving agree;
- a vocabulary file (``DataConfig.vocabularies``): line ``i`` -> id ``i + 1``, unknown / null -> 0;
- ``VarLenSparseFeat``: a Parquet list column; each list truncated to its first ``maxlen`` ids; a null list is
  an empty bag;
- ``DenseFeat``: nulls / NaNs -> ``fill_na``; ``inf`` / ``-inf`` (and float64 values beyond float32) raise
  :class:`BadValueError` naming file, row group and column, or under ``on_non_finite="fill"`` become ``fill_na``
  and are counted in :attr:`TableTransform.filled`; then ``none`` | ``log`` (``log(1 + max(x, 0))``) | ``minmax``
  (see :class:`~dist_ctr.data.config.DenseTransformConfig`), then times its ``scale``; ``dimension > 1`` reads a
  list column of exactly that many values;
- labels: ``(N, T)`` float32; binary labels must be 0 or 1, no label may be null.

>>> import pyarrow as pa
>>> from dist_ctr.schema import FeatureSchema, SparseFeat, DenseFeat, LabelSpec
>>> s = FeatureSchema((SparseFeat("C1", 10), SparseFeat("C2", 100, use_hash=True), DenseFeat("I1")))
>>> t = TableTransform(s, DenseTransformConfig(transform="none"))
>>> cols = t.transform(pa.table({"C1": [1, 2], "C2": ["a", "b"], "I1": [3.0, None], "label": [0, 1]}))
>>> cols.ids.shape, cols.dense.tolist(), cols.labels.tolist()
((2, 2), [[3.0], [0.0]], [[0.0], [1.0]])
>>> b = cols.to_batch(t.layout)
>>> b.sparse.keys(), b.sparse.values().tolist()[:2]
(['C1', 'C2'], [1, 2])
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dist_ctr.data.columns import _BLOCK_ROWS, BatchLayout, Columns, _write_rows, concat_lists  # noqa: F401
from dist_ctr.data.config import DenseTransformConfig
from dist_ctr.data.errors import BadValueError, DataError, SchemaMismatchError
from dist_ctr.data.reports import FillReport
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat, stable_hash

__all__ = ["BatchLayout", "Columns", "TableTransform", "concat_lists", "load_vocabulary", "dense_transform"]


# ---- helpers ------------------------------------------------------------------------------------------------
def load_vocabulary(url: str, storage_options: Optional[Mapping[str, Any]] = None) -> pa.Array:
    """Read a vocabulary file (one value per line, UTF-8) from any fsspec URL. Duplicates are an error."""
    import fsspec

    try:
        with fsspec.open(url, "rt", encoding="utf-8", **dict(storage_options or {})) as f:
            lines = [ln.rstrip("\r\n") for ln in f]
    except FileNotFoundError:
        raise DataError("vocabulary file not found", file=url) from None
    while lines and lines[-1] == "":
        lines.pop()
    arr = pa.array(lines, type=pa.string())
    if len(pc.unique(arr)) != len(arr):
        raise DataError("vocabulary has duplicate values", file=url)
    return arr


def dense_transform(x: np.ndarray, kind: str, stats: Optional[Sequence[float]] = None) -> np.ndarray:
    """Apply a dense transform in place to a float32 array (after fill-NA).

    >>> dense_transform(np.array([-2.0, 0.0, np.e - 1], np.float32), "log").round(4).tolist()
    [0.0, 0.0, 1.0]
    >>> dense_transform(np.array([0.0, 5.0, 20.0], np.float32), "minmax", (0.0, 10.0)).tolist()
    [0.0, 0.5, 1.0]
    """
    if kind == "log":
        np.maximum(x, 0, out=x)
        np.log1p(x, out=x)
    elif kind == "minmax":
        lo, hi = float(stats[0]), float(stats[1])  # type: ignore[index]
        if hi > lo:
            x -= lo
            x *= 1.0 / (hi - lo)
            np.clip(x, 0.0, 1.0, out=x)
        else:
            x[...] = 0.0
    return x


def _is_str(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or (pa.types.is_dictionary(t) and _is_str(t.value_type)))


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _combine(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


# ---- the transform ------------------------------------------------------------------------------------------
class TableTransform:
    """Schema-driven conversion of Arrow tables (one row group at a time) to :class:`Columns`.

    Args:
        schema (FeatureSchema): features and labels.
        dense (DenseTransformConfig | None): dense fill / transform.
        vocabularies (dict[str, pa.Array] | None): feature name -> vocabulary values (see :func:`load_vocabulary`).
        row_id_column (str | None): the row-id column, if the data has one.
        labels_present (bool): read the schema's label columns (else labels are 0).
        on_non_finite (str): ``"error"`` (an infinite dense value, or one beyond float32, raises
            :class:`BadValueError`) or ``"fill"`` (it becomes ``fill_na`` and is counted in :attr:`filled`).
    """

    def __init__(self, schema: FeatureSchema, dense: Optional[DenseTransformConfig] = None,
                 vocabularies: Optional[Mapping[str, pa.Array]] = None, row_id_column: Optional[str] = None,
                 labels_present: bool = True, on_non_finite: str = "error") -> None:
        if on_non_finite not in ("error", "fill"):
            raise ValueError(f"on_non_finite: must be 'error' or 'fill', got {on_non_finite!r}")
        self.on_non_finite = on_non_finite
        self.filled = FillReport()
        self.schema = schema
        self.dense_cfg = dense or DenseTransformConfig()
        self.vocabularies = dict(vocabularies or {})
        self.row_id_column = row_id_column
        self.labels_present = labels_present
        names = {f.name for f in schema.features}
        for name in list(self.vocabularies) + list(self.dense_cfg.per_feature) + list(self.dense_cfg.stats):
            if name not in names:
                raise DataError(f"data config names feature {name!r}, which is not in the schema "
                                f"(features: {sorted(names)})")
        for name, voc in self.vocabularies.items():
            f = schema.feature(name)
            if isinstance(f, DenseFeat):
                raise DataError(f"vocabulary given for dense feature {name!r}")
            if len(voc) + 1 > f.vocabulary_size:
                raise DataError(f"feature {name!r}: vocabulary of {len(voc)} values needs vocabulary_size >= "
                                f"{len(voc) + 1} (id 0 is the out-of-vocabulary bucket), schema has {f.vocabulary_size}")
        for f in schema.dense_features:
            if self.dense_cfg.transform_of(f.name) == "minmax" and f.name not in self.dense_cfg.stats:
                raise DataError(f"dense feature {f.name!r} uses 'minmax' but data.dense.stats has no [min, max] for it")
        order, n_single, n_lists = [], 0, 0
        for f in schema.sparse_features:
            if isinstance(f, VarLenSparseFeat):
                order.append((1, n_lists))
                n_lists += 1
            else:
                order.append((0, n_single))
                n_single += 1
        self.layout = BatchLayout(tuple(schema.sparse_names), tuple(order), schema.n_dense, n_single, n_lists,
                                  len(schema.labels))
        self._dense_kinds = [self.dense_cfg.transform_of(f.name) for f in schema.dense_features]
        self._all_log = bool(self._dense_kinds) and all(k == "log" for k in self._dense_kinds)

    # ---- columns and types ----------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """Columns read from each file."""
        cols = [f.name for f in self.schema.features]
        if self.labels_present:
            cols += self.schema.label_names
        if self.row_id_column:
            cols.append(self.row_id_column)
        return cols

    def check_schema(self, file: str, arrow_schema: pa.Schema, labels: bool = True, row_id: bool = True) -> None:
        """Raise :class:`SchemaMismatchError` naming the file and column when a column is missing or unusable."""
        def typ(name: str) -> pa.DataType:
            idx = arrow_schema.get_field_index(name)
            if idx < 0:
                raise SchemaMismatchError(f"missing column (file has: {arrow_schema.names})", file=file, column=name)
            return arrow_schema.field(idx).type

        def bad(name: str, t: pa.DataType, need: str) -> SchemaMismatchError:
            return SchemaMismatchError(f"has type {t}, but {need}", file=file, column=name)

        for f in self.schema.features:
            t = typ(f.name)
            if isinstance(f, DenseFeat):
                if f.dimension == 1:
                    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                        raise bad(f.name, t, "dense feature needs a numeric column")
                elif not (_is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))):
                    raise bad(f.name, t, f"dense feature of dimension {f.dimension} needs a list of numbers")
                continue
            if isinstance(f, VarLenSparseFeat):
                if not _is_list(t):
                    raise bad(f.name, t, "a VarLenSparseFeat needs a list column")
                t = t.value_type
            self._check_id_type(file, f, t, bad)
        if labels and self.labels_present:
            for name in self.schema.label_names:
                t = typ(name)
                if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                    raise bad(name, t, "labels must be numeric")
        if row_id and self.row_id_column:
            t = typ(self.row_id_column)
            if not pa.types.is_integer(t):
                raise bad(self.row_id_column, t, "the row-id column must hold integers")

    def _check_id_type(self, file: str, f: SparseFeat | VarLenSparseFeat, t: pa.DataType, bad: Any) -> None:
        if f.name in self.vocabularies or f.use_hash:
            if not (pa.types.is_integer(t) or _is_str(t)):
                raise bad(f.name, t, "hashed / vocabulary features need integer or string values")
        elif not pa.types.is_integer(t):
            raise bad(f.name, t, f"feature {f.name!r} (use_hash=False) needs integer ids in [0, "
                                 f"{f.vocabulary_size}); set use_hash or give a vocabulary")

    # ---- values ---------------------------------------------------------------------------------------
    def _ids(self, f: SparseFeat | VarLenSparseFeat, arr: pa.Array, where: dict[str, Any]) -> np.ndarray:
        """Raw values of one feature -> int64 ids in ``[0, vocabulary_size)``."""
        return self._raw_ids(f, arr, where).astype(np.int64, copy=False)

    def _raw_ids(self, f: SparseFeat | VarLenSparseFeat, arr: pa.Array, where: dict[str, Any]) -> np.ndarray:
        """Raw values of one feature -> ids in ``[0, vocabulary_size)``, in the column's own integer dtype when it
        holds ids already (zero-copy; the caller casts while copying), else int64."""
        V = f.vocabulary_size
        if f.name in self.vocabularies:
            vals = arr if _is_str(arr.type) else pc.cast(arr, pa.string())
            if pa.types.is_dictionary(vals.type):
                vals = vals.dictionary_decode()
            idx = pc.index_in(vals, value_set=self.vocabularies[f.name])
            return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
        if f.use_hash:
            if pa.types.is_integer(arr.type) and arr.null_count:
                raise BadValueError(f"{arr.null_count} null id(s) in a hashed integer column; fill them first", **where)
            return stable_hash(arr, V)
        if arr.null_count:
            raise BadValueError(f"{arr.null_count} null id(s); ids must be integers in [0, {V})", **where)
        ids = arr.to_numpy(zero_copy_only=False)
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())  # host values (numpy)
            if lo < 0:
                raise BadValueError(f"negative id {lo}; ids must lie in [0, {V}) (set use_hash for raw values)", **where)
            if hi >= V:
                raise BadValueError(f"id {hi} >= vocabulary_size {V} of feature {f.name!r}", **where)
        return ids

    def empty(self, n: int) -> Columns:
        """An uninitialised block of ``n`` rows (filled by :meth:`transform` with ``out=``)."""
        lay = self.layout
        return Columns(np.empty((n, lay.n_dense), np.float32), np.empty((n, lay.n_single), np.int64),
                       [], np.empty((n, lay.n_tasks), np.float32), np.empty(n, np.int64))

    def transform(self, table: pa.Table, file: Optional[str] = None, row_group: Optional[int] = None,
                  positions: Optional[np.ndarray] = None, out: Optional[Columns] = None, offset: int = 0) -> Columns:
        """Transform one table (a row group or a slice of one).

        Each column is converted once (zero-copy where Arrow allows) and checked; the row-major ``ids`` and
        ``dense`` blocks are then filled through a cache-sized key-major scratch (:func:`_write_rows`), which is
        several times faster than writing ``F1`` strided columns one by one.

        Args:
            table (pa.Table): the columns of :attr:`columns` (labels / row id may be absent when not used).
            file (str | None): for error messages.
            row_group (int | None): for error messages.
            positions (np.ndarray | None): positional row ids, used when there is no row-id column.
            out (Columns | None): a block (see :meth:`empty`) to write rows ``[offset, offset + N)`` of, instead of
                allocating (saves a copy when a window is assembled from several row groups).
            offset (int): first row of ``out`` to write.

        Returns:
            Columns: ``N`` rows (views into ``out`` when given; the list columns are always new).
        """
        n = table.num_rows
        if out is None:
            out, offset = self.empty(n), 0
        ids = out.ids[offset : offset + n]
        dense = out.dense[offset : offset + n]
        lists: list[tuple[np.ndarray, np.ndarray]] = []
        id_cols: list[np.ndarray] = []  # F1 x (N,) integer ids, any integer dtype
        dense_cols: list[np.ndarray] = []  # n_dense x (N,) numbers, any numeric dtype
        for f in self.schema.features:
            where = {"file": file, "row_group": row_group, "column": f.name}
            col = _combine(table.column(f.name))
            if isinstance(f, DenseFeat):
                x = self._dense(f, col, n, where)  # (N,) or (N, dim)
                dense_cols.extend([x] if x.ndim == 1 else [x[:, i] for i in range(f.dimension)])
            elif isinstance(f, VarLenSparseFeat):
                lists.append(self._list(f, col, where))
            else:
                id_cols.append(self._raw_ids(f, col, where))
        if id_cols:
            _write_rows(ids, id_cols)
        if dense_cols:
            filled: dict[str, int] = {}
            _write_rows(dense, dense_cols, lambda block: self._finish_dense(block, file, row_group, filled))
            for name, k in filled.items():
                self.filled.add(file, row_group, name, k)
        labels = out.labels[offset : offset + n]
        self._labels(table, labels, file, row_group)
        row_ids = out.row_ids[offset : offset + n]
        if self.row_id_column:
            rcol = _combine(table.column(self.row_id_column))
            if rcol.null_count:
                raise BadValueError(f"{rcol.null_count} null row id(s)", file=file, row_group=row_group,
                                    column=self.row_id_column)
            row_ids[:] = rcol.to_numpy(zero_copy_only=False)
        elif positions is not None:
            row_ids[:] = positions
        else:
            row_ids[:] = np.arange(n, dtype=np.int64)
        return Columns(dense, ids, lists, labels, row_ids)

    def _finish_dense(self, block: np.ndarray, file: Optional[str] = None, row_group: Optional[int] = None,
                      filled: Optional[dict[str, int]] = None) -> None:
        """Fill-NA (NaN -> ``fill_na``), the ``on_non_finite`` policy for infinities (float64 values beyond
        float32's range are infinite here) and the dense transforms, in place, on a key-major block
        ``(n_dense, b)``; ``filled`` accumulates per-column counts of filled infinities."""
        finite = np.isfinite(block)
        if not finite.all():  # the common case costs one pass, as the NaN check alone would
            nan = np.isnan(block)
            if not (finite | nan).all():
                self._infinities(block, ~(finite | nan), file, row_group, filled)
            block[nan] = np.float32(self.dense_cfg.fill_na)
        if self._all_log:
            dense_transform(block, "log")  # one pass over the whole block
        else:
            for kind, (lo, hi, name) in zip(self._dense_kinds, self._dense_offsets()):
                if kind != "none":
                    dense_transform(block[lo:hi], kind, self.dense_cfg.stats.get(name))
        if self.dense_cfg.scale != 1.0:
            block *= np.float32(self.dense_cfg.scale)

    def _infinities(self, block: np.ndarray, inf: np.ndarray, file: Optional[str], row_group: Optional[int],
                    filled: Optional[dict[str, int]]) -> None:
        """Raise naming the first dense column holding an infinity (``"error"``), or fill and count them."""
        for lo, hi, name in self._dense_offsets():
            k = int(inf[lo:hi].sum())  # host value (numpy)
            if not k:
                continue
            if self.on_non_finite == "error":
                v = float(block[lo:hi][inf[lo:hi]][0])  # host value (numpy)
                raise BadValueError(f"{k} non-finite dense value(s) (first: {v}); fix the data or set "
                                    "on_non_finite: fill", file=file, row_group=row_group, column=name)
            block[lo:hi][inf[lo:hi]] = np.float32(self.dense_cfg.fill_na)
            if filled is not None:
                filled[name] = filled.get(name, 0) + k

    def _dense_offsets(self) -> list[tuple[int, int, str]]:
        out, d = [], 0
        for f in self.schema.dense_features:
            out.append((d, d + f.dimension, f.name))
            d += f.dimension
        return out

    def _dense(self, f: DenseFeat, col: pa.Array, n: int, where: dict[str, Any]) -> np.ndarray:
        """One dense feature's values with nulls filled: ``(N,)`` (dimension 1, any numeric dtype) or
        ``(N, dim)`` float32; NaNs are left for :meth:`_finish_dense`."""
        fill = self.dense_cfg.fill_na
        if f.dimension == 1:
            if col.null_count:
                if not pa.types.is_floating(col.type):  # integers / booleans: keep a fractional fill_na
                    col = pc.cast(col, pa.float32(), safe=False)
                col = pc.fill_null(col, fill)
            x = col.to_numpy(zero_copy_only=False)  # (N,) any numeric dtype, cast when written
        else:
            lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
            if col.null_count:
                bad_rows = (lens != f.dimension) & ~col.is_null().to_numpy(zero_copy_only=False)
            else:
                bad_rows = lens != f.dimension
            if bad_rows.any():
                i = int(np.flatnonzero(bad_rows)[0])  # host value (numpy)
                raise BadValueError(f"row {i} has {int(lens[i])} values, dense feature needs {f.dimension}", **where)
            if col.null_count:
                x = np.full((n, f.dimension), fill, np.float32)
                valid = ~col.is_null().to_numpy(zero_copy_only=False)
                vals = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
                x[valid] = vals.reshape(-1, f.dimension)  # (N_valid, dim)
            else:
                x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, f.dimension)  # (N, dim)
        return x  # NaNs and infinities are handled by _finish_dense

    def _list(self, f: VarLenSparseFeat, col: pa.Array, where: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        lens = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = col.flatten()
        if flat.null_count:
            raise BadValueError(f"{flat.null_count} null id(s) inside lists", **where)
        vals = self._ids(f, flat, where)
        if lens.size and lens.max() > f.maxlen:
            starts = np.zeros(lens.size, np.int64)
            np.cumsum(lens[:-1], out=starts[1:])
            pos = np.arange(vals.size, dtype=np.int64) - np.repeat(starts, lens)
            vals = vals[pos < f.maxlen]
            lens = np.minimum(lens, f.maxlen)
        offsets = np.zeros(lens.size + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        return offsets, vals

    def _labels(self, table: pa.Table, out: np.ndarray, file: Optional[str], row_group: Optional[int]) -> np.ndarray:
        if not self.labels_present:
            out[...] = 0.0
            return out
        for t, lab in enumerate(self.schema.labels):
            col = _combine(table.column(lab.name))
            where = {"file": file, "row_group": row_group, "column": lab.name}
            if col.null_count:
                raise BadValueError(f"{col.null_count} null label(s)", **where)
            y = col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            if lab.task == "binary":
                bad = (y != 0) & (y != 1)
                if bad.any():
                    raise BadValueError(f"binary label must be 0 or 1, got {float(y[np.argmax(bad)])}", **where)
            elif not np.isfinite(y).all():
                raise BadValueError("regression label is not finite", **where)
            out[:, t] = y
        return out
