"""``ShardAssignment``: work units -> (rank, worker), every row exactly once per epoch, balanced by rows.

Per epoch:

1. **Order.** With ``shuffle``, the file order and the row-group order inside each file are permuted by an RNG
   seeded with ``(seed, epoch)``; a file's row groups stay consecutive (one open file at a time on object
   storage). Without ``shuffle`` the listing order is kept.
2. **Split by rows.** The ordered units form one virtual stream of ``N`` rows; rank ``r`` takes rows
   ``[r * N // W, (r + 1) * N // W)``. A unit that straddles a boundary is split into two row slices, so ranks
   differ by at most one row, and every row belongs to exactly one rank.
3. **Workers.** :meth:`ShardAssignment.worker_slices` splits a rank's slices round-robin over ``num_workers``
   (slice ``i`` to worker ``i % num_workers``) for readers that need a static split; the loader's reader threads
   instead share each window's slices through a pool. Either way the loader's row order is the rank's slice
   order, whatever the worker count (so a cursor resumes under another ``num_workers``).
4. **Steps.** All ranks agree on the steps per epoch: ``"pad"`` -> ``ceil(max_r rows_r / B)`` (short ranks
   finish with pad rows), ``"drop"`` -> ``floor(min_r rows_r / B)`` (the tail of each rank is not read).

Everything is a pure function of ``(listing, seed, epoch, world_size)``: each rank computes it alone, no
communication.

**Segments** describe positions inside an epoch independently of the world size reading it: a
:class:`Segment` ``(rank, start, stop)`` is rows ``[start, stop)`` of *base stream* ``rank`` (the row stream that
rank reads under the epoch's base world size, see ``dist_ctr/data/loader.py``). A reading plan is a list of
segments; :func:`take_rows` cuts rows out of a plan and :func:`split_rows` splits one into balanced parts.

>>> from dist_ctr.data.source import WorkUnit
>>> units = [WorkUnit(f"f{i}", f"f{i}", 0, 10, 10 * i) for i in range(3)]
>>> a = ShardAssignment(units, world_size=2, seed=0, shuffle=False)
>>> [(s.unit.file, s.start, s.stop) for s in a.rank_slices(0, epoch=0)]
[('f0', 0, 10), ('f1', 0, 5)]
>>> [(s.unit.file, s.start, s.stop) for s in a.rank_slices(1, epoch=0)]
[('f1', 5, 10), ('f2', 0, 10)]
>>> a.steps_per_epoch(4, "pad"), a.steps_per_epoch(4, "drop")
(4, 3)
>>> plan = [Segment(0, 5, 15), Segment(1, 0, 4)]
>>> take_rows(plan, 8, 12)
[Segment(rank=0, start=13, stop=15), Segment(rank=1, start=0, stop=2)]
>>> parts = split_rows(plan, 3)
>>> [segment_rows(p) for p in parts], parts[2]
([4, 5, 5], [Segment(rank=0, start=14, stop=15), Segment(rank=1, start=0, stop=4)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from dist_ctr.data.source import WorkUnit

__all__ = ["ShardAssignment", "UnitSlice", "Segment", "epoch_rng", "segment_rows", "take_rows", "split_rows"]

_ORDER_SALT = 0x5EED_0F_F11E


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The RNG for a (seed, epoch, ...) tuple: the same on every process and machine."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), *[int(m) for m in more]])


@dataclass(frozen=True)
class UnitSlice:
    """Rows ``[start, stop)`` of one work unit (row group)."""

    unit: WorkUnit
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


class ShardAssignment:
    """Deterministic assignment of work units to ranks and reader workers.

    Args:
        units (Sequence[WorkUnit]): the listing (see :class:`~dist_ctr.data.source.ParquetSource`).
        world_size (int): number of ranks ``W``.
        num_workers (int): reader workers per rank.
        seed (int): shuffle seed (the same on every rank).
        shuffle (bool): permute file / row-group order per epoch.
    """

    def __init__(self, units: Sequence[WorkUnit], world_size: int = 1, num_workers: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.units = list(units)
        self.world_size = world_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.total_rows = sum(u.num_rows for u in self.units)

    def epoch_order(self, epoch: int) -> list[WorkUnit]:
        """Units in this epoch's order: files permuted, row groups permuted within each file."""
        if not self.shuffle:
            return list(self.units)
        by_file: dict[str, list[WorkUnit]] = {}
        for u in self.units:
            by_file.setdefault(u.path, []).append(u)
        files = list(by_file)
        rng = epoch_rng(self.seed, epoch, _ORDER_SALT)
        out: list[WorkUnit] = []
        for fi in rng.permutation(len(files)):
            group = by_file[files[fi]]
            out.extend(group[j] for j in rng.permutation(len(group)))
        return out

    def rank_bounds(self, rank: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of the epoch's virtual stream that ``rank`` reads."""
        n, w = self.total_rows, self.world_size
        return rank * n // w, (rank + 1) * n // w

    def rank_rows(self, rank: int) -> int:
        lo, hi = self.rank_bounds(rank)
        return hi - lo

    def rank_slices(self, rank: int, epoch: int) -> list[UnitSlice]:
        """The row slices ``rank`` reads this epoch, in reading order."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside [0, {self.world_size})")
        lo, hi = self.rank_bounds(rank)
        out: list[UnitSlice] = []
        pos = 0
        for u in self.epoch_order(epoch):
            a, b = pos, pos + u.num_rows
            pos = b
            if b <= lo:
                continue
            if a >= hi:
                break
            out.append(UnitSlice(u, max(lo, a) - a, min(hi, b) - a))
        return out

    def worker_slices(self, rank: int, worker: int, epoch: int) -> list[UnitSlice]:
        """The slices of ``rank`` read by reader ``worker`` (round-robin)."""
        if not 0 <= worker < self.num_workers:
            raise ValueError(f"worker {worker} is outside [0, {self.num_workers})")
        return self.rank_slices(rank, epoch)[worker :: self.num_workers]

    def steps_per_epoch(self, batch_size: int, policy: str = "pad") -> int:
        """Steps every rank takes this epoch (the same on all ranks)."""
        rows = [self.rank_rows(r) for r in range(self.world_size)]
        if policy == "pad":
            return -(-max(rows) // batch_size)
        if policy == "drop":
            return min(rows) // batch_size
        raise ValueError(f"unknown tail policy {policy!r}; expected 'pad' or 'drop'")


class Segment(NamedTuple):
    """Rows ``[start, stop)`` of base stream ``rank`` (a rank's permuted row stream under the base world size)."""

    rank: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def segment_rows(plan: Sequence[Segment]) -> int:
    """Rows in a plan (the concatenation of its segments)."""
    return sum(s.num_rows for s in plan)


def _merged(plan: Sequence[Segment]) -> list[Segment]:
    """Drop empty segments; join a segment to the previous one when it continues it."""
    out: list[Segment] = []
    for s in plan:
        if s.num_rows <= 0:
            continue
        if out and out[-1].rank == s.rank and out[-1].stop == s.start:
            out[-1] = Segment(s.rank, out[-1].start, s.stop)
        else:
            out.append(Segment(*s))
    return out


def take_rows(plan: Sequence[Segment], lo: int, hi: int) -> list[Segment]:
    """Rows ``[lo, hi)`` of the concatenation of ``plan``, as segments (``hi`` is clipped to the plan's rows)."""
    out: list[Segment] = []
    pos = 0
    for s in plan:
        a, b = pos, pos + s.num_rows
        pos = b
        if b <= lo:
            continue
        if a >= hi:
            break
        out.append(Segment(s.rank, s.start + max(lo, a) - a, s.start + min(hi, b) - a))
    return _merged(out)


def split_rows(plan: Sequence[Segment], parts: int) -> list[list[Segment]]:
    """Split a plan into ``parts`` contiguous parts by rows: part ``j`` is rows ``[j N // parts, (j+1) N // parts)``
    of its ``N`` rows (as :meth:`ShardAssignment.rank_bounds`), so parts differ by at most one row."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    n = segment_rows(plan)
    return [take_rows(plan, j * n // parts, (j + 1) * n // parts) for j in range(parts)]
