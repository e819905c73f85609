"""Deterministic embedding-table init that any process can compute for any slice of a table.

Rows are drawn from ``N(0, std ** 2)`` when the model gives an ``init_std`` (DeepCTR's embedding init, whose
default ``1e-4`` every zoo model keeps), else uniform in ``±sqrt(1 / num_embeddings)`` (TorchRec's default), in
fixed blocks of ``BLOCK_ROWS`` rows, each from a generator seeded by ``(seed, table name, block index)``. So an unsharded model
(:func:`dist_ctr.sparse.materialize`) and the same model sharded table-, row- or column-wise over any number of
ranks start from identical weights, and no rank ever builds a whole table it does not own.

>>> a = table_init(0, "t", 100, 4, 0, 100)
>>> torch.equal(a[10:30], table_init(0, "t", 100, 4, 10, 30))
True
>>> n = table_init(0, "t", 100_000, 8, 0, 100_000, std=1e-4)
>>> round(float(n.std()) * 1e4, 2), torch.equal(n[70_000:70_010], table_init(0, "t", 100_000, 8, 70_000, 70_010, std=1e-4))
(1.0, True)
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ["BLOCK_ROWS", "ColumnTail", "TableInit", "embedding_init_std", "table_init", "table_inits"]

BLOCK_ROWS = 65_536


def embedding_init_std(module: nn.Module) -> Optional[float]:
    """The embedding ``init_std`` a model declares (its ``embedding_init_std``), or ``None`` (TorchRec's uniform).

    Looked up on ``module`` and its submodules (a ``CTRTask`` holds the model); the first one found wins.
    """
    for m in module.modules():
        std = getattr(m, "embedding_init_std", None)
        if std is not None:
            if not float(std) > 0:
                raise ValueError(f"{type(m).__name__}: init_std must be > 0, got {std}")
            return float(std)
    return None


class ColumnTail(NamedTuple):
    """The last ``columns`` columns of a table, initialised as the table ``table`` of that width would be (a linear
    part's weights carried in the embedding rows, see :class:`dist_ctr.sparse.SparseArch`)."""

    table: str
    columns: int
    std: Optional[float]


class TableInit(NamedTuple):
    """How one table starts: ``N(0, std ** 2)`` (``None``: uniform) and an optional :class:`ColumnTail`."""

    std: Optional[float]
    tail: Optional[ColumnTail] = None


def table_inits(module: nn.Module) -> dict[str, TableInit]:
    """The :class:`TableInit` of every TorchRec table in ``module`` (unsharded).

    The std is the model's ``init_std`` times the collection's ``init_std_scale`` attribute (default 1; the linear
    parts' 4-wide tables, read as the mean of their 4 columns, use 2 so the scalar they hold is
    ``N(0, init_std ** 2)``). A collection's ``column_tails`` attribute (table -> ``(tail table name, columns,
    std scale)``) gives a table trailing columns drawn as that tail table, so a model that carries its linear
    weights in its embedding rows starts from the weights of the model that keeps them apart.
    """
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    std = embedding_init_std(module)
    out: dict[str, TableInit] = {}
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            names = [c.name for c in m.embedding_bag_configs()]
        elif isinstance(m, EmbeddingCollection):
            names = [c.name for c in m.embedding_configs()]
        else:
            continue
        scale = float(getattr(m, "init_std_scale", 1.0))
        tails: dict[str, tuple[str, int, float]] = getattr(m, "column_tails", {})
        for n in names:
            tail = None
            if n in tails:
                tname, cols, tscale = tails[n]
                tail = ColumnTail(tname, cols, None if std is None else std * tscale)
            out[n] = TableInit(None if std is None else std * scale, tail)
    return out


def table_init(seed: int, table: str, rows: int, dim: int, row_start: int, row_end: int,
               std: Optional[float] = None, tail: Optional[ColumnTail] = None) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of table ``table``'s initial weights. Returns ``Tensor (R, dim)`` float32.

    ``std``: draw ``N(0, std ** 2)``; ``None``: uniform ``±sqrt(1 / rows)``. ``tail``: the last ``tail.columns``
    columns are rows of the table ``tail.table`` drawn with ``tail.std``.
    """
    if tail is not None:
        head = table_init(seed, table, rows, dim - tail.columns, row_start, row_end, std)
        return torch.cat([head, table_init(seed, tail.table, rows, tail.columns, row_start, row_end, tail.std)], 1)
    bound = float((1.0 / rows) ** 0.5)
    out = torch.empty(max(0, row_end - row_start), dim)
    if row_end <= row_start:
        return out
    tkey = int.from_bytes(hashlib.sha256(table.encode()).digest()[:4], "little")
    for b in range(row_start // BLOCK_ROWS, (row_end - 1) // BLOCK_ROWS + 1):
        lo, hi = b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, rows)
        g = torch.Generator().manual_seed((seed * 1_000_003 + tkey * 7919 + b) % (2**63 - 1))
        if std is None:
            w = torch.rand(hi - lo, dim, generator=g) * (2 * bound) - bound  # (block rows, dim)
        else:
            w = torch.randn(hi - lo, dim, generator=g) * std  # (block rows, dim)
        s, e = max(lo, row_start), min(hi, row_end)
        out[s - row_start : e - row_start] = w[s - lo : e - lo]
    return out
