"""Step timing for the training benchmarks.

>>> class B:
...     batch_size = 4
>>> seen = []
>>> rate = time_steps(seen.append, [B()] * 5, warmup=2)
>>> len(seen), rate > 0
(5, True)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

__all__ = ["time_steps"]


def time_steps(step: Callable[[Any], Any], batches: Sequence[Any], warmup: int) -> float:
    """Samples/s of ``step`` over ``batches``: the first ``warmup`` batches run untimed, the rest on the wall clock.

    Args:
        step: called once per batch (e.g. ``Trainer.train_step``).
        batches: objects with a ``batch_size`` attribute (the rows each step trains on).
        warmup: how many leading batches are not timed.

    Returns:
        float: rows of the timed batches divided by their wall-clock seconds.
    """
    for b in batches[:warmup]:
        step(b)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    dt = time.perf_counter() - t0
    return sum(b.batch_size for b in batches[warmup:]) / dt
