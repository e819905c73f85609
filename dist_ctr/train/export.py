"""Gather a sharded checkpoint into one single-process model file, and batch inference with it.

Notation: ``N`` rows, ``T`` tasks.

:func:`export_checkpoint` reads a committed DCP checkpoint written by any number of ranks (``train/checkpoint.py``)
in ONE process with no process group: DCP stores each shard with its global offsets, so loading into plain,
full-size tensors (``dcp.load(..., no_dist=True)``) reassembles every table whatever the sharding (table-, row-,
column-wise). The model is rebuilt from the checkpoint's ``COMMITTED`` meta (schema, model name, model config) and
materialised unsharded (:func:`dist_ctr.sparse.materialize`). Only model weights are exported (no optimizer state).

The exported file is a plain ``torch.save`` of ``{"format": FORMAT, "meta_json": str, "state_dict": {name:
Tensor}}`` so ``torch.load(path, weights_only=True)`` reads it (no pickled classes); :func:`load_exported` rebuilds
the model. ``path`` may be any fsspec URL.

:func:`predict_parquet` runs the exported model over a Parquet data set (the data loader with the training
data config's transforms, shuffling off, labels optional) and writes ``pred`` (one task) or ``pred_<task>`` columns, plus ``row_id`` when the data set
has one, to Parquet through fsspec.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from typing import Any

import fsspec
import torch
from torch import nn

from dist_ctr.errors import CheckpointError, ModelFileError
from dist_ctr.schema import FeatureSchema
from dist_ctr.storage import check_writable, storage_errors
from dist_ctr.train import checkpoint as ckpt

__all__ = ["FORMAT", "ExportMeta", "export_checkpoint", "load_exported", "predict_parquet", "model_meta_from_checkpoint"]

FORMAT = "dist_ctr.export/1"

ExportMeta = dict  # JSON-able: format, model, model_config, schema, task_types, task_names, step, epoch, source


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """No exported model at the path."""


def model_meta_from_checkpoint(meta: dict[str, Any], url: str = "") -> dict[str, Any]:
    """The model description (name, config, schema, task types) held in a checkpoint's ``COMMITTED`` meta.

    Accepts the meta written by ``dist_ctr.train.job`` (``job``, ``schema``, ``model``) and, for checkpoints
    saved by a bare ``Trainer``, ``schema`` + ``model`` + optional ``model_config``.
    """
    if "schema" not in meta or "model" not in meta:
        raise CheckpointError(f"{url or 'checkpoint'}: COMMITTED meta has no 'schema'/'model' (it was saved by a Trainer "
                         "without meta); save through dist_ctr.train.job or set trainer.meta = {'schema': "
                         "schema.to_dict(), 'model': name, 'model_config': {...}}")
    name = str(meta["model"])
    if "model_config" in meta:
        config = dict(meta["model_config"] or {})
    else:
        job_model = (meta.get("job") or {}).get("model") or {}
        # the job's model config belongs to the job's model; another model (e.g. an LR baseline) used defaults
        config = dict(job_model.get("config") or {}) if job_model.get("name", name) == name else {}
    schema = FeatureSchema.from_dict(meta["schema"])
    task_types = list(meta.get("task_types") or (schema.task_types if schema.labels else ["binary"]))
    task_names = list(meta.get("task_names") or (schema.label_names if schema.labels else
                                                   [f"task{i}" for i in range(len(task_types))]))
    return {"model": name, "model_config": config, "schema": meta["schema"], "task_types": task_types,
            "task_names": task_names}


def _build_unsharded(desc: dict[str, Any]) -> nn.Module:
    """A CTRTask around the described model, embeddings materialised on CPU (weights to be overwritten)."""
    from dist_ctr.models import build_model
    from dist_ctr.sparse import materialize
    from dist_ctr.train.task import CTRTask

    schema = FeatureSchema.from_dict(desc["schema"])
    model = build_model(desc["model"], schema, desc["model_config"])
    materialize(model, "cpu")
    return CTRTask(model, desc["task_types"])


def export_checkpoint(checkpoint_url: str, out_path: str, storage_options: dict[str, Any] | None = None) -> str:
    """Gather the committed checkpoint at ``checkpoint_url`` (or the latest one under a checkpoint root) into one
    file at ``out_path`` (any fsspec URL). Runs in one process; needs no process group. Returns ``out_path``.
    """
    url = _resolve_checkpoint(checkpoint_url, storage_options)
    meta = ckpt.validate_checkpoint(url, storage_options=storage_options)  # marker and shards, before reading
    desc = model_meta_from_checkpoint(meta, url)
    task = _build_unsharded(desc)
    sd = {k: v for k, v in task.state_dict().items()}
    state = {"model": sd}
    try:
        with warnings.catch_warnings():  # loading in one process with no process group is the point here
            warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled, unavailable or uninitialized",
                                    category=UserWarning)
            ckpt.load_checkpoint(url, state, storage_options, no_dist=True)
    except CheckpointError as e:  # DCP names the first key it cannot find; say which checkpoint and model
        raise CheckpointError(f"{e} (into an unsharded {desc['model']})") from None
    weights = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    data_cfg = ((meta.get("job") or {}).get("data") or {}).get("train") or {}
    info = {"format": FORMAT, **desc, "data_config": data_cfg,
            "step": int(meta.get("step", 0)), "epoch": int(meta.get("epoch", 0)),
            "source": url, "source_world_size": int(meta.get("world_size", 1))}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "meta_json": json.dumps(info), "state_dict": weights}, buf)
    check_writable(out_path, storage_options)
    fs, path = fsspec.core.url_to_fs(out_path, **(storage_options or {}))
    with storage_errors(out_path, "write the model file"), fs.open(path, "wb") as f:
        f.write(buf.getvalue())
    return out_path


def _resolve_checkpoint(url: str, storage_options: dict[str, Any] | None) -> str:
    """``url`` when it is a checkpoint (committed or not: validation says what is wrong), else the newest good
    checkpoint under it (a root)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    with storage_errors(url, "read the checkpoint"):
        if fs.exists(f"{path.rstrip('/')}/{ckpt.MARKER}") or fs.exists(f"{path.rstrip('/')}/.metadata"):
            return url
    skipped: list[str] = []
    latest = ckpt.latest_checkpoint(url, storage_options, skipped)
    for line in skipped:
        print(f"[export] {line}", flush=True)
    if latest is None:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise ckpt.CheckpointNotFoundError(f"{url}: neither a committed checkpoint (no {ckpt.MARKER}) nor a "
                                           f"checkpoint root holding a good one{why}")
    return latest.url


def load_exported(path: str, storage_options: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model. Returns ``(task, meta)``: ``task`` is a ``CTRTask`` in eval mode (``task.model``
    is the CTR model: ``forward(dense, sparse) -> logits (N, T)``; ``task.predict_proba(logits)`` gives
    probabilities), ``meta`` the exported JSON meta. Loading uses ``torch.load(..., weights_only=True)``.
    """
    blob = _read_model_file(path, storage_options)
    try:
        meta = json.loads(blob["meta_json"])
        meta["schema"], meta["model"], meta["model_config"]  # noqa: B018 (the keys the rebuild needs)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: corrupt model meta ({type(e).__name__}: {e})") from None
    task = _build_unsharded(meta)
    try:
        missing, unexpected = task.load_state_dict(blob["state_dict"], strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelFileError(f"{path}: weights do not fit {meta['model']} ({first})") from None
    if missing or unexpected:
        raise ModelFileError(f"{path}: weights do not fit {meta['model']}: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}")
    task.eval()
    return task, meta


def _read_model_file(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The exported file's dict, read with ``weights_only=True``; every failure is one ``ModelFileError``."""
    import pickle
    import zipfile

    fs, p = fsspec.core.url_to_fs(path, **(storage_options or {}))
    with storage_errors(path, "read the model file"):
        if not fs.exists(p) or fs.isdir(p):
            raise ModelFileNotFoundError(f"exported model not found: {path}")
        with fs.open(p, "rb") as f:
            raw = f.read()
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global: the file carries code or classes
        hint = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise ModelFileError(f"{path}: refused: not a weights-only file (it pickles code or classes; nothing in "
                             f"it was run){': ' + hint if hint else ''}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelFileError(f"{path}: truncated or corrupt model file ({type(e).__name__}: {first})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a dist_ctr exported model (expected format {FORMAT!r})")
    return blob


class _DropFxTracingNotice(logging.Filter):
    """Drops torch.fx's one-time ``is_fx_tracing will return true ...`` notice (a ``logging`` warning meant for
    library authors, logged the first time TorchRec's modules ask ``is_fx_tracing()`` in a forward)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true")


def _no_fx_tracing_notice(batches):
    """Yields ``batches`` with :class:`_DropFxTracingNotice` on torch.fx's logger while the caller runs the model;
    the filter is removed afterwards (other records of that logger, and other loggers, pass unchanged)."""
    logger = logging.getLogger("torch.fx._symbolic_trace")
    drop = _DropFxTracingNotice()
    logger.addFilter(drop)
    try:
        yield from batches
    finally:
        logger.removeFilter(drop)


@torch.no_grad()
def predict_batches(task: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Probabilities ``(N, T)`` (regression columns as is) and row ids ``(N,)`` (or None) over ``batches``.

    Rows the loader padded (``row_ids == -1``) are dropped.
    """
    preds, ids = [], []
    has_ids = True
    for b in _no_fx_tracing_notice(batches):
        logits = task.model(b.dense, b.sparse)  # (B, T)
        p = task.predict_proba(logits)
        if b.row_ids is not None:
            keep = b.row_ids >= 0
            preds.append(p[keep])
            ids.append(b.row_ids[keep])
        else:
            has_ids = False
            preds.append(p)
    T = len(getattr(task, "task_types", (0,)))
    out = torch.cat(preds) if preds else torch.zeros(0, T)
    return out, (torch.cat(ids) if has_ids and ids else None)


def predict_parquet(model_path: str, data_url: str, out_url: str, batch_size: int = 8192,
                    storage_options: dict[str, Any] | None = None, report: dict[str, Any] | None = None) -> int:
    """Batch inference of an exported model over the Parquet data set at ``data_url``; writes one Parquet file at
    ``out_url`` (any fsspec URL) with ``row_id`` (when the data has it) and ``pred`` / ``pred_<task>``.
    Returns the number of rows written.

    ``out_url`` is checked writable before the model is loaded (``StorageError`` naming it). ``report``, when
    given, is filled with what the loader skipped or filled (:mod:`dist_ctr.data.reports`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader

    check_writable(out_url, storage_options)
    task, meta = load_exported(model_path, storage_options)
    schema = FeatureSchema.from_dict(meta["schema"])
    cfg = _inference_data_config(DataConfig, data_url, batch_size, storage_options, meta.get("data_config") or {})
    loader = build_loader(schema, cfg, rank=0, world_size=1, epoch=0, seed=0, device=torch.device("cpu"))
    preds, ids = predict_batches(task, loader)
    if report is not None:
        report.update(loader.report())
    cols: dict[str, Any] = {}
    if ids is not None:
        cols["row_id"] = pa.array(ids.numpy())
    names = meta["task_names"]
    for t, name in enumerate(names):
        cols["pred" if len(names) == 1 else f"pred_{name}"] = pa.array(preds[:, t].double().numpy())
    table = pa.table(cols)
    fs, path = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
    with storage_errors(out_url, "write the predictions"):
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            pq.write_table(table, f)
    return table.num_rows


def _inference_data_config(data_config_cls: Any, url: str, batch_size: int, storage_options: dict[str, Any] | None,
                           train_cfg: dict[str, Any], require_labels: bool = False):
    """A loader config for inference: the training data config's transforms (dense transform, vocabularies,
    row-id column) and bad-input policies (``on_bad_file``, ``on_non_finite``) over ``url``, in file order, every
    row once; labels optional unless ``require_labels`` (scoring)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(data_config_cls)}
    keep = ("dense", "vocabularies", "row_id_column", "file_suffixes", "num_workers", "on_bad_file", "on_non_finite")
    raw: dict[str, Any] = {k: v for k, v in train_cfg.items() if k in keep and k in names}
    raw.update({"url": url, "batch_size": batch_size})
    for key, value in (("shuffle", False), ("require_labels", require_labels), ("drop_last", False)):
        if key in names:
            raw[key] = value
    if storage_options and "storage_options" in names:
        raw["storage_options"] = storage_options
    return data_config_cls.from_dict(raw, where="predict")
