"""Throughput of the synthetic generator (``dist_ctr.data.synthetic.generate``): rows written per second.

    python scripts/bench_synth.py                       # 2M rows per case, local temp dir
    python scripts/bench_synth.py --rows 5000000 --cases kaggle,kaggle-2w --out /tmp/bench_synth

Prints, per case: rows/s on the wall clock, rows per CPU-second of this process and its workers (a figure that
a busy shared machine disturbs less), MB written and the Bayes AUC. Speed is printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
from pathlib import Path

from dist_ctr.data.presets import get_preset
from dist_ctr.data.synthetic import generate

CASES = {
    # name: (preset kwargs, generate kwargs)
    "kaggle": ({}, {}),
    "kaggle-none": ({}, {"compression": "none"}),
    "kaggle-2w": ({}, {"workers": 2}),
    "kaggle-hex": ({"use_hash": True}, {"raw_hex": True}),
    "kaggle-seq-mt": ({}, {"sequences": True, "tasks": 2}),
    "1tb": ({"capped": True}, {}),
}


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--row-group-rows", type=int, default=65_536)
    p.add_argument("--cases", default="kaggle,kaggle-none,kaggle-2w,kaggle-hex,kaggle-seq-mt,1tb")
    p.add_argument("--out", default=None, help="output directory (default: a temp dir, removed afterwards)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case; the best is printed")
    args = p.parse_args(argv)

    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_synth_"))
    print(f"# bench_synth: {args.rows:,} rows per case, {args.shards} shards, row groups of {args.row_group_rows:,}; "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'case':<15}{'rows/s (wall)':>15}{'rows/cpu-s':>13}{'seconds':>9}{'MB':>9}{'bayes_auc':>11}"
          f"{'first_order':>12}")
    try:
        for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
            if name not in CASES:
                raise SystemExit(f"unknown case {name!r}; known: {sorted(CASES)}")
            pk, gk = CASES[name]
            schema = get_preset("criteo-1tb" if name.startswith("1tb") else "criteo-kaggle", **pk)
            best = None
            for _ in range(args.repeat):
                c0 = _cpu_seconds()
                rep = generate(str(base / name), schema, rows=args.rows, shards=args.shards,
                               row_group_rows=args.row_group_rows, seed=0, overwrite=True, **gk)
                cpu = _cpu_seconds() - c0
                if best is None or rep.seconds < best[0].seconds:
                    best = (rep, cpu)
            assert best is not None
            rep, cpu = best
            print(f"{name:<15}{rep.rows_per_s:>15,.0f}{rep.rows / max(cpu, 1e-9):>13,.0f}{rep.seconds:>9.2f}"
                  f"{rep.bytes / 1e6:>9.1f}{rep.bayes_auc:>11.4f}{rep.first_order_auc:>12.4f}", flush=True)
            shutil.rmtree(base / name, ignore_errors=True)
    finally:
        if not args.out:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
