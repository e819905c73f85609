"""Warm start: a freshly built :class:`~dist_ctr.train.engine.Trainer` takes a parent checkpoint's model weights
AND optimizer state (fused sparse optimizer state, dense optimizer state), on any world size, but not the parent's
loader cursor, step or epoch: the new run reads its own data from the start.

The parent and the job must describe the same model: same model name and config, same features (names, kinds,
dims, dense features, labels), same tables. One change is allowed: a table whose vocabulary GREW. Its old rows
(and their optimizer state) are copied bit for bit from the parent; the new rows keep the trainer's fresh
initialisation (deterministic in seed, table and row block) and fresh optimizer state. Every other change is a
:class:`SchemaMismatch` naming the feature / table and the parent checkpoint.

How the grown tables are loaded: every tensor whose shape is unchanged goes through the normal DCP load (which
reshards across world sizes); each tensor that grew is read from the checkpoint as one plain tensor of the OLD
global shape (``no_dist=True``: every rank reads it whole) and its rows are copied into the rows of this rank's
shards that the parent had.

The hook is a callback (``on_train_begin``), so the same object works in-process, in spawned workers and in Ray
Train workers (pass ``WarmStart(...)`` in ``callbacks`` or through a callbacks factory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from dist_ctr.errors import CheckpointError
from dist_ctr.train import checkpoint as ckpt

__all__ = ["SchemaMismatch", "WarmStart", "grown_tables", "warm_start"]


class SchemaMismatch(CheckpointError):
    """The parent checkpoint does not describe the job's model (other than a grown vocabulary)."""


def grown_tables(parent_meta: dict[str, Any], model: str, model_config: Any, schema: Any,
                 url: str) -> dict[str, tuple[int, int]]:
    """Check the parent's ``COMMITTED`` meta against the job; returns ``{table: (old_rows, new_rows)}`` for the
    tables whose vocabulary grew.

    Raises:
        SchemaMismatch: naming the parent checkpoint and the first model / feature / table that differs.
    """
    from dist_ctr.schema import FeatureSchema

    saved_model = parent_meta.get("model")
    if saved_model is not None and saved_model != model:
        raise SchemaMismatch(f"parent checkpoint {url}: holds model {saved_model!r}, the job trains {model!r}")
    if saved_model == model and "model_config" in parent_meta and model_config is not None:
        diff = ckpt._config_diff(model, parent_meta.get("model_config") or {}, model_config)
        if diff:
            raise SchemaMismatch(f"parent checkpoint {url}: model config of {model} differs: {diff}")
    if not parent_meta.get("schema"):
        raise SchemaMismatch(f"parent checkpoint {url}: records no schema")
    old = FeatureSchema.from_dict(parent_meta["schema"])
    _feature_diff(old, schema, url)
    new_tables = {t.name: t for t in schema.tables()}
    grown: dict[str, tuple[int, int]] = {}
    for t in old.tables():
        j = new_tables[t.name]
        if j.embedding_dim != t.embedding_dim:
            raise SchemaMismatch(f"parent checkpoint {url}: table {t.name!r} has embedding_dim {t.embedding_dim}, "
                                 f"the job has {j.embedding_dim}")
        if j.num_embeddings < t.num_embeddings:
            raise SchemaMismatch(f"parent checkpoint {url}: table {t.name!r} shrank from {t.num_embeddings:,} to "
                                 f"{j.num_embeddings:,} rows (only a grown vocabulary warm-starts)")
        if j.num_embeddings > t.num_embeddings:
            grown[t.name] = (t.num_embeddings, j.num_embeddings)
    return grown


def _feature_diff(old: Any, new: Any, url: str) -> None:
    """Features must match by name, kind and every field except ``vocabulary_size``; labels must match."""
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        d.pop("vocabulary_size", None)
        if isinstance(d.get("sparsefeat"), dict):
            d["sparsefeat"] = strip(d["sparsefeat"])
        return d

    a = {f["name"]: strip(f) for f in old.to_dict()["features"]}
    b = {f["name"]: strip(f) for f in new.to_dict()["features"]}
    for name in a:
        if name not in b:
            raise SchemaMismatch(f"parent checkpoint {url}: feature {name!r} is not in the job's schema (removed)")
    for name in b:
        if name not in a:
            raise SchemaMismatch(f"parent checkpoint {url}: feature {name!r} is new in the job's schema (added)")
        if a[name] != b[name]:
            keys = sorted(k for k in set(a[name]) | set(b[name]) if a[name].get(k) != b[name].get(k))
            k = keys[0]
            raise SchemaMismatch(f"parent checkpoint {url}: feature {name!r}: {k} {a[name].get(k)!r} in the parent, "
                                 f"{b[name].get(k)!r} in the job")
    if old.to_dict().get("labels") != new.to_dict().get("labels"):
        raise SchemaMismatch(f"parent checkpoint {url}: labels differ")


def _split(state: Any, saved: dict[str, Any], prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """``state`` without the leaves whose saved shape differs (and without ``param_groups``: the job's
    hyper-parameters stay), and ``{dcp_key: live tensor}`` of those grown leaves."""
    grown: dict[str, Any] = {}
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k == "param_groups":
                continue
            sub, g = _split(v, saved, key)
            grown.update(g)
            if sub is not None and not (isinstance(sub, dict) and not sub and isinstance(v, dict) and v):
                out[k] = sub  # a mapping emptied by the pruning is left out (DCP would read it as a leaf)
        return out, grown
    if hasattr(state, "size") and prefix in saved and hasattr(saved[prefix], "size"):
        with ckpt._quiet_dcp():  # ShardedTensor.size() warns that ShardedTensor is deprecated (TorchRec's matter)
            grew = tuple(saved[prefix].size) != tuple(state.size())
        if grew:
            return None, {prefix: state}
    return state, grown


def _shards(t: Any) -> list[tuple[torch.Tensor, list[int]]]:
    """``(local tensor, global offsets)`` of each local shard of a ShardedTensor / DTensor / plain tensor."""
    if hasattr(t, "local_shards"):
        return [(s.tensor, list(s.metadata.shard_offsets)) for s in t.local_shards()]
    if hasattr(t, "to_local"):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        _shape, offs = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
        return [(t.to_local(), list(offs))]
    return [(t, [0] * t.dim())]


def _copy_old_rows(key: str, live: Any, old: torch.Tensor, url: str) -> None:
    """Copy ``old`` (the parent's global tensor) into the rows of ``live``'s local shards that ``old`` covers."""
    new_shape = tuple(live.size())
    if len(new_shape) != old.dim() or new_shape[0] < old.shape[0] or tuple(new_shape[1:]) != tuple(old.shape[1:]):
        raise SchemaMismatch(f"parent checkpoint {url}: {key} has shape {tuple(old.shape)}, the job has "
                             f"{new_shape} (only more rows warm-start)")
    for local, offs in _shards(live):
        r0, n = offs[0], local.shape[0]
        hi = min(r0 + n, old.shape[0])
        if hi <= r0:
            continue
        idx = [slice(r0, hi)] + [slice(o, o + s) for o, s in zip(offs[1:], local.shape[1:])]
        with torch.no_grad():  # (rows the parent had, this shard's columns)
            local[: hi - r0].copy_(old[tuple(idx)].to(local.device, local.dtype))


def warm_start(trainer: Any, url: str, storage_options: Optional[dict[str, Any]] = None) -> dict[str, tuple[int, int]]:
    """Load the parent checkpoint at ``url`` into ``trainer`` (collective when the world size is above 1).

    Returns:
        dict[str, tuple[int, int]]: grown tables ``{table: (old_rows, new_rows)}``.
    """
    meta = ckpt.read_meta(url, storage_options)
    grown = grown_tables(meta, trainer.meta.get("model") or type(trainer.model).__name__,
                         trainer.meta.get("model_config"), trainer.model.schema, url)
    problem = ckpt.shard_problem(url, storage_options)
    if problem is not None:
        raise CheckpointError(f"parent checkpoint {url}: {problem}")
    saved = dict(ckpt.read_dcp_metadata(url, storage_options).state_dict_metadata)
    state = trainer.app_state()
    request, live = _split(state, saved)
    for key in live:
        segments = {seg.removeprefix("linear__") for seg in key.split(".")}
        if not segments & set(grown):
            raise SchemaMismatch(f"parent checkpoint {url}: {key} has shape {tuple(saved[key].size)}, the job "
                                 f"has {tuple(live[key].size())}")
    ckpt.load_checkpoint(url, request, storage_options)
    if live:
        old = {k: torch.empty(tuple(saved[k].size), dtype=saved[k].properties.dtype) for k in live}
        ckpt.load_checkpoint(url, old, storage_options, no_dist=True)
        for k, t in live.items():
            _copy_old_rows(k, t, old[k], url)
    with ckpt.dcp_errors(url):
        trainer.dmp.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optim"])
    return grown


@dataclass
class WarmStart:
    """Engine callback: warm-start the trainer from ``url`` when training begins (picklable for spawn / Ray).

    Args:
        url (str): the parent's committed training checkpoint.
        storage_options (dict): fsspec options for ``url``.
        verbose (bool): rank 0 prints one line.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    verbose: bool = True
    grown: dict[str, tuple[int, int]] = field(default_factory=dict)

    def on_train_begin(self, trainer: Any) -> None:
        self.grown = warm_start(trainer, self.url, self.storage_options)
        if self.verbose and trainer.env.is_main:
            extra = "".join(f"; table {t} grew {a:,} -> {b:,} rows" for t, (a, b) in self.grown.items())
            print(f"[train] warm start from {self.url}{extra}", flush=True)
