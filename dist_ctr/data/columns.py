"""Blocks of transformed rows (:class:`Columns`) and their assembly into a ``CTRBatch``.

Notation: ``N`` rows of a block, ``F1`` single-valued sparse features, ``n_dense`` dense width, ``T`` tasks.

>>> import numpy as np
>>> c = Columns.pad(3, n_dense=1, n_single=2, n_lists=0, n_tasks=1)
>>> len(c), c.row_ids.tolist(), c.slice(1, 3).ids.shape
(3, [-1, -1, -1], (2, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch

__all__ = ["BatchLayout", "Columns", "concat_lists"]

@dataclass
class Columns:
    """A block of ``N`` transformed rows, column-major.

    Args:
        dense (np.ndarray): ``(N, n_dense)`` float32.
        ids (np.ndarray): ``(N, F1)`` int64, single-valued sparse features in schema order (row-major: a shuffle
            gathers whole rows, several times faster than gathering ``F1`` strided columns).
        lists (list[tuple[np.ndarray, np.ndarray]]): per multi-valued feature ``(offsets (N + 1,) int64,
            values int64)``.
        labels (np.ndarray): ``(N, T)`` float32.
        row_ids (np.ndarray): ``(N,)`` int64; ``-1`` marks pad rows.
    """

    dense: np.ndarray
    ids: np.ndarray
    lists: list[tuple[np.ndarray, np.ndarray]]
    labels: np.ndarray
    row_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.row_ids.shape[0])

    def take(self, idx: np.ndarray) -> "Columns":
        """Rows ``idx`` (a permutation slice) as a new block."""
        return Columns(np.take(self.dense, idx, axis=0), np.take(self.ids, idx, axis=0),
                       [_take_list(o, v, idx) for o, v in self.lists], np.take(self.labels, idx, axis=0),
                       np.take(self.row_ids, idx))

    def slice(self, lo: int, hi: int) -> "Columns":
        lists = []
        for o, v in self.lists:
            lists.append((o[lo : hi + 1] - o[lo], v[o[lo] : o[hi]]))
        return Columns(self.dense[lo:hi], self.ids[lo:hi], lists, self.labels[lo:hi], self.row_ids[lo:hi])

    @staticmethod
    def concat(blocks: Sequence["Columns"]) -> "Columns":
        if len(blocks) == 1:
            return blocks[0]
        return Columns(
            np.concatenate([b.dense for b in blocks]),
            np.concatenate([b.ids for b in blocks]),
            concat_lists([b.lists for b in blocks]),
            np.concatenate([b.labels for b in blocks]),
            np.concatenate([b.row_ids for b in blocks]),
        )

    @staticmethod
    def pad(n: int, n_dense: int, n_single: int, n_lists: int, n_tasks: int) -> "Columns":
        """``n`` pad rows: zero dense, id 0, empty lists, label 0, ``row_ids == -1``."""
        return Columns(
            np.zeros((n, n_dense), np.float32),
            np.zeros((n, n_single), np.int64),
            [(np.zeros(n + 1, np.int64), np.zeros(0, np.int64)) for _ in range(n_lists)],
            np.zeros((n, n_tasks), np.float32),
            np.full(n, -1, np.int64),
        )

    def to_batch(self, layout: "BatchLayout") -> CTRBatch:
        """One ``CTRBatch``: a key-major KJT (keys = schema sparse names), dense ``(B, n_dense)``, labels ``(B, T)``."""
        n = len(self)
        if not self.lists:
            values = np.ascontiguousarray(self.ids.T).reshape(-1)  # (F1 * B,) key-major
            lengths = np.ones(values.shape[0], np.int32)
        else:
            vparts, lparts = [], []
            for kind, j in layout.order:
                if kind == 0:
                    vparts.append(self.ids[:, j])
                    lparts.append(np.ones(n, np.int32))
                else:
                    o, v = self.lists[j]
                    vparts.append(v)
                    lparts.append(np.diff(o).astype(np.int32))
            values = np.concatenate(vparts) if vparts else np.zeros(0, np.int64)
            lengths = np.concatenate(lparts) if lparts else np.zeros(0, np.int32)
        kjt = KeyedJaggedTensor(keys=list(layout.keys), values=torch.from_numpy(values),
                                lengths=torch.from_numpy(lengths), stride=n)
        return CTRBatch(
            dense=torch.from_numpy(np.ascontiguousarray(self.dense)),
            sparse=kjt,
            labels=torch.from_numpy(np.ascontiguousarray(self.labels)),
            row_ids=torch.from_numpy(np.ascontiguousarray(self.row_ids)),
        )


def concat_lists(parts: Sequence[list[tuple[np.ndarray, np.ndarray]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Concatenate the jagged columns of several blocks (one ``(offsets, values)`` list per block)."""
    if len(parts) == 1:
        return list(parts[0])
    lists = []
    for j in range(len(parts[0])):
        offs, vals, base = [np.zeros(1, np.int64)], [], 0
        for p in parts:
            o, v = p[j]
            offs.append(o[1:] + base)
            vals.append(v)
            base += int(o[-1])  # host value (numpy)
        lists.append((np.concatenate(offs), np.concatenate(vals)))
    return lists


def _take_list(offsets: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` of a jagged column, vectorised."""
    lens = (offsets[1:] - offsets[:-1])[idx]
    new_off = np.zeros(len(idx) + 1, np.int64)
    np.cumsum(lens, out=new_off[1:])
    total = int(new_off[-1])  # host value (numpy)
    if total == 0:
        return new_off, np.zeros(0, np.int64)
    src_start = np.repeat(offsets[:-1][idx], lens)
    pos = np.arange(total, dtype=np.int64) - np.repeat(new_off[:-1], lens)
    return new_off, values[src_start + pos]


@dataclass(frozen=True)
class BatchLayout:
    """Where each KJT key's ids live in a :class:`Columns`: ``(0, j)`` -> ``ids[j]``, ``(1, j)`` -> ``lists[j]``."""

    keys: tuple[str, ...]
    order: tuple[tuple[int, int], ...]
    n_dense: int
    n_single: int
    n_lists: int
    n_tasks: int



_BLOCK_ROWS = 16_384  # rows per key-major scratch block in _write_rows: (F1, 16384) int64 is about 3 MB


def _write_rows(out: np.ndarray, columns: Sequence[np.ndarray],
                finish: Optional[Callable[[np.ndarray], None]] = None) -> None:
    """Fill a row-major block ``out`` ``(N, C)`` from ``C`` columns of ``N`` values each.

    Goes through a key-major scratch ``(C, b)`` of :data:`_BLOCK_ROWS` rows: contiguous copies in (casting to
    ``out.dtype``), an optional in-place ``finish(scratch)`` on contiguous rows, then one transposing copy out.

    >>> out = np.empty((3, 2), np.int64)
    >>> _write_rows(out, [np.array([1, 2, 3], np.int32), np.array([4, 5, 6])])
    >>> out.tolist()
    [[1, 4], [2, 5], [3, 6]]
    """
    n, c = out.shape
    scratch = np.empty((c, min(n, _BLOCK_ROWS)), out.dtype)
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(n, lo + _BLOCK_ROWS)
        block = scratch[:, : hi - lo]  # (C, b)
        for j, col in enumerate(columns):
            block[j] = col[lo:hi]
        if finish is not None:
            finish(block)
        out[lo:hi] = block.T  # (b, C)
