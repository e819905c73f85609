"""Sharded checkpoints on any fsspec URL, committed by a marker.

Layout under a checkpoint root ``ROOT`` (local path, ``file://``, ``s3://``, ``gs://``, ``memory://``)::

    ROOT/step_00000100/          one checkpoint
        .metadata, __0_0.distcp  torch.distributed.checkpoint (each rank writes its own shards)
        loader/rank_00000.json   each rank's data-loader cursor
        COMMITTED                written by rank 0 after every rank finished: JSON with step, epoch, world size,
                                 schema, config (every ``storage_options`` emptied: no credentials)

A checkpoint without ``COMMITTED`` is ignored by :func:`latest_checkpoint`, so a crash mid-write leaves the
previous checkpoint as the one a restart loads. DCP reshards on load: a checkpoint saved by N ranks loads into
M ranks.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

_STEP_RE = re.compile(r"step_(\d{8,})$")
MARKER = "COMMITTED"


def _fs(url: str, storage_options: dict[str, Any] | None):
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@dataclass
class CheckpointInfo:
    url: str
    step: int
    epoch: int
    world_size: int
    meta: dict[str, Any] = field(default_factory=dict)


def list_checkpoints(root: str, storage_options: dict[str, Any] | None = None) -> list[CheckpointInfo]:
    """Committed checkpoints under ``root``, oldest first."""
    fs, path = _fs(root, storage_options)
    if not fs.exists(path):
        return []
    out = []
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").split("/")[-1]
        m = _STEP_RE.match(name)
        if not m:
            continue
        marker = entry.rstrip("/") + "/" + MARKER
        if not fs.exists(marker):
            continue
        with fs.open(marker, "r") as f:
            meta = json.load(f)
        out.append(CheckpointInfo(_join(root, name), int(m.group(1)), int(meta.get("epoch", 0)),
                                  int(meta.get("world_size", 1)), meta))
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(root: str, storage_options: dict[str, Any] | None = None) -> Optional[CheckpointInfo]:
    cps = list_checkpoints(root, storage_options)
    return cps[-1] if cps else None


@contextlib.contextmanager
def _quiet_dcp():
    """Around DCP save / load only: TorchRec's sharded tables are ``ShardedTensor``s, and DCP's planner warns on
    every one of them that ShardedTensor is deprecated (a TorchRec matter, nothing a user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Please use DTensor instead and we are deprecating ShardedTensor",
                                category=FutureWarning)
        yield


def save_checkpoint(
    root: str,
    step: int,
    epoch: int,
    app_state: dict[str, Any],
    loader_state: dict[str, Any] | None,
    meta: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    storage_options: dict[str, Any] | None = None,
    keep: int = 0,
) -> str:
    """Collective: every rank calls it. Returns the checkpoint URL."""
    url = _join(root, f"step_{step:08d}")
    fs, path = _fs(url, storage_options)
    if rank == 0 and fs.exists(path):
        fs.rm(path, recursive=True)  # a stale uncommitted attempt at the same step
    _barrier()
    with _quiet_dcp():
        dcp.save(app_state, storage_writer=FsspecWriter(url, **(storage_options or {})))
    fs.makedirs(f"{path}/loader", exist_ok=True)
    with fs.open(f"{path}/loader/rank_{rank:05d}.json", "w") as f:
        json.dump(loader_state or {}, f)
    _barrier()
    if rank == 0:
        with fs.open(f"{path}/{MARKER}", "w") as f:
            json.dump({"step": step, "epoch": epoch, "world_size": world_size, **_without_storage_options(meta)}, f)
        if keep > 0:
            for old in list_checkpoints(root, storage_options)[:-keep]:
                ofs, opath = _fs(old.url, storage_options)
                ofs.rm(opath, recursive=True)
    _barrier()
    return url


def _without_storage_options(meta: Any) -> Any:
    """``meta`` with every ``storage_options`` mapping emptied: credentials never go into a marker (nor into what
    is exported from it).

    >>> _without_storage_options({"job": {"data": {"storage_options": {"secret": "x"}, "url": "s3://b/d"}}})
    {'job': {'data': {'storage_options': {}, 'url': 's3://b/d'}}}
    """
    if isinstance(meta, dict):
        return {k: {} if k == "storage_options" and isinstance(v, dict) else _without_storage_options(v)
                for k, v in meta.items()}
    if isinstance(meta, (list, tuple)):
        return [_without_storage_options(v) for v in meta]
    return meta


def load_checkpoint(url: str, app_state: dict[str, Any], storage_options: dict[str, Any] | None = None) -> None:
    """Load in place into ``app_state`` (same structure as saved; DCP reshards across world sizes)."""
    fs, path = _fs(url, storage_options)
    if not fs.exists(f"{path}/{MARKER}"):
        raise FileNotFoundError(f"{url}: not a committed checkpoint (no {MARKER} marker)")
    with _quiet_dcp():
        dcp.load(app_state, storage_reader=FsspecReader(url, **(storage_options or {})))


def load_loader_states(url: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every saved rank's loader cursor, rank order."""
    fs, path = _fs(url, storage_options)
    files = sorted(p for p in fs.ls(f"{path}/loader", detail=False) if p.endswith(".json"))
    out = []
    for p in files:
        with fs.open(p, "r") as f:
            out.append(json.load(f))
    return out


def read_meta(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    fs, path = _fs(url, storage_options)
    with fs.open(f"{path}/{MARKER}", "r") as f:
        return json.load(f)


def to_jsonable(state: Any) -> Any:
    """Loader state dicts may hold numpy / torch scalars; make them JSON."""
    if isinstance(state, dict):
        return {str(k): to_jsonable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [to_jsonable(v) for v in state]
    if isinstance(state, torch.Tensor):
        return state.tolist()
    if hasattr(state, "item") and not isinstance(state, (str, bytes)):
        return state.item()
    return state
