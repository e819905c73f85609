"""Criteo TSV -> Parquet on Ray Data: one task per input file (or per byte range of a large plain-text file).

Each task streams its input through :func:`dist_ctr.data.criteo.convert_criteo_input`, the function the
single-process :func:`~dist_ctr.data.criteo.convert_criteo` uses, so the rows are the same: schema, column order,
dtypes, hashing, ``row_id`` and every value. Only the file layout differs: each task writes its own shards,
``part-<input>-<range>-<shard>.parquet`` (deterministic, so a re-run with ``overwrite`` replaces them; shards of
that pattern left by an earlier run with another layout are removed).

``row_id`` is a row's position in the concatenated inputs, so a task must know how many rows come before its
input. With more than one unit of work a first, cheaper pass counts the rows of every unit in parallel (each line
is split and checked, only ``label`` is converted, so wrong-width lines are counted or reported as in the
conversion); the second pass converts with the offsets. ``.gz`` files are then decompressed twice.

>>> _units([("a.tsv", 10, False), ("b.gz", 10, True)], split_bytes=4)
[(0, 0, 'a.tsv', (0, 4)), (0, 1, 'a.tsv', (4, 8)), (0, 2, 'a.tsv', (8, 10)), (1, 0, 'b.gz', None)]
>>> _shard_prefix(3, 1)
'part-00003-0001-'
"""

from __future__ import annotations

import os
import pickle
import re
import time
from typing import Any, Optional, Sequence

from dist_ctr.data.criteo import (
    ConvertReport,
    _BadLines,
    _check_options,
    _prepare_out,
    _ShardWriter,
    _write_info,
    convert_criteo_input,
    iter_criteo_batches,
)
from dist_ctr.data.errors import DataError, DataPathNotFoundError, StorageAccessError
from dist_ctr.errors import DistCtrError
from dist_ctr.strict import ConfigError

__all__ = ["convert_criteo_ray"]

Unit = tuple[int, int, str, Optional[tuple[int, int]]]  # (input index, range index, url, byte range or None)
_OUR_SHARD = re.compile(r"part-\d{5}-\d{4}-\d{5}\.parquet$")


def _units(sized: Sequence[tuple[str, int, bool]], split_bytes: Optional[int]) -> list[Unit]:
    """Units of work: ``(url, size, gz)`` -> one unit per file, or per ``split_bytes`` range of a plain file."""
    out: list[Unit] = []
    for i, (url, size, gz) in enumerate(sized):
        if gz or not split_bytes or size <= split_bytes:
            out.append((i, 0, url, None))
            continue
        for k, a in enumerate(range(0, size, split_bytes)):
            out.append((i, k, url, (a, min(a + split_bytes, size))))
    return out


def _shard_prefix(i: int, k: int) -> str:
    return f"part-{i:05d}-{k:04d}-"


def _stat_inputs(inputs: Sequence[str], so: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """``(url, size, gz)`` of each input, checked on the driver so a missing one fails before any task starts."""
    import fsspec

    out = []
    for url in inputs:
        try:
            fs, path = fsspec.core.url_to_fs(url, **so)
            if not fs.exists(path):
                raise DataPathNotFoundError("input file not found", file=url)
            if fs.isdir(path):
                raise DataError("is a directory; give the TSV files themselves", file=url)
            size = int(fs.size(path))
        except (OSError, ImportError) as e:
            raise StorageAccessError(f"cannot read: {e}", file=url) from None
        out.append((url, size, path.endswith(".gz")))
    return out


def _as_row(fn: Any) -> Any:
    """Wraps a unit function for Ray Data ``map``: a project error comes back in the row (``error``, pickled), so
    the driver re-raises it as it was (Ray would wrap it, and drop the cause when it crosses processes)."""

    def run(row: dict[str, Any]) -> dict[str, Any]:
        a = pickle.loads(row["item"])
        try:
            out = fn(a)
        except DistCtrError as e:
            return {"key": a["key"], "result": b"", "error": pickle.dumps(e)}
        return {"key": a["key"], "result": pickle.dumps(out), "error": b""}

    run.__name__ = fn.__name__
    return run


def _count_unit(a: dict[str, Any]) -> int:
    """Rows of one unit (same parser and bad-line rule as the conversion)."""
    batches = iter_criteo_batches(a["url"], a["so"], a["bad_lines"], a["block_size"], _BadLines(a["bad_lines"]),
                                  byte_range=_rng(a["byte_range"]), label_only=True)
    return sum(b.num_rows for b in batches)


def _convert_unit(a: dict[str, Any]) -> dict[str, Any]:
    """Convert one unit into its own shards; returns its report."""
    import fsspec

    t0 = time.perf_counter()
    try:
        fs, root = fsspec.core.url_to_fs(a["out_url"], **a["so"])
        root = root.rstrip("/")
        fs.makedirs(root, exist_ok=True)  # made by the driver, but maybe on another node's disk
    except (OSError, ImportError) as e:
        raise StorageAccessError(f"cannot use the output directory: {e}", file=a["out_url"]) from None
    writer = _ShardWriter(fs, root, a["rows_per_shard"], a["row_group_rows"], a["compression"], prefix=a["prefix"])
    bad = _BadLines(a["bad_lines"])
    rows, positives = convert_criteo_input(a["url"], writer, storage_options=a["so"], bad_lines=a["bad_lines"],
                                           block_size=a["block_size"], hash_categoricals=a["hash"],
                                           vocab=a["vocab"], row_id_start=a["row_id_start"], counter=bad,
                                           byte_range=_rng(a["byte_range"]))
    writer.close()
    return {"input": a["url"], "byte_range": a["byte_range"], "rows": rows, "positives": positives,
            "bad_lines": bad.count, "bad_line_examples": bad.examples, "files": writer.files, "bytes": writer.bytes,
            "seconds": time.perf_counter() - t0}


def _rng(r: Optional[list[int]]) -> Optional[tuple[int, int]]:
    return None if r is None else (int(r[0]), int(r[1]))


def _ensure_ray(num_workers: int, ray_init: Optional[dict[str, Any]]) -> None:
    """Connect to ``RAY_ADDRESS`` (or ``ray_init["address"]``) or start a local runtime of ``num_workers`` CPUs."""
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(ray_init or {})
    if not kwargs.get("address") and not os.environ.get("RAY_ADDRESS"):
        kwargs.setdefault("num_cpus", num_workers)
        kwargs.setdefault("include_dashboard", False)
    ray.init(**kwargs)


def _run(ray: Any, fn: Any, items: list[dict[str, Any]], num_workers: int, what: str,
         verbose: bool) -> dict[str, Any]:
    """``fn`` over ``items`` on Ray Data (one block, hence one task, per item); results by ``key``.

    Raises:
        DistCtrError: the first one a task met (the others' work is abandoned).
    """
    import logging

    ds = ray.data.from_items([{"item": pickle.dumps(x)} for x in items], override_num_blocks=len(items))
    pool = ray.data.TaskPoolStrategy(size=max(1, min(num_workers, len(items))))
    out: dict[str, Any] = {}
    log = logging.getLogger("ray.data")
    level = log.level
    log.setLevel(logging.WARNING)  # Ray Data's "Starting execution ..." lines; ours say what happened
    try:
        for row in ds.map(_as_row(fn), num_cpus=1, compute=pool).iter_rows():
            if row["error"]:
                raise pickle.loads(row["error"])
            out[row["key"]] = r = pickle.loads(row["result"])
            if verbose and isinstance(r, dict):
                rng = "" if r["byte_range"] is None else f" bytes {r['byte_range'][0]}-{r['byte_range'][1]}"
                print(f"[convert-criteo --ray] {r['input']}{rng}: {r['rows']:,} rows, {len(r['files'])} file(s), "
                      f"{r['bad_lines']} bad line(s) ({len(out)}/{len(items)} done)", flush=True)
    finally:
        log.setLevel(level)
    if verbose:
        print(f"[convert-criteo --ray] {what}: {len(out)} task(s) done", flush=True)
    return out


def _both_passes(ray: Any, units: list[Unit], so: dict[str, Any], bad_lines: str, block_size: int, out_url: str,
                 rows_per_shard: int, row_group_rows: int, compression: str, hash_categoricals: bool,
                 vocab: list[int], row_id_start: int, num_workers: int,
                 verbose: bool) -> tuple[dict[str, Any], list[int], int]:
    """Count pass (when more than one unit), then conversion pass; returns (reports by key, offsets, end row)."""
    common = {"so": so, "bad_lines": bad_lines, "block_size": block_size}
    items = [dict(common, key=f"{i}/{k}", url=url, byte_range=rng) for i, k, url, rng in units]
    offsets, n = [row_id_start], row_id_start
    if len(units) > 1:  # row_id needs the rows before each unit: count them first
        counts = _run(ray, _count_unit, items, num_workers, "count pass", verbose)
        offsets = []
        for it in items:
            offsets.append(n)
            n += int(counts[it["key"]])
    conv = [dict(it, out_url=out_url, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows,
                 compression=compression, hash=hash_categoricals, vocab=vocab, row_id_start=off,
                 prefix=_shard_prefix(i, k)) for it, off, (i, k, _, _) in zip(items, offsets, units)]
    return _run(ray, _convert_unit, conv, num_workers, "conversion", verbose), offsets, n


def convert_criteo_ray(inputs: Sequence[str] | str, out_url: str, *, num_workers: int = 2,
                       storage_options: dict[str, Any] | None = None, rows_per_shard: int = 2_000_000,
                       row_group_rows: int = 131_072, hash_categoricals: bool = False,
                       vocab_sizes: Sequence[int] | None = None, bad_lines: str = "error", row_id_start: int = 0,
                       compression: str = "snappy", block_size: int = 1 << 24, overwrite: bool = False,
                       verbose: bool = False, split_bytes: Optional[int] = 1 << 30,
                       ray_init: Optional[dict[str, Any]] = None) -> ConvertReport:
    """Convert Criteo TSV files (plain or ``.gz``) to Parquet shards under ``out_url`` with Ray Data tasks.

    Args:
        inputs (Sequence[str] | str): TSV paths / URLs; ``row_id`` follows their order.
        out_url (str): output directory URL, reachable from every Ray worker (``s3://``, a shared path ...).
        num_workers (int): tasks at once (and the CPUs of a local Ray runtime started here).
        storage_options (dict | None): fsspec options for inputs and output; never written or printed.
        rows_per_shard (int): rows per output file, per task (each task's last file may hold fewer).
        row_group_rows (int): rows per Parquet row group.
        hash_categoricals (bool): write ``stable_hash`` ids instead of hex strings.
        vocab_sizes (Sequence[int] | None): 26 vocabularies for hashing (default: MLPerf Criteo-1TB).
        bad_lines (str): "error" or "skip", as in :func:`~dist_ctr.data.criteo.convert_criteo`.
        row_id_start (int): ``row_id`` of the first row.
        compression (str): Parquet codec.
        block_size (int): bytes of text parsed at once per task.
        overwrite (bool): write into a non-empty ``out_url``.
        verbose (bool): print one line per finished task.
        split_bytes (int | None): plain-text inputs larger than this are split into ranges of about this many
            bytes, at line boundaries (``None``: one task per file).
        ray_init (dict | None): ``ray.init`` arguments when no Ray runtime is up (default: ``RAY_ADDRESS`` if set,
            else a local runtime of ``num_workers`` CPUs without dashboard).

    Returns:
        ConvertReport: totals as from ``convert_criteo``; ``per_input`` has one entry per task, in input order.

    Raises:
        DataError: a missing input, a wrong-width line (``bad_lines="error"``) or an unparsable value.
        ConfigError: bad options or a non-empty ``out_url`` without ``overwrite``.
        StorageAccessError: an input or the output cannot be reached or written.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = [str(x) for x in inputs]
    if not inputs:
        raise ConfigError("convert_criteo_ray: no input files given")
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    if split_bytes is not None and split_bytes < 1:
        raise ConfigError(f"split_bytes must be >= 1 or None, got {split_bytes}")
    vocab = _check_options(rows_per_shard, row_group_rows, bad_lines, vocab_sizes)
    so = dict(storage_options or {})
    units = _units(_stat_inputs(inputs, so), split_bytes)
    fs, root = _prepare_out(out_url, so, overwrite)

    import ray

    t0 = time.perf_counter()
    _ensure_ray(num_workers, ray_init)
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False  # our lines say what finished
    try:
        done, offsets, n = _both_passes(ray, units, so, bad_lines, block_size, out_url, rows_per_shard,
                                        row_group_rows, compression, hash_categoricals, vocab, row_id_start,
                                        num_workers, verbose)
    finally:
        ctx.enable_progress_bars = bars
    reps = [done[f"{i}/{k}"] for i, k, _, _ in units]
    for r, off, end in zip(reps, offsets, offsets[1:] + [n]):
        if len(units) > 1 and off + r["rows"] != end:
            raise DataError("changed while being converted (row counts of the two passes differ)", file=r["input"])
    files = [f for r in reps for f in r["files"]]
    mine = set(files)
    try:  # shards of our naming pattern from an earlier run with another layout would duplicate rows
        fs.invalidate_cache(root)
        for p in fs.ls(root, detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if _OUR_SHARD.match(name) and name not in mine:
                fs.rm(p)
    except OSError as e:
        raise StorageAccessError(f"cannot remove an old shard: {e}", file=out_url) from None
    rows = sum(r["rows"] for r in reps)
    positives = sum(r["positives"] for r in reps)
    dt = time.perf_counter() - t0
    per_input = [{k: r[k] for k in ("input", "byte_range", "rows", "bad_lines", "files", "seconds")} for r in reps]
    rep = ConvertReport(inputs=inputs, out_url=out_url, rows=rows, files=files, bytes=sum(r["bytes"] for r in reps),
                        seconds=dt, rows_per_s=rows / max(dt, 1e-9), bad_lines=sum(r["bad_lines"] for r in reps),
                        bad_line_examples=[x for r in reps for x in r["bad_line_examples"]][:5],
                        positive_rate=positives / rows if rows else float("nan"), hashed=hash_categoricals,
                        per_input=per_input)
    _write_info(fs, root, rep, vocab, "dist_ctr.launch.ray_convert", row_id_start=row_id_start,
                rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, split_bytes=split_bytes,
                num_workers=num_workers)
    return rep
