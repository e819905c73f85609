"""Helpers shared by the benchmark and example scripts under ``scripts/`` (not used by the library itself).

Modules:
  - :mod:`dist_ctr.bench.timing`: ``time_steps``, the samples/s of a training step over pre-built batches;
  - :mod:`dist_ctr.bench.peer_data`: the planted-signal data of the DeepCTR-Torch peer benchmark (Criteo-shaped
    rows, their two-label form, behaviour sequences) and its per-task exact AUC;
  - :mod:`dist_ctr.bench.peer`: the peer benchmark's two sides (the DeepCTR-Torch import with its shims, the
    config mapping, our and the peer's training runners);
  - :mod:`dist_ctr.bench.facade`: the facade side (the peer's program with ``dist_ctr.compat`` as its import);
  - :mod:`dist_ctr.bench.breakdown`: where a training step's time goes (torch profiler, split into input prep,
    lookup, embedding backward + update, interaction, tower, loss, dense optimizer, engine, Python);
  - :mod:`dist_ctr.bench.examples`: the real-data examples' helpers (data location, encoding, batches, training).

Nothing in the library imports this package, and it does not import Ray. Scripts import it directly
(``from dist_ctr.bench.timing import time_steps``); the package is part of the installed distribution.
"""
