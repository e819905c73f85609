"""Is the loader ever the bottleneck? Training on pre-built in-memory batches vs streaming from the ParquetLoader.

One model (default DeepFM; ``--models DeepFM,DCN`` for more), trained through the real engine exactly as
``scripts/bench_train.py`` does (``Trainer.train_step``: DistributedModelParallel at world size 1, fused
rowwise-Adagrad embeddings, dense Adam) on the same Criteo-shaped schema (26 sparse features with the demo preset's
vocabularies, 13 dense, embedding dim 16), over a synthetic Parquet set written by ``dist_ctr.data.synthetic``:

- (a) ``memory``: the epoch's batches, read once from the Parquet set by the loader and kept in a list;
- (b) ``stream``: the same loader streaming the same Parquet set with its background prefetch thread (the
  configuration a job uses: ``num_workers=1``, ``prefetch=4``, shuffle window 65,536 rows); the timing of a chunk
  starts before its first batch is requested, so the first window's read is inside it;
- (c) ``loader``: the loader alone (no training, no prefetch thread), for its own rows/s and rows per CPU-second.

Besides samples/s, each training arm prints this process's CPU-microseconds per sample (the loader thread included
in ``stream``): a figure that other jobs on the machine disturb less than the wall clock.

Each chunk is one epoch (every batch of the set), and the arms are interleaved round after round (the order
alternates) so that other jobs on the machine hit them alike. On a 2-core machine shared with other jobs, torch's
2 OpenMP threads spin-wait for each other whenever one is descheduled (measured: 20x the CPU per sample); run with
``--torch-threads 1`` or ``OMP_WAIT_POLICY=PASSIVE`` there, or the figures measure the spinning, not the loader.
Prints per-round samples/s, the stream / memory ratio (median and range over rounds) and the loader's own speed;
asserts nothing. Usage:
    python scripts/bench_loader_training.py [--rows 262144] [--batch 4096] [--rounds 5] [--models DeepFM,DCN]
                                            [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from dist_ctr.bench.timing import time_steps
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.config import DataConfig
from dist_ctr.data.loader import ParquetLoader, build_loader
from dist_ctr.data.presets import criteo_kaggle_schema
from dist_ctr.data.synthetic import generate
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import build_model
from dist_ctr.train.engine import Trainer
from dist_ctr.train.job import quiet_torchrec


class _Slot:
    """A placeholder batch for ``time_steps``: the step takes the real one from the loader."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size


def run_memory(trainer: Trainer, batches: list[CTRBatch]) -> tuple[float, float]:
    """(samples/s, CPU-microseconds of this process per sample) of training steps over pre-built batches."""
    c0 = time.process_time()
    rate = time_steps(trainer.train_step, batches, 0)
    return rate, (time.process_time() - c0) * 1e6 / sum(b.batch_size for b in batches)


def run_stream(trainer: Trainer, loader: ParquetLoader, epoch: int) -> tuple[float, float]:
    """(samples/s, CPU-microseconds per sample, loader thread included) of training steps over one epoch streamed
    by ``loader`` (its startup included)."""
    loader.set_epoch(epoch)
    it = iter(loader)  # a generator: nothing is read before the first step asks for a batch
    steps = len(loader)

    def step(_slot: _Slot) -> None:
        trainer.train_step(next(it))

    c0 = time.process_time()
    rate = time_steps(step, [_Slot(loader.cfg.batch_size)] * steps, 0)
    cpu = time.process_time() - c0
    if next(it, None) is not None:
        raise RuntimeError("the loader yielded more batches than len(loader)")
    return rate, cpu * 1e6 / (steps * loader.cfg.batch_size)


def run_loader(loader: ParquetLoader, epoch: int) -> tuple[float, float]:
    """(rows/s wall, rows per CPU-second of this process) of the loader alone over one epoch."""
    loader.set_epoch(epoch)
    rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for b in loader:
        rows += b.batch_size
    return rows / (time.perf_counter() - t0), rows / max(1e-9, time.process_time() - c0)


def _spread(xs: list[float], scale: float = 1.0, fmt: str = "{:,.0f}") -> str:
    return (f"median {fmt.format(statistics.median(xs) * scale)} (min {fmt.format(min(xs) * scale)}, "
            f"max {fmt.format(max(xs) * scale)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=262_144, help="rows of the Parquet set (one epoch = one chunk)")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (memory, stream, loader)")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--models", default="DeepFM")
    ap.add_argument("--prefetch", type=int, default=4)
    ap.add_argument("--shuffle-buffer-rows", type=int, default=65_536)
    ap.add_argument("--sparse-optim", default="rowwise_adagrad")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--workdir", default=None, help="where the Parquet set goes (default: a temp dir, removed)")
    args = ap.parse_args()
    quiet_torchrec()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), pyarrow "
          f"{pa.__version__} with {pa.cpu_count()} CPU threads")
    schema = criteo_kaggle_schema(embedding_dim=args.dim)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_loader_training_"))
    try:
        t0 = time.perf_counter()
        rep = generate(str(work / "data"), schema, rows=args.rows, shards=4, seed=0, overwrite=True)
        print(f"data: {rep.rows:,} rows in {len(rep.files)} Parquet files ({rep.bytes / 1e6:.0f} MB, written in "
              f"{time.perf_counter() - t0:.1f}s); batch {args.batch}; loader num_workers 1, prefetch "
              f"{args.prefetch}, shuffle window {args.shuffle_buffer_rows:,} rows")
        cfg = DataConfig(url=str(work / "data"), batch_size=args.batch, shuffle_buffer_rows=args.shuffle_buffer_rows,
                         num_workers=1, prefetch=args.prefetch)
        stream_loader = build_loader(schema, cfg, seed=0)
        plain_loader = build_loader(schema, dataclasses.replace(cfg, prefetch=0), seed=0)
        batches = list(plain_loader)  # epoch 0, pre-built once
        print(f"{len(batches)} steps per epoch; one chunk = one epoch; {args.rounds} interleaved rounds")

        env = DistEnv()
        init_process_group(env)
        sparse_cfg = SparseOptimConfig(name=args.sparse_optim, lr=0.05)  # type: ignore[arg-type]
        dense_cfg = DenseOptimConfig(name="adam", lr=1e-3)
        for name in [m for m in args.models.split(",") if m]:
            torch.manual_seed(0)
            trainer = Trainer(build_model(name, schema, None), env, sparse_optim=sparse_cfg, dense_optim=dense_cfg,
                              batch_size=args.batch)
            run_memory(trainer, batches[: max(2, len(batches) // 4)])  # warm-up: allocator, DMP, kernels
            run_stream(trainer, stream_loader, epoch=1000)  # warm-up of the streaming path (another epoch)
            mem, stream, ratio, cpu_ratio, ld_wall, ld_cpu = [], [], [], [], [], []
            for r in range(args.rounds):
                arms = ["memory", "stream", "loader"] if r % 2 == 0 else ["loader", "stream", "memory"]
                got = {}
                for arm in arms:
                    if arm == "memory":
                        got[arm] = run_memory(trainer, batches)
                    elif arm == "stream":
                        got[arm] = run_stream(trainer, stream_loader, epoch=r)
                    else:
                        got[arm] = run_loader(plain_loader, epoch=r)
                (m_rate, m_cpu), (s_rate, s_cpu) = got["memory"], got["stream"]
                mem.append(m_rate)
                stream.append(s_rate)
                ratio.append(s_rate / m_rate)
                cpu_ratio.append(s_cpu / m_cpu)
                ld_wall.append(got["loader"][0])
                ld_cpu.append(got["loader"][1])
                print(f"  {name} round {r + 1}: memory {m_rate:9,.0f} samples/s ({m_cpu:5.1f} CPU-us/sample), stream "
                      f"{s_rate:9,.0f} samples/s ({s_cpu:5.1f} CPU-us/sample), stream/memory x{ratio[-1]:.3f}; loader "
                      f"alone {got['loader'][0] / 1e6:.2f} M rows/s wall, {got['loader'][1] / 1e6:.2f} M rows per "
                      f"CPU-second", flush=True)
            print(f"{name}: in-memory batches {_spread(mem)} samples/s")
            print(f"{name}: streaming loader  {_spread(stream)} samples/s")
            print(f"{name}: stream / memory   {_spread(ratio, fmt='{:.3f}')} in samples/s (1.000 = the loader costs "
                  f"nothing; the bar is >= 0.90); CPU per sample {_spread(cpu_ratio, fmt='{:.3f}')}")
            print(f"{name}: loader alone      {_spread(ld_wall, 1e-6, '{:.2f}')} M rows/s wall, "
                  f"{_spread(ld_cpu, 1e-6, '{:.2f}')} M rows per CPU-second", flush=True)
            del trainer
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
