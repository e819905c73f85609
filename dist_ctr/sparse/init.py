"""Deterministic embedding-table init that any process can compute for any slice of a table.

Rows are drawn uniform in ``±sqrt(1 / num_embeddings)`` (TorchRec's default range) in fixed blocks of
``BLOCK_ROWS`` rows, each from a generator seeded by ``(seed, table name, block index)``. So an unsharded model
(:func:`dist_ctr.sparse.materialize`) and the same model sharded table-, row- or column-wise over any number of
ranks start from identical weights, and no rank ever builds a whole table it does not own.

>>> a = table_init(0, "t", 100, 4, 0, 100)
>>> torch.equal(a[10:30], table_init(0, "t", 100, 4, 10, 30))
True
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["BLOCK_ROWS", "table_init"]

BLOCK_ROWS = 65_536


def table_init(seed: int, table: str, rows: int, dim: int, row_start: int, row_end: int) -> torch.Tensor:
    """Rows ``[row_start, row_end)`` of table ``table``'s initial weights. Returns ``Tensor (R, dim)`` float32."""
    bound = float((1.0 / rows) ** 0.5)
    out = torch.empty(max(0, row_end - row_start), dim)
    if row_end <= row_start:
        return out
    tkey = int.from_bytes(hashlib.sha256(table.encode()).digest()[:4], "little")
    for b in range(row_start // BLOCK_ROWS, (row_end - 1) // BLOCK_ROWS + 1):
        lo, hi = b * BLOCK_ROWS, min((b + 1) * BLOCK_ROWS, rows)
        g = torch.Generator().manual_seed((seed * 1_000_003 + tkey * 7919 + b) % (2**63 - 1))
        w = torch.rand(hi - lo, dim, generator=g) * (2 * bound) - bound  # (block rows, dim)
        s, e = max(lo, row_start), min(hi, row_end)
        out[s - row_start : e - row_start] = w[s - lo : e - lo]
    return out
