"""``dist-ctr data ...``: synthetic data and Criteo conversion. Parsing only; the work is in ``dist_ctr.data``.

    dist-ctr data synth OUT --preset criteo-kaggle --rows 1000000 --shards 8 [--dates 2026-11-20..2026-11-22]
    dist-ctr data convert-criteo day_0.gz day_1.gz --out s3://bucket/criteo/parquet --hash
    dist-ctr data convert-criteo day_*.gz --out s3://bucket/criteo/parquet --hash --ray --num-workers 24

``cli.py`` wires these in with :func:`add_data_commands`; each command prints one summary line.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="dist-ctr data")
>>> add_data_commands(p.add_subparsers(dest="data_command"))
>>> a = p.parse_args(["synth", "out", "--rows", "10", "--dates", "2026-11-20..2026-11-22"])
>>> a.rows, expand_partitions(a.dates)
(10, ['2026-11-20', '2026-11-21', '2026-11-22'])
"""

from __future__ import annotations

import argparse
import datetime as _dt
from typing import Any, Sequence

from dist_ctr.strict import ConfigError

__all__ = ["add_data_commands", "expand_partitions", "parse_storage_options"]


def expand_partitions(spec: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; an ISO date range ``"2026-11-20..2026-11-22"`` expands to every day in it."""
    if not spec:
        return None
    out: list[str] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        if ".." in item:
            a, b = item.split("..", 1)
            try:
                d0, d1 = _dt.date.fromisoformat(a.strip()), _dt.date.fromisoformat(b.strip())
            except ValueError:
                raise ConfigError(f"bad date range {item!r}: expected YYYY-MM-DD..YYYY-MM-DD") from None
            if d1 < d0:
                raise ConfigError(f"bad date range {item!r}: the end is before the start")
            out += [(d0 + _dt.timedelta(days=k)).isoformat() for k in range((d1 - d0).days + 1)]
        else:
            out.append(item)
    return out


def parse_storage_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict (values parsed as YAML scalars: numbers, booleans, strings)."""
    import yaml

    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--storage-option expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _int_list(spec: str) -> list[int]:
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {spec!r}") from None


def _cmd_synth(args: argparse.Namespace) -> int:
    from dist_ctr.data.presets import get_preset
    from dist_ctr.data.synthetic import PlantedSignal, generate
    from dist_ctr.schema import FeatureSchema

    if args.schema:
        schema = FeatureSchema.load(args.schema)
        name: Any = schema
    else:
        kwargs: dict[str, Any] = {"use_hash": args.use_hash}
        if args.embedding_dim is not None:
            kwargs["embedding_dim"] = args.embedding_dim
        name = get_preset(args.preset, **kwargs)
    signal = PlantedSignal(**({"n_pairs": args.pairs} if args.pairs is not None else {}), fixed_bags=args.fixed_bags)
    rates = [float(x) for x in args.positive_rate.split(",")]
    rep = generate(args.out, name, rows=args.rows, shards=args.shards, row_group_rows=args.row_group_rows,
                   seed=args.seed, partitions=expand_partitions(args.dates), partition_key=args.partition_key,
                   tasks=args.tasks, sequences=args.sequences, seq_maxlen=args.seq_maxlen, raw_hex=args.raw_hex,
                   row_id_start=args.row_id_start, positive_rate=rates[0] if len(rates) == 1 else rates,
                   signal=signal, model_seed=args.model_seed, compression=args.compression,
                   storage_options=parse_storage_options(args.storage_option), overwrite=args.overwrite,
                   workers=args.workers, verbose=args.verbose)
    print(f"[data synth] {rep.summary()}")
    if len(rep.bayes_aucs) > 1:
        print("[data synth] Bayes AUC per task: " + ", ".join("-" if a is None else f"{a:.4f}" for a in rep.bayes_aucs))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from dist_ctr.data.criteo import convert_criteo
    from dist_ctr.data.presets import (
        CRITEO_1TB_CARDINALITIES,
        CRITEO_1TB_MLPERF_CARDINALITIES,
        CRITEO_KAGGLE_CARDINALITIES,
    )

    named = {"criteo-1tb": CRITEO_1TB_MLPERF_CARDINALITIES, "criteo-1tb-full": CRITEO_1TB_CARDINALITIES,
             "criteo-kaggle": CRITEO_KAGGLE_CARDINALITIES}
    vocab = None
    if args.vocab_sizes:
        vocab = list(named[args.vocab_sizes]) if args.vocab_sizes in named else _int_list(args.vocab_sizes)
    common: dict[str, Any] = dict(
        rows_per_shard=args.rows_per_shard, row_group_rows=args.row_group_rows, hash_categoricals=args.hash,
        vocab_sizes=vocab, storage_options=parse_storage_options(args.storage_option), bad_lines=args.bad_lines,
        row_id_start=args.row_id_start, compression=args.compression, overwrite=args.overwrite, verbose=args.verbose)
    if not args.ray:
        if args.num_workers is not None or args.split_mb is not None:
            raise ConfigError("--num-workers and --split-mb go with --ray")
        rep = convert_criteo(args.inputs, args.out, **common)
        print(f"[data convert-criteo] {rep.summary()}")
        return 0
    from dist_ctr.launch.ray_convert import convert_criteo_ray

    workers = 2 if args.num_workers is None else args.num_workers
    split_mb = 1024.0 if args.split_mb is None else args.split_mb
    if split_mb < 0:
        raise ConfigError(f"--split-mb must be >= 0 (0: one task per file), got {split_mb}")
    rep = convert_criteo_ray(args.inputs, args.out, num_workers=workers,
                             split_bytes=int(split_mb * (1 << 20)) or None, **common)
    print(f"[data convert-criteo] {rep.summary()}")
    for r in rep.per_input:
        rng = "" if r["byte_range"] is None else f" bytes {r['byte_range'][0]}-{r['byte_range'][1]}"
        print(f"[data convert-criteo]   {r['input']}{rng}: {r['rows']:,} rows, {r['bad_lines']:,} bad line(s), "
              f"{len(r['files'])} file(s): {', '.join(r['files'])}")
    return 0


def add_data_commands(subparsers: Any) -> None:
    """Register ``synth`` and ``convert-criteo`` on the ``dist-ctr data`` sub-parsers."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    s = subparsers.add_parser(
        "synth", formatter_class=fmt, help="write a synthetic Criteo-like Parquet data set with a planted signal",
        description="Write Parquet shards of synthetic CTR data: Zipf ids, a planted logistic model with "
                    "first-order, pairwise and dense effects, calibrated to the positive rate. Prints rows, files, "
                    "bytes, rows/s and the generator's Bayes AUC (the ceiling any model can reach). Also writes "
                    "schema.yaml and _synth.json next to the data.")
    s.add_argument("out", help="output directory: a path or fsspec URL (s3://bucket/prefix, memory://x, ...)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--preset", default="criteo-kaggle", help="schema preset: criteo-kaggle | criteo-1tb")
    g.add_argument("--schema", default=None, help="a schema .yaml/.json file instead of a preset")
    s.add_argument("--embedding-dim", type=int, default=None, help="preset embedding dim (preset default if unset)")
    s.add_argument("--use-hash", action="store_true", help="preset categoricals are use_hash features")
    s.add_argument("--raw-hex", action="store_true", help="write use_hash categoricals as 8-char hex strings")
    s.add_argument("--rows", type=int, default=1_000_000, help="rows in all")
    s.add_argument("--shards", type=int, default=4, help="files per partition")
    s.add_argument("--row-group-rows", type=int, default=65_536, help="rows per Parquet row group")
    s.add_argument("--seed", type=int, default=0, help="seed of the rows (same args -> same bytes)")
    s.add_argument("--model-seed", type=int, default=0, help="seed of the planted model (keep for train/eval pairs)")
    s.add_argument("--dates", default=None, metavar="SPEC",
                   help="Hive partitions: comma list and/or YYYY-MM-DD..YYYY-MM-DD ranges (-> date=.../)")
    s.add_argument("--partition-key", default="date", help="key of the partition directories")
    s.add_argument("--tasks", type=int, default=None, help="number of correlated binary labels")
    s.add_argument("--sequences", action="store_true", help="add item_id + behaviour history hist_item_id")
    s.add_argument("--seq-maxlen", type=int, default=20, help="history length cap")
    s.add_argument("--pairs", type=int, default=None, help="number of planted pairwise effects (default 6)")
    s.add_argument("--fixed-bags", action="store_true", help="every multi-hot bag holds exactly maxlen ids (MLPerf)")
    s.add_argument("--positive-rate", default="0.25", help="target positive rate (comma list: one per task)")
    s.add_argument("--row-id-start", type=int, default=0, help="first row_id")
    s.add_argument("--compression", default="snappy", help="Parquet codec (snappy, zstd, lz4, none)")
    s.add_argument("--workers", type=int, default=1, help="processes writing files in parallel")
    s.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec storage option, e.g. endpoint_url=http://127.0.0.1:5000 (repeatable)")
    s.add_argument("--overwrite", action="store_true", help="replace files in OUT that the generator did not write")
    s.add_argument("-v", "--verbose", action="store_true", help="one line per file")
    s.set_defaults(fn=_cmd_synth)

    c = subparsers.add_parser(
        "convert-criteo", formatter_class=fmt, help="convert Criteo TSV (plain or .gz) to Parquet shards",
        description="Stream Criteo click-log TSV files (Kaggle train.txt, 1TB day_N; 40 tab-separated fields "
                    "label, I1..I13, C1..C26; .gz read on the fly) into Parquet shards with bounded memory. "
                    "Categoricals stay hex strings or, with --hash, become stable_hash ids modulo the vocabulary.")
    c.add_argument("inputs", nargs="+", help="TSV files or URLs, in order")
    c.add_argument("--out", required=True, help="output directory: a path or fsspec URL")
    c.add_argument("--rows-per-shard", type=int, default=2_000_000, help="rows per output file")
    c.add_argument("--row-group-rows", type=int, default=131_072, help="rows per Parquet row group")
    c.add_argument("--hash", action="store_true", help="hash categoricals to int ids on the way")
    c.add_argument("--vocab-sizes", default=None,
                   help="for --hash: criteo-1tb (MLPerf, default) | criteo-1tb-full | criteo-kaggle | 26 comma ints")
    c.add_argument("--bad-lines", choices=["error", "skip"], default="error",
                   help="a line with the wrong field count: stop with an error naming it, or skip and count")
    c.add_argument("--row-id-start", type=int, default=0, help="row_id of the first row")
    c.add_argument("--compression", default="snappy", help="Parquet codec")
    c.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec storage option (repeatable)")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    c.add_argument("--ray", action="store_true",
                   help="convert on Ray Data, one task per input (or per --split-mb range of a plain file); same "
                        "rows as without, shards named part-<input>-<range>-<shard>.parquet; connects to "
                        "RAY_ADDRESS when set, else starts a local Ray")
    c.add_argument("--num-workers", type=int, default=None, help="with --ray: tasks at once (default 2)")
    c.add_argument("--split-mb", type=float, default=None,
                   help="with --ray: split plain-text inputs into ranges of this many MiB (default 1024; 0: never)")
    c.add_argument("-v", "--verbose", action="store_true", help="one line per input")
    c.set_defaults(fn=_cmd_convert)
