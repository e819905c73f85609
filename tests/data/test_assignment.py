"""ShardAssignment: every row once per epoch, balanced, deterministic, shuffled per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from dist_ctr.data.assignment import ShardAssignment
from dist_ctr.data.source import WorkUnit


def _units(sizes):
    out, start = [], 0
    for i, n in enumerate(sizes):
        out.append(WorkUnit(f"f{i // 3}", f"f{i // 3}", i % 3, n, start))
        start += n
    return out


SIZES = [7, 13, 1, 30, 8, 8, 2, 19, 11, 5]


def _rows(a: ShardAssignment, rank: int, epoch: int) -> np.ndarray:
    return np.concatenate([np.arange(s.unit.start + s.start, s.unit.start + s.stop)
                           for s in a.rank_slices(rank, epoch)] or [np.zeros(0, int)])


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_row_once_balanced(world_size, shuffle):
    a = ShardAssignment(_units(SIZES), world_size=world_size, seed=1, shuffle=shuffle)
    n = sum(SIZES)
    for epoch in range(3):
        parts = [_rows(a, r, epoch) for r in range(world_size)]
        allr = np.concatenate(parts)
        assert np.array_equal(np.sort(allr), np.arange(n))
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        assert sizes == [a.rank_rows(r) for r in range(world_size)]


def test_deterministic_and_shuffled_per_epoch():
    a = ShardAssignment(_units(SIZES), world_size=2, seed=1)
    b = ShardAssignment(_units(SIZES), world_size=2, seed=1)
    assert a.epoch_order(4) == b.epoch_order(4)
    orders = {tuple((u.file, u.row_group) for u in a.epoch_order(e)) for e in range(5)}
    assert len(orders) > 1
    assert ShardAssignment(_units(SIZES), seed=2).epoch_order(0) != a.epoch_order(0)
    # a file's row groups stay together
    files = [u.file for u in a.epoch_order(3)]
    assert all(files[i] == files[i - 1] or files[i] not in files[:i] for i in range(1, len(files)))


def test_no_shuffle_keeps_listing_order():
    a = ShardAssignment(_units(SIZES), world_size=1, shuffle=False)
    assert np.array_equal(_rows(a, 0, 5), np.arange(sum(SIZES)))


@pytest.mark.parametrize("world_size,bs", [(1, 10), (2, 16), (3, 7), (4, 100)])
def test_steps_per_epoch(world_size, bs):
    a = ShardAssignment(_units(SIZES), world_size=world_size)
    rows = [a.rank_rows(r) for r in range(world_size)]
    assert a.steps_per_epoch(bs, "pad") == int(np.ceil(max(rows) / bs))
    assert a.steps_per_epoch(bs, "drop") == min(rows) // bs
    with pytest.raises(ValueError, match="tail policy"):
        a.steps_per_epoch(bs, "wrap")


def test_workers_partition_the_rank():
    a = ShardAssignment(_units(SIZES), world_size=2, num_workers=3, seed=0)
    for r in range(2):
        by_worker = [a.worker_slices(r, w, 1) for w in range(3)]
        flat = sorted((s.unit.start + s.start, s.num_rows) for ws in by_worker for s in ws)
        assert flat == sorted((s.unit.start + s.start, s.num_rows) for s in a.rank_slices(r, 1))
