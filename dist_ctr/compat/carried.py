"""The facade's table layout switch: moving linear weights carried in the embedding rows (see
:class:`dist_ctr.sparse.SparseArch`, ``linear_in_embedding_tables``) back to tables of their own when a compiled
model is re-compiled with a row-wise sparse optimizer (MLR's base learners carried in its region rows alike). One
process only, as the facade trains."""

from __future__ import annotations

from typing import Any

import torch

from dist_ctr.sparse.init import ColumnTail

__all__ = ["copy_splitting_carried"]


def _local(value: Any) -> torch.Tensor:
    """The whole tensor behind a one-process state-dict value (``ShardedTensor`` / ``DTensor`` / plain)."""
    if hasattr(value, "local_shards"):
        return value.local_shards()[0].tensor
    return value.to_local() if hasattr(value, "to_local") else value


def copy_splitting_carried(old: torch.nn.Module, new: torch.nn.Module, tails: dict[str, ColumnTail]) -> None:
    """Copy one process's weights from ``old`` (some tables carrying ``tails``: table -> the tail table it holds
    in its last columns, :func:`dist_ctr.sparse.init.table_inits`) into ``new`` (the same model with every tail
    in a table of its own): equal keys are copied, a carrying table gives its first columns to its own key and
    its last ``tail.columns`` to the tail table's."""
    src = {k: _local(v) for k, v in old.state_dict().items()}
    tables = {k.split(".")[-2]: v for k, v in src.items() if ".embedding_bags." in k and k.endswith(".weight")}
    held_by = {tail.table: (name, tail.columns) for name, tail in tails.items()}
    dst = new.state_dict()
    with torch.no_grad():
        for key, value in dst.items():
            out, table = _local(value), key.split(".")[-2] if key.endswith(".weight") else ""
            w = src.get(key)
            if w is not None and w.shape == out.shape:
                out.copy_(w)
            elif w is not None and table in tails:
                out.copy_(w[:, : out.shape[1]])  # the table's own columns of a carrying row
            elif table in held_by and held_by[table][0] in tables:
                name, cols = held_by[table]
                out.copy_(tables[name][:, -cols:])
            else:
                raise RuntimeError(f"re-compile: no weights for {key!r} in the compiled model")
    new.load_state_dict(dst)
