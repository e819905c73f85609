"""DeepCTR-style inputs (a dict of column name -> array / pandas Series) -> :class:`CTRBatch` es.

Notation: ``N`` rows, ``B`` batch size, ``L`` padded width of a var-len column, ``T`` tasks.

Columns are validated once (:func:`prepare`), then cut into batches by row index (:class:`BatchStream`), with a
fresh seeded permutation per epoch when shuffling. No loop runs per row; per batch there is one gather for all
single-id features and one per var-len feature.

Input conventions (DeepCTR-Torch's):

- ``SparseFeat``: integer ids ``(N,)`` in ``[0, vocabulary_size)`` (floats holding whole numbers are accepted);
  with ``use_hash=True`` any raw values (strings, ints), hashed with :func:`dist_ctr.schema.stable_hash`.
- ``VarLenSparseFeat``: a padded int array ``(N, L)`` (or a Series of equal-length arrays). Without
  ``length_name`` a row's ids are its non-zero entries (0 is padding, DeepCTR's ``mask_zero`` convention);
  with ``length_name`` the first ``x[length_name]`` entries. At most ``maxlen`` ids per row are kept.
- ``DenseFeat``: floats ``(N,)`` or ``(N, dimension)``.
- labels ``y``: ``(N,)`` or ``(N, T)``.

>>> import numpy as np
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat
>>> s = FeatureSchema((SparseFeat("a", 5), VarLenSparseFeat(SparseFeat("h", 9), maxlen=3), DenseFeat("x")))
>>> data = prepare(s, {"a": [1, 4], "h": [[3, 0, 5], [0, 0, 0]], "x": [0.5, 1.0]}, y=[1, 0])
>>> b = data.batch(np.arange(2))
>>> b.sparse.values().tolist(), b.sparse.lengths().tolist()
([1, 4, 3, 5], [1, 1, 2, 0])
>>> tuple(b.dense.shape), tuple(b.labels.shape)
((2, 1), (2, 1))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.autograd.profiler import record_function
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat, stable_hash


def _array(value: Any) -> np.ndarray:
    """pandas Series / DataFrame / list / array -> ndarray (no copy when possible)."""
    if hasattr(value, "to_numpy"):
        return value.to_numpy()
    return np.asarray(value)


def _int_ids(name: str, a: np.ndarray) -> np.ndarray:
    """Integer ids as int64; floats must hold whole numbers; anything else is an error naming ``name``."""
    if a.dtype == np.bool_:
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or (a != np.floor(a)).any()):
            raise ValueError(f"feature {name!r}: ids must be whole numbers, got non-integer or NaN values")
        return a.astype(np.int64)
    raise TypeError(f"feature {name!r}: ids must be integers, got dtype {a.dtype} (label-encode the column, or "
                    "declare the SparseFeat with use_hash=True)")


def _hashed(name: str, a: np.ndarray, vocab: int) -> np.ndarray:
    try:
        return stable_hash(a, vocab)
    except (TypeError, ValueError) as e:  # pyarrow's errors subclass these
        raise TypeError(f"feature {name!r} (use_hash=True): cannot hash its values ({e}); fill missing values "
                        "first") from None


def _check_range(name: str, ids: np.ndarray, vocab: int) -> None:
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())  # host sync (numpy)
    if lo < 0:
        raise ValueError(f"feature {name!r}: negative id {lo}; ids must lie in [0, {vocab})")
    if hi >= vocab:
        raise ValueError(f"feature {name!r}: max id {hi} >= vocabulary_size {vocab}; ids must lie in [0, {vocab}) "
                         "(enlarge vocabulary_size, or use use_hash=True)")


def _padded(name: str, value: Any) -> np.ndarray:
    """A var-len column -> 2-D array ``(N, L)``."""
    a = _array(value)
    if a.dtype == object:
        try:
            a = np.stack([np.asarray(r) for r in a]) if len(a) else np.zeros((0, 0), np.int64)
        except ValueError:
            raise ValueError(f"feature {name!r}: rows have different lengths; pad them to one width first "
                             "(e.g. tf.keras pad_sequences(..., padding='post'), 0 = padding)") from None
    if a.ndim == 1:
        raise ValueError(f"feature {name!r}: a VarLenSparseFeat column must be 2-D (N, L) padded ids, got shape "
                         f"{a.shape}")
    if a.ndim != 2:
        raise ValueError(f"feature {name!r}: expected padded ids of shape (N, L), got {a.shape}")
    return a


@dataclass
class PreparedData:
    """Validated columns, ready to be cut into batches.

    Attributes:
        schema (FeatureSchema): the model's features (KJT keys = ``schema.sparse_names``).
        n_rows (int): ``N``.
        dense (np.ndarray): ``(N, n_dense)`` float32.
        single_fm (np.ndarray): ``(F1, N)`` int64 ids of the single-id sparse features, feature-major (the
            KJT's key-major order, so a batch is one gather).
        varlen (dict[str, tuple[np.ndarray, np.ndarray]]): name -> (left-aligned ids ``(N, L)``, lengths ``(N,)``).
        labels (np.ndarray | None): ``(N, T)`` float32.
    """

    schema: FeatureSchema
    n_rows: int
    dense: np.ndarray
    single_fm: np.ndarray
    varlen: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    labels: Optional[np.ndarray] = None

    def batch(self, rows: np.ndarray | slice) -> CTRBatch:
        """The rows ``rows`` (``(B,)`` indices or a slice) as one :class:`CTRBatch`.

        Vectorised: one gather of all single-id features straight into the KJT's key-major layout ``(F1, B)``,
        one masked gather per var-len feature; lengths and offsets of single-id keys are ``1`` and ``0..F1*B``.
        """
        with record_function("dc:data.batch"):
            return self._batch(rows)

    def _batch(self, rows: np.ndarray | slice) -> CTRBatch:
        dense = np.ascontiguousarray(self.dense[rows])  # (B, n_dense)
        B = dense.shape[0]
        single_fm = self.single_fm[:, rows]  # (F1, B) key-major
        if not self.varlen:
            values = torch.from_numpy(np.ascontiguousarray(single_fm).reshape(-1))  # (F1 * B,)
            n = values.numel()
            lengths = torch.ones(n, dtype=torch.int32)
            offsets = torch.arange(n + 1, dtype=torch.int32)
        else:
            single_pos = {f.name: i for i, f in enumerate(self.schema.single_sparse)}
            ones = np.ones(B, dtype=np.int32)
            vals: list[np.ndarray] = []
            lens: list[np.ndarray] = []
            for f in self.schema.sparse_features:
                if f.name in single_pos:
                    vals.append(single_fm[single_pos[f.name]])
                    lens.append(ones)
                else:
                    ids, lengths_all = self.varlen[f.name]
                    ids_b, len_b = ids[rows], lengths_all[rows]  # (B, L), (B,)
                    mask = np.arange(ids_b.shape[1])[None, :] < len_b[:, None]  # (B, L)
                    vals.append(ids_b[mask])
                    lens.append(len_b)
            values = torch.from_numpy(np.concatenate(vals) if vals else np.zeros(0, np.int64))
            lengths = torch.from_numpy(np.concatenate(lens) if lens else np.zeros(0, np.int32))
            offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int32)
            torch.cumsum(lengths, 0, out=offsets[1:])
        kjt = KeyedJaggedTensor(keys=self.schema.sparse_names, values=values, lengths=lengths, offsets=offsets,
                                stride=B)
        T = self.labels.shape[1] if self.labels is not None else max(1, len(self.schema.labels))
        labels = np.ascontiguousarray(self.labels[rows]) if self.labels is not None else np.zeros((B, T), np.float32)
        return CTRBatch(torch.from_numpy(dense), kjt, torch.from_numpy(labels))

    def subset(self, rows: np.ndarray) -> "PreparedData":
        """A view on some rows (``validation_split``)."""
        return PreparedData(
            self.schema, len(rows), self.dense[rows], np.ascontiguousarray(self.single_fm[:, rows]),
            {k: (ids[rows], ln[rows]) for k, (ids, ln) in self.varlen.items()},
            None if self.labels is None else self.labels[rows],
        )


def prepare(
    schema: FeatureSchema,
    x: Mapping[str, Any] | Sequence[Any],
    y: Any = None,
    feature_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> PreparedData:
    """Validate DeepCTR-style inputs against ``schema``.

    Args:
        schema (FeatureSchema): the model's features and labels.
        x (Mapping | Sequence): column name -> values; or a list of arrays in ``feature_names`` order (DeepCTR
            accepts both). Extra keys are ignored.
        y: labels ``(N,)`` / ``(N, T)``; ``None`` for prediction.
        feature_names (Sequence[str] | None): order of a list ``x`` (``get_feature_names`` of the columns).
        label_names (Sequence[str] | None): names used in label errors (default: the schema's).

    Raises:
        KeyError: a column of the schema is missing from ``x`` (names it).
        ValueError: rows differ between columns, ids out of range, NaN labels / dense values (names the column).
        TypeError: ids that are not integers (names the feature).
    """
    with record_function("dc:data.prepare"):
        return _prepare(schema, x, y, feature_names, label_names)


def _prepare(schema: FeatureSchema, x: Mapping[str, Any] | Sequence[Any], y: Any,
             feature_names: Sequence[str] | None, label_names: Sequence[str] | None) -> PreparedData:
    if not isinstance(x, Mapping):
        if feature_names is None:
            raise TypeError("x must be a dict of column name -> values")
        x = list(x)
        if len(x) != len(feature_names):
            raise ValueError(f"x is a list of {len(x)} arrays but the model reads {len(feature_names)} inputs "
                             f"{list(feature_names)}; pass a dict of column name -> values")
        x = dict(zip(feature_names, x))
    n_rows: Optional[int] = None
    first = ""

    def fetch(name: str, what: str) -> np.ndarray:
        nonlocal n_rows, first
        if name not in x:
            raise KeyError(f"{what} {name!r} is missing from x (x has {sorted(map(str, x))})")
        a = _array(x[name])
        if n_rows is None:
            n_rows, first = int(a.shape[0]) if a.ndim else 1, name
        if a.ndim == 0 or a.shape[0] != n_rows:
            got = a.shape[0] if a.ndim else "a scalar"
            raise ValueError(f"column {name!r} has {got} rows but column {first!r} has {n_rows}")
        return a

    dense_cols: list[np.ndarray] = []
    singles: list[np.ndarray] = []
    varlen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in schema.features:
        if isinstance(f, DenseFeat):
            a = fetch(f.name, "dense feature")
            try:
                a = a.astype(np.float32).reshape(a.shape[0], -1)  # (N, d)
            except (TypeError, ValueError):
                raise TypeError(f"dense feature {f.name!r}: values must be numbers, got dtype {a.dtype}") from None
            if a.shape[1] != f.dimension:
                raise ValueError(f"dense feature {f.name!r}: expected {f.dimension} value(s) per row, got {a.shape[1]}")
            if not np.isfinite(a).all():
                raise ValueError(f"dense feature {f.name!r}: NaN or infinite values (fill them first, e.g. fillna(0))")
            dense_cols.append(a)
        elif isinstance(f, SparseFeat):
            a = fetch(f.name, "sparse feature")
            if a.ndim != 1:
                a = a.reshape(a.shape[0], -1)  # (N, 1) -> (N,) below
                if a.shape[1] != 1:
                    raise ValueError(f"sparse feature {f.name!r}: one id per row expected, got shape {a.shape}")
                a = a[:, 0]
            ids = _hashed(f.name, a, f.vocabulary_size) if f.use_hash else _int_ids(f.name, a)
            _check_range(f.name, ids, f.vocabulary_size)
            singles.append(ids)
        else:
            assert isinstance(f, VarLenSparseFeat)
            if f.weight_name is not None:
                raise NotImplementedError(f"feature {f.name!r}: weighted sequences (weight_name) are not supported "
                                          "by the compat facade yet")
            if f.use_hash:
                raise NotImplementedError(f"feature {f.name!r}: use_hash on a VarLenSparseFeat is not supported by "
                                          "the compat facade; label-encode the ids (0 = padding)")
            raw = _padded(f.name, fetch(f.name, "sparse feature"))
            ids = _int_ids(f.name, raw)
            L = ids.shape[1]
            if f.length_name is not None:
                ln = _int_ids(f.length_name, fetch(f.length_name, "length column").reshape(n_rows, -1)[:, 0])
                if ln.size and (ln.min() < 0 or ln.max() > L):
                    raise ValueError(f"length column {f.length_name!r}: lengths must lie in [0, {L}] (the width "
                                     f"of {f.name!r}), got [{ln.min()}, {ln.max()}]")
                valid = np.arange(L)[None, :] < ln[:, None]  # (N, L)
            else:
                valid = ids != 0  # (N, L) DeepCTR: 0 is padding
            order = np.argsort(~valid, axis=1, kind="stable")  # valid entries first, in their order
            packed = np.take_along_axis(np.where(valid, ids, 0), order, axis=1)  # (N, L) left-aligned
            lengths = np.minimum(valid.sum(axis=1), f.maxlen).astype(np.int32)  # (N,)
            packed = np.ascontiguousarray(packed[:, : f.maxlen])
            _check_range(f.name, packed[np.arange(packed.shape[1])[None, :] < lengths[:, None]], f.vocabulary_size)
            varlen[f.name] = (packed, lengths)
    if n_rows is None:
        n_rows = len(_array(y)) if y is not None else 0
    dense = np.concatenate(dense_cols, axis=1) if dense_cols else np.zeros((n_rows, 0), np.float32)
    single_fm = np.stack(singles, axis=0) if singles else np.zeros((0, n_rows), np.int64)  # (F1, N)
    labels = None
    if y is not None:
        labels = prepare_labels(y, n_rows, max(1, len(schema.labels)), label_names or schema.label_names)
    return PreparedData(schema, n_rows, dense, single_fm, varlen, labels)


def prepare_labels(y: Any, n_rows: int, num_tasks: int, label_names: Sequence[str]) -> np.ndarray:
    """Labels -> ``(N, T)`` float32; NaN or wrong shape is an error naming the label."""
    names = list(getattr(y, "columns", [])) or list(label_names) or [f"task{i}" for i in range(num_tasks)]
    if getattr(y, "name", None) is not None and not hasattr(y, "columns"):
        names = [str(y.name)]
    a = _array(y)
    try:
        a = a.astype(np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"label {names[0]!r}: values must be numbers, got dtype {a.dtype}") from None
    if a.ndim == 0 or a.shape[0] != n_rows:
        raise ValueError(f"labels y have {a.shape[0] if a.ndim else 0} rows but the features have {n_rows}")
    a = a.reshape(n_rows, -1)  # (N, T)
    if a.shape[1] != num_tasks:
        raise ValueError(f"labels y have {a.shape[1]} column(s) but the model has {num_tasks} task(s) {list(label_names)}")
    bad = ~np.isfinite(a)
    if bad.any():
        col = int(np.argmax(bad.any(axis=0)))
        row = int(np.argmax(bad[:, col]))
        name = names[col] if col < len(names) else f"task{col}"
        raise ValueError(f"label {name!r}: NaN or infinite value at row {row} ({int(bad[:, col].sum())} such rows)")
    return np.ascontiguousarray(a)


class BatchStream:
    """Batches of a :class:`PreparedData`, re-shuffled per epoch (``set_epoch``) when ``shuffle``.

    The engine calls ``set_epoch(e)`` before each epoch and ``len()`` for its progress bar.
    """

    def __init__(self, data: PreparedData, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.seed = data, int(batch_size), shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.data.n_rows + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[CTRBatch]:
        n = self.data.n_rows
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else None
        for s in range(0, n, self.batch_size):
            yield self.data.batch(slice(s, s + self.batch_size) if order is None else order[s : s + self.batch_size])
