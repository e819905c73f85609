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

Every load goes through :func:`validate_checkpoint` first (marker, model, model config, tables, shards: one
:class:`~dist_ctr.errors.CheckpointError` line naming the checkpoint and what differs). :func:`latest_checkpoint`
passes over a newest checkpoint that is uncommitted, has a corrupt marker or a torn shard, and says so in its
``skipped`` list. DCP's ``.metadata`` is a pickle: it is read by :class:`SafeFsspecReader`, which unpickles only
DCP's own metadata classes and torch's dtypes / sizes, so a planted pickle never runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

from dist_ctr.errors import CheckpointError, DistCtrError
from dist_ctr.storage import is_storage_exception, storage_errors

_STEP_RE = re.compile(r"step_(\d{8,})$")
MARKER = "COMMITTED"


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No committed checkpoint at the URL (no ``COMMITTED`` marker)."""


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


def list_checkpoints(root: str, storage_options: dict[str, Any] | None = None,
                     skipped: Optional[list[str]] = None) -> list[CheckpointInfo]:
    """Committed checkpoints under ``root``, oldest first. A checkpoint whose marker cannot be parsed is left out
    and described in ``skipped`` (when given), as is an uncommitted directory newer than every committed one."""
    fs, path = _fs(root, storage_options)
    with storage_errors(root):
        if not fs.exists(path):
            return []
        entries = fs.ls(path, detail=False)
    out, uncommitted = [], []
    for entry in entries:
        name = entry.rstrip("/").split("/")[-1]
        m = _STEP_RE.match(name)
        if not m:
            continue
        url = _join(root, name)
        try:
            meta = read_meta(url, storage_options)
        except CheckpointNotFoundError:
            uncommitted.append((int(m.group(1)), url))
            continue
        except CheckpointError as e:
            if skipped is not None:
                skipped.append(f"skipped {url}: {e}")
            continue
        out.append(CheckpointInfo(url, int(m.group(1)), int(meta.get("epoch", 0)), int(meta.get("world_size", 1)),
                                  meta))
    out.sort(key=lambda c: c.step)
    newest = out[-1].step if out else -1
    if skipped is not None:
        skipped.extend(f"skipped {u}: not committed (no {MARKER} marker; an interrupted save)"
                       for step, u in sorted(uncommitted) if step > newest)
    return out


def latest_checkpoint(root: str, storage_options: dict[str, Any] | None = None,
                      skipped: Optional[list[str]] = None) -> Optional[CheckpointInfo]:
    """The newest committed checkpoint under ``root`` whose shards are all readable (None when there is none).

    Newer ones passed over (uncommitted, corrupt marker, missing or torn shard) are described in ``skipped``.
    """
    cps = list_checkpoints(root, storage_options, skipped)
    for cp in reversed(cps):
        problem = shard_problem(cp.url, storage_options)
        if problem is None:
            return cp
        if skipped is not None:
            skipped.append(f"skipped {cp.url} (step {cp.step}): {problem}")
    return None


def newest_good_or(url: str, who: str, storage_options: dict[str, Any] | None = None) -> str:
    """The newest good checkpoint under root ``url``, else ``url`` itself (a checkpoint directory, validated when
    loaded); every newer checkpoint passed over is a warning from ``who`` naming it and why."""
    skipped: list[str] = []
    latest = latest_checkpoint(url, storage_options, skipped)
    for line in skipped:
        warnings.warn(f"{who}: {line}", stacklevel=3)
    return latest.url if latest is not None else url


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


def load_checkpoint(url: str, app_state: dict[str, Any], storage_options: dict[str, Any] | None = None,
                    **dcp_kwargs: Any) -> None:
    """Load in place into ``app_state`` (same structure as saved; DCP reshards across world sizes). DCP's errors
    (some are not ``Exception`` subclasses) become one :class:`CheckpointError` naming ``url``."""
    read_meta(url, storage_options)  # a committed checkpoint, or CheckpointError
    with _quiet_dcp(), dcp_errors(url):
        dcp.load(app_state, storage_reader=SafeFsspecReader(url, **(storage_options or {})), **dcp_kwargs)


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
    """The checkpoint's ``COMMITTED`` meta; :class:`CheckpointNotFoundError` when there is no marker,
    :class:`CheckpointError` naming the marker file and step when it cannot be parsed."""
    fs, path = _fs(url, storage_options)
    marker = f"{url.rstrip('/')}/{MARKER}"
    m = _STEP_RE.search(url.rstrip("/"))
    step = f" (step {int(m.group(1))})" if m else ""
    with storage_errors(url):
        if not fs.exists(f"{path.rstrip('/')}/{MARKER}"):
            raise CheckpointNotFoundError(f"{url}: not a committed checkpoint (no {MARKER} marker)")
        with fs.open(f"{path.rstrip('/')}/{MARKER}", "rb") as f:
            raw = f.read()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{marker}{step}: corrupt commit marker ({e}); delete this checkpoint directory to "
                              "fall back to the previous one") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise CheckpointError(f"{marker}{step}: corrupt commit marker (no 'step' in it)")
    return meta


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


# ---- safe metadata, DCP errors, validation ---------------------------------------------------------------------
_TORCH_TYPES = (torch.dtype, torch.layout, torch.memory_format)


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed set."""


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` only: DCP's own dataclasses / enums, ``torch.Size``, dtypes, layouts.
    Any other global (a function a planted pickle would call) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("torch.distributed.checkpoint") and not name.startswith("__"):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
                return obj
        elif module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), _TORCH_TYPES)):
            return getattr(torch, name)
        elif (module, name) in (("torch.serialization", "_get_layout"), ("collections", "OrderedDict")):
            return super().find_class(module, name)
        raise _RefusedGlobal(f"global '{module}.{name}' is not allowed in checkpoint metadata")


def read_dcp_metadata(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """DCP's ``Metadata`` of the checkpoint at ``url``, unpickled safely (:class:`_MetadataUnpickler`)."""
    fs, path = _fs(url, storage_options)
    where = f"{url.rstrip('/')}/.metadata"
    with storage_errors(url, "read the checkpoint"):
        if not fs.exists(f"{path}/.metadata"):
            raise CheckpointError(f"{where}: missing (the checkpoint's shard index)")
        with fs.open(f"{path}/.metadata", "rb") as f:
            raw = f.read()
    try:
        return _MetadataUnpickler(io.BytesIO(raw)).load()
    except _RefusedGlobal as e:
        raise CheckpointError(f"{where}: refused: {e} (not written by torch.distributed.checkpoint)") from None
    except Exception as e:  # truncated / corrupt pickle: EOFError, ValueError, ...
        raise CheckpointError(f"{where}: corrupt shard index ({type(e).__name__}: {e})") from None


class SafeFsspecReader(FsspecReader):
    """DCP's fsspec reader with the ``.metadata`` pickle read by :func:`read_dcp_metadata` (tensors and bytes
    are read by DCP as usual: raw storage and ``torch.load(weights_only=True)``)."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._url = str(path)
        self._storage_options = kwargs

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.metadata import StorageMeta

        metadata = read_dcp_metadata(self._url, self._storage_options)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _dcp_reason(e: BaseException) -> str:
    """The first line of a DCP failure (``CheckpointException`` wraps each rank's exception)."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        inner = next(iter(failures.values()))
        inner = inner[0] if isinstance(inner, tuple) else inner
        if isinstance(inner, DistCtrError):
            raise inner
        e = inner if isinstance(inner, BaseException) else e
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {text}"[:300]


@contextlib.contextmanager
def dcp_errors(url: str):
    """DCP's load failures (``CheckpointException`` is a ``BaseException``; shard readers raise ``RuntimeError``
    from PytorchStreamReader, ``EOFError``, ``UnpicklingError``) as one :class:`CheckpointError` naming ``url``."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except DistCtrError:
        raise
    except (CheckpointException, Exception) as e:  # noqa: B014 (CheckpointException is not an Exception)
        if is_storage_exception(e) and not isinstance(e, CheckpointException):
            with storage_errors(url, "read the checkpoint"):
                raise
        raise CheckpointError(f"{url}: cannot load the checkpoint ({_dcp_reason(e)})") from None


def shard_problem(url: str, storage_options: dict[str, Any] | None = None) -> Optional[str]:
    """Why the checkpoint's shards cannot be read (unreadable index, missing or truncated shard file), or None.

    Checks every shard file's size against the byte ranges DCP's index records for it (no tensor is read).
    """
    try:
        md = read_dcp_metadata(url, storage_options)
    except CheckpointError as e:
        return str(e).split(": ", 1)[-1] if str(e).startswith(url) else str(e)
    need: dict[str, int] = {}
    for info in (getattr(md, "storage_data", None) or {}).values():
        rel = getattr(info, "relative_path", None)
        if rel is not None:
            need[rel] = max(need.get(rel, 0), int(info.offset) + int(info.length))
    fs, path = _fs(url, storage_options)
    for rel, size in sorted(need.items()):
        with storage_errors(url, "read the checkpoint"):
            if not fs.exists(f"{path}/{rel}"):
                return f"shard {rel} is missing"
            have = int(fs.size(f"{path}/{rel}"))
        if have < size:
            return f"shard {rel} is truncated ({have:,} bytes, its index needs {size:,})"
    return None


def validate_checkpoint(url: str, *, model: Optional[str] = None, model_config: Any = None, schema: Any = None,
                        shapes: Optional[dict[str, tuple[int, ...]]] = None,
                        storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a checkpoint against a job before any shard is read; returns its ``COMMITTED`` meta.

    Args:
        url (str): the checkpoint directory.
        model (str | None): the job's registered model name (checked when the checkpoint records one).
        model_config (Mapping | None): the job's model config (compared after defaults are applied).
        schema (FeatureSchema | None): the job's schema: every embedding table's name, rows and dim must match.
        shapes (dict | None): ``{DCP key: global shape}`` of the job's embedding tables (``model.<fqn>``), checked
            against the shard index (for checkpoints that record no schema).
        storage_options (dict | None): fsspec options.

    Raises:
        CheckpointError: one line naming the checkpoint and what differs (a missing marker:
            :class:`CheckpointNotFoundError`).
    """
    meta = read_meta(url, storage_options)
    saved_model = meta.get("model")
    if model is not None and saved_model is not None and saved_model != model:
        raise CheckpointError(f"{url}: checkpoint holds model {saved_model!r}, the job trains {model!r} (use a new "
                              "checkpoint dir, or train.checkpoint.resume: false)")
    if model is not None and saved_model == model and "model_config" in meta and model_config is not None:
        diff = _config_diff(model, meta.get("model_config") or {}, model_config)
        if diff:
            raise CheckpointError(f"{url}: model config of {model} differs from the job's: {diff} (use a new "
                                  "checkpoint dir, or train.checkpoint.resume: false)")
    if schema is not None and meta.get("schema"):
        diff = _table_diff(meta["schema"], schema)
        if diff:
            raise CheckpointError(f"{url}: {diff}")
    problem = shard_problem(url, storage_options)
    if problem is not None:
        raise CheckpointError(f"{url}: {problem}")
    if shapes:
        diff = _shape_diff(read_dcp_metadata(url, storage_options), shapes)
        if diff:
            raise CheckpointError(f"{url}: {diff}")
    return meta


def _shape_diff(md: Any, shapes: dict[str, tuple[int, ...]]) -> str:
    """The first embedding table whose saved global shape differs from the job's, as a sentence, or ''."""
    saved = getattr(md, "state_dict_metadata", {}) or {}
    for key in sorted(shapes, key=lambda k: ("linear__" in k, k)):
        if "embedding" not in key or key not in saved or not hasattr(saved[key], "size"):
            continue
        a, b = tuple(saved[key].size), tuple(shapes[key])
        if a != b and len(a) == len(b) == 2:
            table = key.rsplit(".", 2)[-2]
            if a[0] != b[0]:
                grew = "grew" if b[0] > a[0] else "shrank"
                return (f"table {table!r}: checkpoint has {a[0]:,} rows, job has {b[0]:,} (vocabulary {grew}: use "
                        "warm start in a retraining pipeline, or a new checkpoint dir)")
            return f"table {table!r}: checkpoint has embedding_dim {a[1]}, job has {b[1]} (use a new checkpoint dir)"
    return ""


def _config_diff(model: str, saved: Any, job: Any) -> str:
    """``key: checkpoint X, job Y`` for the first model config keys that differ (defaults applied), or ''."""
    from dist_ctr.models import make_config
    from dist_ctr.strict import to_dict

    try:
        a, b = to_dict(make_config(model, saved)), to_dict(make_config(model, job))
    except DistCtrError as e:
        return f"the checkpoint's config does not parse ({e})"
    keys = [k for k in a if a.get(k) != b.get(k)]
    return "; ".join(f"{k}: checkpoint {a.get(k)!r}, job {b.get(k)!r}" for k in keys[:3])


def _table_diff(saved_schema: dict[str, Any], job_schema: Any) -> str:
    """The first embedding table that differs between a checkpoint's schema and the job's, as a sentence."""
    from dist_ctr.schema import FeatureSchema

    try:
        saved = {t.name: t for t in FeatureSchema.from_dict(saved_schema).tables()}
    except DistCtrError as e:
        return f"its recorded schema does not parse ({e})"
    job = {t.name: t for t in job_schema.tables()}
    for name, t in saved.items():
        if name not in job:
            return (f"table {name!r} is in the checkpoint but not in the job's schema (tables: {sorted(job)}); "
                    "use a new checkpoint dir")
        j = job[name]
        if t.num_embeddings != j.num_embeddings:
            grew = "grew" if j.num_embeddings > t.num_embeddings else "shrank"
            return (f"table {name!r}: checkpoint has {t.num_embeddings:,} rows, job has {j.num_embeddings:,} "
                    f"(vocabulary {grew}: use warm start in a retraining pipeline, or a new checkpoint dir)")
        if t.embedding_dim != j.embedding_dim:
            return (f"table {name!r}: checkpoint has embedding_dim {t.embedding_dim}, job has {j.embedding_dim} "
                    "(use a new checkpoint dir)")
    extra = sorted(set(job) - set(saved))
    if extra:
        return f"table {extra[0]!r} is in the job's schema but not in the checkpoint; use a new checkpoint dir"
    return ""
