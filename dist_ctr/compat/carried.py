"""The facade's table layout switch: moving linear weights carried in the embedding rows (see
:class:`dist_ctr.sparse.SparseArch`, ``linear_in_embedding_tables``) back to tables of their own when a compiled
model is re-compiled with a row-wise sparse optimizer. One process only, as the facade trains."""

from __future__ import annotations

from typing import Any

import torch

from dist_ctr.sparse.arch import LINEAR_DIM

__all__ = ["copy_splitting_carried"]


def _local(value: Any) -> torch.Tensor:
    """The whole tensor behind a one-process state-dict value (``ShardedTensor`` / ``DTensor`` / plain)."""
    if hasattr(value, "local_shards"):
        return value.local_shards()[0].tensor
    return value.to_local() if hasattr(value, "to_local") else value


def copy_splitting_carried(old: torch.nn.Module, new: torch.nn.Module) -> None:
    """Copy one process's weights from ``old`` (linear weights carried in the embedding rows) into ``new`` (the same
    model with them in tables of their own): equal keys are copied, a carried row splits into its first ``D``
    columns and the ``LINEAR_DIM`` columns of its linear table (``linear__<table>``)."""
    src = {k: _local(v) for k, v in old.state_dict().items()}
    by_table = {k.split(".")[-2]: v for k, v in src.items() if ".embedding_bags." in k and k.endswith(".weight")}
    dst = new.state_dict()
    with torch.no_grad():
        for key, value in dst.items():
            out, table = _local(value), key.split(".")[-2] if key.endswith(".weight") else ""
            w = src.get(key)
            if w is not None and w.shape == out.shape:
                out.copy_(w)
            elif w is not None and w.dim() == 2 and w.shape[1] == out.shape[1] + LINEAR_DIM:
                out.copy_(w[:, : out.shape[1]])  # the embedding columns of a carried row
            elif table.startswith("linear__") and table.removeprefix("linear__") in by_table:
                out.copy_(by_table[table.removeprefix("linear__")][:, -LINEAR_DIM:])
            else:
                raise RuntimeError(f"re-compile: no weights for {key!r} in the compiled model")
    new.load_state_dict(dst)
