"""Exactly once per epoch across 1 and 2 ranks, and exact mid-epoch resume (also in a new process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_ctr.data.config import DataConfig
from dist_ctr.data.loader import build_loader
from tests.data.conftest import tiny_schema

REPO = Path(__file__).resolve().parents[2]


def cfg_for(root: Path, **kw) -> DataConfig:
    base = dict(url=str(root), batch_size=8, shuffle_buffer_rows=20, prefetch=2)
    base.update(kw)
    return DataConfig(**base)


def rows_of(batches) -> np.ndarray:
    return np.concatenate([b.row_ids.numpy() for b in batches]) if batches else np.zeros(0, np.int64)


def real(ids: np.ndarray) -> np.ndarray:
    return ids[ids >= 0]


@pytest.mark.parametrize("world_size", [1, 2])
def test_exactly_once_per_epoch_and_epochs_differ(schema, tiny_set, world_size):
    root, n = tiny_set
    loaders = [build_loader(schema, cfg_for(root), rank=r, world_size=world_size, seed=3) for r in range(world_size)]
    assert len({len(ld) for ld in loaders}) == 1  # every rank agrees on the steps
    orders = []
    for epoch in range(2):
        seen = []
        for ld in loaders:
            ld.set_epoch(epoch)
            batches = list(ld)
            assert len(batches) == len(ld)
            assert all(b.batch_size == 8 for b in batches)
            seen.append(rows_of(batches))
        union = np.concatenate([real(s) for s in seen])
        assert len(union) == n and np.array_equal(np.sort(union), np.arange(n))  # all rows, no duplicate
        orders.append(np.concatenate(seen))
        pads = sum(int((s < 0).sum()) for s in seen)
        assert pads == world_size * len(loaders[0]) * 8 - n
    assert not np.array_equal(orders[0], orders[1])  # order differs between epochs
    assert np.array_equal(np.sort(real(orders[0])), np.sort(real(orders[1])))  # content does not


def test_same_seed_same_order_and_workers_do_not_change_it(schema, tiny_set):
    root, _ = tiny_set
    a = rows_of(list(build_loader(schema, cfg_for(root, num_workers=1, prefetch=0), seed=5)))
    b = rows_of(list(build_loader(schema, cfg_for(root, num_workers=3, prefetch=4), seed=5)))
    c = rows_of(list(build_loader(schema, cfg_for(root), seed=6)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batch_values_match_rows(schema, tiny_set):
    """Each batch's features are the features of its row ids (the shuffle moves whole rows)."""
    import pyarrow.parquet as pq

    root, n = tiny_set
    tables = [pq.read_table(p) for p in sorted(root.rglob("*.parquet"))]
    import pyarrow as pa

    t = pa.concat_tables(tables).sort_by("row_id")
    c1 = t.column("C1").to_numpy()
    i1 = t.column("I1").to_numpy()
    for b in build_loader(schema, cfg_for(root), seed=1):
        ids = b.row_ids.numpy()
        keep = ids >= 0
        kj = b.sparse.to_dict()
        assert torch.equal(kj["C1"].lengths(), torch.ones(8, dtype=torch.int32))
        assert np.array_equal(kj["C1"].values().numpy()[keep], c1[ids[keep]])
        assert np.allclose(b.dense[:, 0].numpy()[keep], np.log1p(i1[ids[keep]]))  # default dense transform: log
        assert np.all(b.dense[~torch.from_numpy(keep)].numpy() == 0)


def test_drop_policy_full_batches_no_duplicates(schema, tiny_set):
    root, n = tiny_set
    cfgs = [build_loader(schema, cfg_for(root, tail_policy="drop"), rank=r, world_size=2) for r in range(2)]
    steps = len(cfgs[0])
    assert steps == (n // 2) // 8
    ids = np.concatenate([rows_of(list(ld)) for ld in cfgs])
    assert len(ids) == 2 * steps * 8 and (ids >= 0).all() and len(np.unique(ids)) == len(ids)


def _consume_with_interrupt(loader, stop_after: int) -> tuple[list[int], dict]:
    it = iter(loader)
    got = []
    for _ in range(stop_after):
        got.extend(next(it).row_ids.tolist())
    state = loader.state_dict()
    del it
    return got, state


@pytest.mark.parametrize("world_size", [1, 2])
def test_resume_in_process_every_step(schema, tiny_set, world_size):
    root, n = tiny_set
    steps = len(build_loader(schema, cfg_for(root), world_size=world_size))
    for stop in range(0, steps + 1):
        seen = []
        for r in range(world_size):
            ld = build_loader(schema, cfg_for(root), rank=r, world_size=world_size, seed=2, epoch=1)
            first, state = _consume_with_interrupt(ld, stop)
            assert state["epoch"] == 1 and state["step"] == stop
            ld2 = build_loader(schema, cfg_for(root), rank=r, world_size=world_size, seed=2)
            ld2.load_state_dict(state)
            rest = rows_of(list(ld2))
            full = rows_of(list(build_loader(schema, cfg_for(root), rank=r, world_size=world_size, seed=2, epoch=1)))
            assert np.array_equal(np.concatenate([np.array(first, np.int64), rest]), full)  # same order
            seen.append(np.concatenate([np.array(first, np.int64), rest]))
        union = real(np.concatenate(seen))
        assert np.array_equal(np.sort(union), np.arange(n))


def test_state_rejects_other_settings(schema, tiny_set):
    root, _ = tiny_set
    state = build_loader(schema, cfg_for(root), seed=1).state_dict()
    other = build_loader(schema, cfg_for(root, batch_size=16), seed=1)
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


_CHILD = r"""
import json, sys
import numpy as np
from dist_ctr.data.config import DataConfig
from dist_ctr.data.loader import build_loader
from tests.data.conftest import tiny_schema
jobs = json.loads(sys.stdin.read())
out = []
for job in jobs:
    ld = build_loader(tiny_schema(), DataConfig(**job["cfg"]), rank=job["rank"], world_size=job["world_size"],
                      seed=job["seed"])
    ld.load_state_dict(job["state"])
    out.append(np.concatenate([b.row_ids.numpy() for b in ld]).tolist() if len(ld) > ld.state_dict()["step"] else [])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_resume_in_new_process_one_and_two_ranks(schema, tiny_set):
    """Interrupt at arbitrary batches, save the cursor as JSON, resume in a fresh Python process."""
    root, n = tiny_set
    cfg = dict(url=str(root), batch_size=8, shuffle_buffer_rows=20, prefetch=2)
    rng = np.random.default_rng(0)
    jobs, firsts, cases = [], [], []
    for world_size in (1, 2):
        for r in range(world_size):
            ld = build_loader(schema, DataConfig(**cfg), rank=r, world_size=world_size, seed=11, epoch=2)
            stop = int(rng.integers(1, len(ld)))
            first, state = _consume_with_interrupt(ld, stop)
            jobs.append({"cfg": cfg, "rank": r, "world_size": world_size, "seed": 11, "state": json.loads(json.dumps(state))})
            firsts.append(first)
            cases.append(world_size)
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(jobs), capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rests = json.loads(proc.stdout.strip().splitlines()[-1])
    for world_size in (1, 2):
        idx = [i for i, c in enumerate(cases) if c == world_size]
        rows = np.array([x for i in idx for x in firsts[i] + rests[i]], np.int64)
        rows = real(rows)
        assert len(rows) == n and np.array_equal(np.sort(rows), np.arange(n)), world_size


def test_len_and_pad_when_more_ranks_than_row_groups(tmp_path):
    from tests.data.conftest import write_tiny_set

    n = write_tiny_set(tmp_path / "one", file_rows=(5,), row_group_size=100)
    schema = tiny_schema()
    loaders = [build_loader(schema, cfg_for(tmp_path / "one", batch_size=4), rank=r, world_size=3) for r in range(3)]
    assert [ld.rank_rows for ld in loaders] == [1, 2, 2]
    assert {len(ld) for ld in loaders} == {1}
    ids = real(np.concatenate([rows_of(list(ld)) for ld in loaders]))
    assert np.array_equal(np.sort(ids), np.arange(n))


@pytest.mark.gpu
def test_batches_are_pinned_for_cuda(schema, tiny_set):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    root, _ = tiny_set
    b = next(iter(build_loader(schema, cfg_for(root), device=torch.device("cuda"))))
    assert b.dense.is_pinned() and b.sparse.values().is_pinned()
    assert b.to(torch.device("cuda"), non_blocking=True).dense.is_cuda


def test_prefetch_thread_stops_when_consumer_breaks(schema, tiny_set):
    import threading

    root, _ = tiny_set
    ld = build_loader(schema, cfg_for(root, prefetch=1))
    for i, _ in enumerate(ld):
        if i == 1:
            break
    assert ld.state_dict()["step"] == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("dist_ctr-loader")]
