"""What carrying the linear weights in the embedding rows buys: the same facade model twice, side by side.

Not a test: prints figures, asserts nothing. Each model is built twice through the facade
(``compile("adagrad", "binary_crossentropy")``), once with the carried layout (``linear_in_embedding_tables``, the
facade's choice under an element-wise sparse optimizer) and once with it switched off (linear weights in tables of
their own, a second lookup per id). Both train the bench's planted rows (``dist_ctr.bench.peer_data``) in
interleaved chunks; the figure is the median over chunks of the paired ratio carried / apart.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_carried_linear.py --models DeepFM,NFM,WDL,DCN,CCPM
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: F401  (TorchRec before the bench modules)

import dist_ctr.compat.base as compat_base
from dist_ctr.bench.facade import COMPAT, FacadeRunner
from dist_ctr.bench.peer import peer_columns
from dist_ctr.bench.peer_data import make_data, vocabularies
from dist_ctr.train.job import quiet_torchrec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="DeepFM,NFM,WDL,DCN,CCPM")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--chunk-batches", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--vocab-cap", type=int, default=25_000)
    args = ap.parse_args()
    quiet_torchrec()
    vocabs = [min(v, args.vocab_cap) for v in vocabularies()[0]]
    chunk = args.batch * args.chunk_batches
    warm = 4 * args.batch
    data = make_data(warm + args.rounds * chunk, vocabs, 7)
    cols = peer_columns(COMPAT, vocabs, 16)
    print(f"batch {args.batch}, {args.rounds} interleaved chunks of {chunk:,} rows; samples/s = median chunk rate")
    for name in args.models.split(","):
        runners = {}
        for carried in (False, True):
            layout = compat_base.ELEMENTWISE_SPARSE if carried else frozenset()  # empty: never carry
            with mock.patch.object(compat_base, "ELEMENTWISE_SPARSE", layout):
                r = FacadeRunner(name, cols, 0.01, 1024, args.batch)
            if bool(getattr(r.model.config, "linear_in_embedding_tables", False)) != carried:
                print(f"{name}: has no linear part to carry; skipped")
                break
            r.warm(data.rows(0, warm))
            runners[carried] = r
        if len(runners) < 2:
            continue
        rates: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.rounds):
            lo = warm + i * chunk
            for carried in ((False, True) if i % 2 else (True, False)):
                rates[carried].append(chunk / runners[carried].train_chunk(data.rows(lo, lo + chunk)))
        ratio = statistics.median(c / a for a, c in zip(rates[False], rates[True]))
        print(f"{name}: apart {statistics.median(rates[False]):,.0f} samples/s, carried "
              f"{statistics.median(rates[True]):,.0f}, median paired speed-up {ratio:.2f}x", flush=True)


if __name__ == "__main__":
    main()
