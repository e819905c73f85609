"""Dense-part choices on this machine: bf16 autocast and ``torch.compile``, for speed and (bf16) AUC.

Prints figures; asserts nothing.
  1. The DeepFM tower step (DNN 429 -> 256 -> 128 -> 1, summed BCE, fused Adagrad) at ``--batch``: fp32 eager,
     bf16 autocast, and ``torch.compile`` (its first step, which compiles, timed apart from the steady state);
     CPU milliseconds per step, median of ``--rounds`` interleaved rounds.
  2. The facade's DeepFM (the DeepCTR-Torch quick-start program through ``dist_ctr.compat``) trained once with
     ``compile(..., precision="fp32")`` and once with ``"bf16"`` on the same planted-signal rows: samples/s and
     held-out AUC.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_dense_choices.py [--batch 1024] [--rows 100000]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: F401 (TorchRec before the facade)

from dist_ctr.layers.core import DNN


def tower_step(batch: int, precision: str, compiled: bool) -> tuple[Callable[[], None], float]:
    """A tower training step and the seconds its first call took (the compile, when ``compiled``)."""
    torch.manual_seed(0)
    tower: torch.nn.Module = torch.nn.Sequential(DNN(429, (256, 128)), torch.nn.Linear(128, 1))
    opt = torch.optim.Adagrad(tower.parameters(), lr=0.01, fused=True)
    fwd = torch.compile(tower) if compiled else tower
    x, y = torch.randn(batch, 429), torch.randint(0, 2, (batch, 1)).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = fwd(x).float()
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum").backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    return step, time.perf_counter() - t0


def cpu_ms(step: Callable[[], None], n: int) -> float:
    c = time.process_time()
    for _ in range(n):
        step()
    return (time.process_time() - c) / n * 1e3


def facade_precision(rows: int, batch: int) -> None:
    from dist_ctr.bench.facade import COMPAT
    from dist_ctr.bench.peer import peer_columns, peer_model, peer_x
    from dist_ctr.bench.peer_data import make_data, task_aucs, vocabularies

    vocabs = [min(v, 25_000) for v in vocabularies()[0]]
    d = make_data(rows, vocabs, 7)
    cut = int(rows * 0.8)
    train, test = d.rows(0, cut), d.rows(cut, rows)
    cols = peer_columns(COMPAT, vocabs, 16)
    for precision in ("fp32", "bf16"):
        m = peer_model(COMPAT, "DeepFM", cols, 1024)  # type: ignore[arg-type]
        m.compile("adagrad", "binary_crossentropy", precision=precision)
        t0 = time.perf_counter()
        m.fit(peer_x(train), train.label, batch_size=batch, epochs=1, verbose=0)
        rate = len(train) / (time.perf_counter() - t0)
        auc = task_aucs(test.label, m.predict(peer_x(test), batch_size=8192))[0]
        print(f"facade DeepFM, compile(precision={precision!r}), batch {batch}: {rate:,.0f} samples/s, "
              f"held-out AUC {auc:.4f} ({len(train):,} train / {len(test):,} test rows)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the facade run (80%% train)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    variants = {"fp32 eager": ("fp32", False), "bf16 autocast": ("bf16", False), "fp32 torch.compile": ("fp32", True)}
    steps, firsts = {}, {}
    for name, (precision, compiled) in variants.items():
        steps[name], firsts[name] = tower_step(args.batch, precision, compiled)
        for _ in range(3):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            times[name].append(cpu_ms(steps[name], args.steps))
    for name in variants:
        print(f"tower step, batch {args.batch}, {name}: {np.median(times[name]):.2f} CPU ms/step "
              f"(first step {firsts[name]:.1f} s)")
    facade_precision(args.rows, args.batch)


if __name__ == "__main__":
    main()
