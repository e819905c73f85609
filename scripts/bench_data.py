"""Data-loader throughput and memory: Parquet -> ready ``CTRBatch`` (KJT + dense + labels), one rank.

Measures, on Criteo-shaped data (13 dense float32, 26 sparse, 1 binary label, row-id column):

1. local Parquet, pre-hashed int64 ids, one core (``num_workers=1``, no prefetch thread, Arrow and torch threads
   1), shuffle on -- and the same with the background prefetch thread;
2. local Parquet, raw 8-char hex strings hashed by the loader (``use_hash``);
3. the same pre-hashed data read through ``s3://`` from a loopback moto S3 server (in this process: the server's
   CPU is counted too);
4. peak RSS of a full pass over ``--rows`` (default 10M) rows and over a tenth of them, each in a fresh process,
   to show memory stays flat as the data grows (bounded by the shuffle window and the prefetch queue).

"One core" figures are printed twice: wall-clock rows/s, and rows per CPU-second of the (single-threaded) loader
process, which stays meaningful when other jobs share the machine. The one-core pass is repeated (``--repeat``)
and its spread printed; every timed pass follows a short untimed warm-up in the same process (imports and lazy
initialisation are not the loader's per-row cost). The RSS lines give the child's RSS after imports and listing,
its peak over the first half of the pass and over all of it (``VmHWM``), and the loader's own memory (peak minus the
RSS before the pass): flat memory means the same peak for 1M and 10M rows, reached early. Prints figures; asserts
nothing. Usage:
    python scripts/bench_data.py [--rows 10000000] [--batch 4096] [--repeat 3] [--skip-s3] [--workdir /tmp/bench_data]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

N_DENSE, N_SPARSE = 13, 26
VOCAB = 1_000_000


def schema(hashed: bool):
    from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat

    feats = [DenseFeat(f"I{i + 1}") for i in range(N_DENSE)]
    feats += [SparseFeat(f"C{i + 1}", VOCAB, 16, use_hash=not hashed) for i in range(N_SPARSE)]
    return FeatureSchema(tuple(feats), (LabelSpec("label"),))


def write_data(root: Path, rows: int, hashed: bool, file_rows: int = 1_000_000, row_group: int = 131_072) -> None:
    """Criteo-shaped shards: counts-like dense values with nulls, Zipf-ish ids (ints or hex strings)."""
    if (root / "_DONE").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    start = 0
    part = 0
    while start < rows:
        n = min(file_rows, rows - start)
        cols: dict[str, pa.Array] = {"row_id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        for i in range(N_DENSE):
            x = rng.exponential(5.0, n).astype(np.float32)
            cols[f"I{i + 1}"] = pa.array(x, mask=rng.random(n) < 0.05)
        for i in range(N_SPARSE):
            ids = (rng.pareto(1.2, n) * 100).astype(np.int64) % VOCAB
            if hashed:
                cols[f"C{i + 1}"] = pa.array(ids)
            else:
                cols[f"C{i + 1}"] = pa.array(np.char.mod("%08x", ids * 2654435761 % (1 << 32)).astype(object),
                                             pa.string())
        cols["label"] = pa.array((rng.random(n) < 0.25).astype(np.int8))
        pq.write_table(pa.table(cols), root / f"part-{part:05d}.parquet", row_group_size=row_group)
        start += n
        part += 1
    (root / "_DONE").write_text("")


def run_pass(url: str, hashed: bool, batch: int, prefetch: int, storage_options: dict | None = None,
             max_rows: int = 0, warmup_batches: int = 0) -> dict:
    """One pass of a fresh loader (rank 0 of 1, shuffled, one reader thread), after ``warmup_batches`` batches of
    another loader over the same data (untimed)."""
    import torch

    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader

    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(2)
    cfg = DataConfig(url=url, batch_size=batch, shuffle_buffer_rows=262_144, num_workers=1, prefetch=prefetch,
                     storage_options=storage_options or {})
    if warmup_batches:
        for i, _ in enumerate(build_loader(schema(hashed), cfg, seed=1)):
            if i + 1 >= warmup_batches:
                break
    t0 = time.perf_counter()
    loader = build_loader(schema(hashed), cfg, seed=0)
    t_list = time.perf_counter() - t0
    rows = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for b in loader:
        rows += b.batch_size
        assert b.sparse.values().dtype == torch.int64
        if max_rows and rows >= max_rows:
            break
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"rows": rows, "seconds": dt, "rows_per_s": rows / dt, "cpu_s": cpu, "rows_per_cpu_s": rows / cpu,
            "listing_s": t_list}


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (MB): ``VmRSS`` now, ``VmHWM`` its peak.

    ``VmHWM`` belongs to this process image; ``getrusage``'s ``ru_maxrss`` would not do here: Linux carries it over
    from the parent through fork and exec, so a child started by a big parent reports the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _rss_child(url: str, batch: int) -> None:
    import torch

    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader

    cfg = DataConfig(url=url, batch_size=batch, shuffle_buffer_rows=262_144, num_workers=1, prefetch=4)
    for i, _ in enumerate(build_loader(schema(True), cfg, seed=1)):  # warm-up: lazy imports are not the loader's
        if i >= 1:
            break
    gc.collect()
    loader = build_loader(schema(True), cfg, seed=0)
    base = _status_mb("VmRSS")
    half_step, half_peak = len(loader) // 2, 0.0
    rows = 0
    t0 = time.perf_counter()
    for i, b in enumerate(loader):
        rows += b.batch_size
        assert b.sparse.values().dtype == torch.int64
        if i == half_step:
            half_peak = _status_mb("VmHWM")
    dt = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"rows": rows, "rows_per_s": rows / dt, "base_rss_mb": base, "peak_rss_mb": peak,
                      "half_peak_rss_mb": half_peak}))


def peak_rss(url: str, batch: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--rss-child", url, "--batch", str(batch)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def s3_pass(local_root: Path, batch: int, max_rows: int) -> dict:
    import socket

    import s3fs
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        opts = {"endpoint_url": f"http://127.0.0.1:{port}", "skip_instance_cache": True}
        fs = s3fs.S3FileSystem(**opts)
        fs.mkdir("bench")
        files = sorted(local_root.glob("*.parquet"))
        need = max(1, -(-max_rows // 1_000_000))
        for f in files[:need]:
            fs.put(str(f), f"bench/data/{f.name}")
        return run_pass("s3://bench/data", True, batch, prefetch=4, storage_options=opts, max_rows=max_rows)
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the pre-hashed set (RSS pass)")
    ap.add_argument("--speed-rows", type=int, default=2_000_000, help="rows timed for the speed figures")
    ap.add_argument("--hex-rows", type=int, default=1_000_000, help="rows of the raw hex-string set")
    ap.add_argument("--s3-rows", type=int, default=1_000_000, help="rows read through the loopback S3 server")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the one-core pre-hashed pass")
    ap.add_argument("--workdir", default="/tmp/bench_data")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        _rss_child(a.rss_child, a.batch)
        return
    wd = Path(a.workdir)
    small_rows = max(a.rows // 10, 1)
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; pyarrow {pa.__version__}, numpy {np.__version__}",
          flush=True)
    t0 = time.perf_counter()
    write_data(wd / "hashed", a.rows, hashed=True)
    write_data(wd / "hashed_small", small_rows, hashed=True)
    write_data(wd / "hex", a.hex_rows, hashed=False)
    print(f"[bench_data] data ready under {wd} ({time.perf_counter() - t0:.1f}s); batch {a.batch}, "
          f"{N_DENSE} dense + {N_SPARSE} sparse + label, shuffle window 262144 rows", flush=True)

    runs = []
    for i in range(a.repeat):
        r = run_pass(str(wd / "hashed"), True, a.batch, prefetch=0, max_rows=a.speed_rows, warmup_batches=8)
        runs.append(r)
        print(f"local pre-hashed int64, one core, no prefetch thread : {r['rows_per_s'] / 1e6:6.2f} M rows/s wall, "
              f"{r['rows_per_cpu_s'] / 1e6:.2f} M rows per CPU-second ({r['rows']:,} rows in {r['seconds']:.2f}s; "
              f"listing {r['listing_s']:.2f}s) [run {i + 1}/{a.repeat}]", flush=True)
    if len(runs) > 1:
        cpu = sorted(r["rows_per_cpu_s"] / 1e6 for r in runs)
        wall = sorted(r["rows_per_s"] / 1e6 for r in runs)
        print(f"  one core over {len(runs)} runs: rows per CPU-second median {statistics.median(cpu):.2f}M "
              f"(min {cpu[0]:.2f}, max {cpu[-1]:.2f}); wall median {statistics.median(wall):.2f}M "
              f"(min {wall[0]:.2f}, max {wall[-1]:.2f})", flush=True)
    r = run_pass(str(wd / "hashed"), True, a.batch, prefetch=4, max_rows=a.speed_rows, warmup_batches=8)
    print(f"local pre-hashed int64, prefetch thread (queue 4)    : {r['rows_per_s'] / 1e6:6.2f} M rows/s", flush=True)
    r = run_pass(str(wd / "hex"), False, a.batch, prefetch=0, warmup_batches=8)
    print(f"local raw hex strings hashed by the loader, one core : {r['rows_per_s'] / 1e6:6.2f} M rows/s wall, "
          f"{r['rows_per_cpu_s'] / 1e6:.2f} M rows per CPU-second ({r['rows']:,} rows)", flush=True)
    if not a.skip_s3:
        r = s3_pass(wd / "hashed", a.batch, a.s3_rows)
        print(f"s3:// pre-hashed via loopback moto server             : {r['rows_per_s'] / 1e6:6.2f} M rows/s "
              f"({r['rows']:,} rows; server in-process)", flush=True)
    if not a.skip_rss:
        got = []
        for url, n in ((wd / "hashed_small", small_rows), (wd / "hashed", a.rows)):
            r = peak_rss(str(url), a.batch)
            got.append(r)
            print(f"full pass over {n:>11,} rows (prefetch 4): RSS after imports + listing {r['base_rss_mb']:4.0f} MB, "
                  f"peak {r['peak_rss_mb']:4.0f} MB (over the first half {r['half_peak_rss_mb']:4.0f} MB), loader's "
                  f"own {r['peak_rss_mb'] - r['base_rss_mb']:4.0f} MB; {r['rows_per_s'] / 1e6:.2f} M rows/s",
                  flush=True)
        small, big = got
        own_s, own_b = small["peak_rss_mb"] - small["base_rss_mb"], big["peak_rss_mb"] - big["base_rss_mb"]
        grow = big["peak_rss_mb"] - small["peak_rss_mb"]
        print(f"memory flatness: {a.rows / small_rows:.0f}x the rows -> peak RSS {grow:+.0f} MB "
              f"({big['peak_rss_mb'] / small['peak_rss_mb']:.2f}x), loader's own {own_b - own_s:+.0f} MB", flush=True)


if __name__ == "__main__":
    main()
