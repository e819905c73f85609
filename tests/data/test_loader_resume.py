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


# ---- resume on another world size (segments of the epoch's base streams) -----------------------------------------
def _expected_streams(streams: list[list[int]], stops: list[int], new_world: int, batch: int, policy: str,
                      new_batch: int | None = None) -> list[list[int]]:
    """The model of a resume on another world size, on row ids alone: each old rank's stream minus its first
    ``stop * B`` rows, concatenated in rank order, split into ``new_world`` contiguous parts balanced by rows;
    under ``"drop"`` each part is cut at the agreed full batches."""
    rest = [x for s, k in zip(streams, stops) for x in s[k * batch:]]
    n = len(rest)
    parts = [rest[j * n // new_world:(j + 1) * n // new_world] for j in range(new_world)]
    b = new_batch or batch
    if policy == "drop":
        keep = min(len(p) for p in parts) // b * b
        parts = [p[:keep] for p in parts]
    return parts


def _run_chain(schema, root, worlds, policy, stops_rng, seed=4, epoch=1, batch_sizes=None):
    """Read ``epoch`` on ``worlds[0]`` ranks, interrupt every rank at a random step, resume on the next world size
    (from JSON cursors), ... and read the last world size to the end. Returns (consumed real ids, per-stage
    checks), asserting at every stage that each new rank reads exactly the model's stream."""
    batch_sizes = batch_sizes or [8] * len(worlds)
    consumed: list[int] = []
    states = None
    model: list[list[int]] | None = None
    for stage, (world, B) in enumerate(zip(worlds, batch_sizes)):
        last = stage == len(worlds) - 1
        loaders = [build_loader(schema, cfg_for(root, tail_policy=policy, batch_size=B), rank=r, world_size=world,
                                seed=seed, epoch=epoch) for r in range(world)]
        if states is not None:
            for ld in loaders:
                ld.load_global_state(states)
        steps = {len(ld) for ld in loaders}
        assert len(steps) == 1  # every new rank agrees on the steps of the rest of the epoch
        S = steps.pop()
        if model is None:  # the uninterrupted epoch of the first world size, read by fresh loaders
            full = [rows_of(list(build_loader(schema, cfg_for(root, tail_policy=policy, batch_size=B), rank=r,
                                              world_size=world, seed=seed, epoch=epoch))) for r in range(world)]
            model = [real(f).tolist() for f in full]
        stops = [S] * world if last else [int(stops_rng.integers(0, S + 1)) for _ in range(world)]
        new_states = []
        for r, ld in enumerate(loaders):
            got, state = _consume_with_interrupt(ld, stops[r]) if not last else (rows_of(list(ld)).tolist(), None)
            got = np.array(got, np.int64)
            assert len(got) == stops[r] * B
            assert np.array_equal(real(got), np.array(model[r][:stops[r] * B] if not last else model[r], np.int64))
            if policy == "drop":
                assert (got >= 0).all()  # drop never pads
            consumed.extend(real(got).tolist())
            if not last:
                assert state["step"] == stops[r] and state["base_world_size"] == worlds[0]
                new_states.append(json.loads(json.dumps(state)))
        if not last:
            model = _expected_streams(model, stops, worlds[stage + 1], B, policy, batch_sizes[stage + 1])
            states = new_states
    return np.array(consumed, np.int64)


CHAINS = [(2, 1), (1, 2), (2, 3), (3, 2), (2, 3, 1)]


@pytest.mark.parametrize("policy", ["pad", "drop"])
@pytest.mark.parametrize("worlds", CHAINS, ids=["->".join(map(str, c)) for c in CHAINS])
def test_resume_on_another_world_size_exactly_once(schema, tiny_set, worlds, policy):
    """Interrupt every rank at an arbitrary step, resume on another world size (twice for 2->3->1): each new rank
    reads its balanced part of the rows not yet consumed, in order; pad: every row exactly once over the epoch;
    drop: no row twice, and only rows the uninterrupted epoch reads."""
    root, n = tiny_set
    uninterrupted = real(np.concatenate([rows_of(list(build_loader(schema, cfg_for(root, tail_policy=policy),
                                                                   rank=r, world_size=worlds[0], seed=4, epoch=1)))
                                         for r in range(worlds[0])]))
    rng = np.random.default_rng(sum(worlds) * 7 + len(worlds))
    for _ in range(3):  # three draws of interruption steps per case
        ids = _run_chain(schema, root, worlds, policy, rng)
        assert len(np.unique(ids)) == len(ids)  # no row twice
        if policy == "pad":
            assert np.array_equal(np.sort(ids), np.arange(n))
        else:
            assert np.isin(ids, uninterrupted).all()


def test_resume_on_another_world_size_and_batch_size(schema, tiny_set):
    """Rows, not batches, are resumed: 2 ranks x B=8 -> 1 rank x B=16 (the same global batch)."""
    root, n = tiny_set
    ids = _run_chain(schema, root, (2, 1), "pad", np.random.default_rng(1), batch_sizes=[8, 16])
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_resumed_epoch_len_then_normal_next_epoch(schema, tiny_set):
    """After a resume on another world size, ``len`` is the steps of the rest of the epoch (step counter from 0);
    the next epoch is the normal epoch of the new world size."""
    root, n = tiny_set
    olds = [build_loader(schema, cfg_for(root), rank=r, world_size=2, seed=4, epoch=1) for r in range(2)]
    states = [_consume_with_interrupt(ld, 3)[1] for ld in olds]
    ld = build_loader(schema, cfg_for(root), rank=0, world_size=1, seed=4)
    ld.load_global_state(states)
    left = n - 2 * 3 * 8
    assert ld.epoch == 1 and ld.state_dict()["step"] == 0 and len(ld) == -(-left // 8)
    assert sum(seg[2] - seg[1] for seg in ld.state_dict()["segments"]) == left
    assert len(real(rows_of(list(ld)))) == left
    ld.set_epoch(2)
    fresh = build_loader(schema, cfg_for(root), rank=0, world_size=1, seed=4, epoch=2)
    assert len(ld) == len(fresh) and ld.state_dict()["plan"] is None
    assert np.array_equal(rows_of(list(ld)), rows_of(list(fresh)))


def test_resumed_plan_resumes_again_on_the_same_world_size(schema, tiny_set):
    """A rank reading a resumed plan (2 -> 3) saves mid-way; a new loader of the same world size continues that
    plan at the same step, in the same order."""
    root, n = tiny_set
    olds = [build_loader(schema, cfg_for(root), rank=r, world_size=2, seed=4, epoch=1) for r in range(2)]
    states = [json.loads(json.dumps(_consume_with_interrupt(ld, k)[1])) for ld, k in zip(olds, (1, 4))]
    for r in range(3):
        ref = build_loader(schema, cfg_for(root), rank=r, world_size=3, seed=4)
        ref.load_global_state(states)
        whole = rows_of(list(ref))
        a = build_loader(schema, cfg_for(root), rank=r, world_size=3, seed=4)
        a.load_global_state(states)
        first, mid = _consume_with_interrupt(a, 2)
        assert mid["plan"] is not None and mid["step"] == 2 and mid["base_world_size"] == 2
        b = build_loader(schema, cfg_for(root), rank=r, world_size=3, seed=4)
        b.load_state_dict(json.loads(json.dumps(mid)))
        assert len(b) == len(ref)
        assert np.array_equal(np.concatenate([np.array(first, np.int64), rows_of(list(b))]), whole)


def test_resume_from_version_1_cursors_on_another_world_size(schema, tiny_set):
    """Cursors written before segments existed (version 1: epoch and step only) still resume on another W."""
    root, n = tiny_set
    olds = [build_loader(schema, cfg_for(root), rank=r, world_size=2, seed=4, epoch=1) for r in range(2)]
    consumed, states = [], []
    for ld in olds:
        got, state = _consume_with_interrupt(ld, 2)
        consumed += got
        states.append({k: v for k, v in state.items() if k not in ("base_world_size", "plan", "steps", "segments")}
                      | {"version": 1})
    rest = []
    for r in range(3):
        ld = build_loader(schema, cfg_for(root), rank=r, world_size=3, seed=4)
        ld.load_global_state(states)
        rest.append(rows_of(list(ld)))
    ids = real(np.concatenate([np.array(consumed, np.int64), *rest]))
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_global_state_rejects_other_settings_and_partial_cursors(schema, tiny_set, tmp_path):
    from dist_ctr.data.errors import DataError
    from tests.data.conftest import write_tiny_set

    root, _ = tiny_set
    states = [_consume_with_interrupt(build_loader(schema, cfg_for(root), rank=r, world_size=2, seed=4), 1)[1]
              for r in range(2)]
    cases = [
        (build_loader(schema, cfg_for(root), seed=5), states, "seed"),
        (build_loader(schema, cfg_for(root, shuffle_buffer_rows=30), seed=4), states, "shuffle_buffer_rows"),
        (build_loader(schema, cfg_for(root, tail_policy="drop"), seed=4), states, "tail_policy"),
        (build_loader(schema, cfg_for(root, shuffle=False), seed=4), states, "shuffle"),
        (build_loader(schema, cfg_for(root), seed=4), states[1:], "expected rank 0 of 1"),
        (build_loader(schema, cfg_for(root), seed=4), [states[0], {}], "saved rank 1 left no loader cursor"),
    ]
    other = tmp_path / "other"
    write_tiny_set(other, file_rows=(37, 29, 51))
    cases.append((build_loader(schema, cfg_for(other), seed=4), states, "listing changed"))
    for loader, st, match in cases:
        with pytest.raises(DataError, match=match):
            loader.load_global_state(st)
    bad = [dict(s) for s in states]
    bad[1]["segments"] = [[1, 0, 10_000]]
    with pytest.raises(DataError, match="outside the base streams"):
        build_loader(schema, cfg_for(root), seed=4).load_global_state(bad)


_CHILD_GLOBAL = r"""
import json, sys
import numpy as np
from dist_ctr.data.config import DataConfig
from dist_ctr.data.loader import build_loader
from tests.data.conftest import tiny_schema
job = json.loads(sys.stdin.read())
out = []
for r in range(job["world_size"]):
    ld = build_loader(tiny_schema(), DataConfig(**job["cfg"]), rank=r, world_size=job["world_size"], seed=job["seed"])
    ld.load_global_state(job["states"])
    out.append({"len": len(ld), "rows": [x for b in ld for x in b.row_ids.tolist()]})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_resume_on_another_world_size_in_new_process(schema, tiny_set):
    """3 ranks interrupted at different steps; 2 ranks resume from the JSON cursors in a fresh Python process."""
    root, n = tiny_set
    cfg = dict(url=str(root), batch_size=8, shuffle_buffer_rows=20, prefetch=2)
    consumed, states = [], []
    for r, stop in enumerate((1, 3, 2)):
        ld = build_loader(schema, DataConfig(**cfg), rank=r, world_size=3, seed=11, epoch=2)
        got, state = _consume_with_interrupt(ld, stop)
        consumed += got
        states.append(state)
    job = {"cfg": cfg, "world_size": 2, "seed": 11, "states": states}
    proc = subprocess.run([sys.executable, "-c", _CHILD_GLOBAL], input=json.dumps(job), capture_output=True,
                          text=True, cwd=REPO, timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[0]["len"] == out[1]["len"] and all(len(o["rows"]) == o["len"] * 8 for o in out)
    ids = real(np.array(consumed + out[0]["rows"] + out[1]["rows"], np.int64))
    assert np.array_equal(np.sort(ids), np.arange(n))


def test_pad_steps_follow_the_larger_part(tmp_path):
    """113 rows, 1 rank interrupted after 4 batches of 8: 81 rows left, split 40 / 41 over 2 ranks. Both ranks
    take ceil(41 / 8) = 6 steps (not 5: the 41st row of rank 1 would be lost); every row is read once."""
    from tests.data.conftest import write_tiny_set

    n = write_tiny_set(tmp_path / "odd", file_rows=(37, 29, 47))
    schema = tiny_schema()
    first, state = _consume_with_interrupt(build_loader(schema, cfg_for(tmp_path / "odd"), seed=2), 4)
    rest = []
    for r in range(2):
        ld = build_loader(schema, cfg_for(tmp_path / "odd"), rank=r, world_size=2, seed=2)
        ld.load_global_state([state])
        assert len(ld) == 6
        rest.append(real(rows_of(list(ld))))
    assert [len(x) for x in rest] == [40, 41]
    ids = np.concatenate([np.array(first, np.int64), *rest])
    assert n == 113 and np.array_equal(np.sort(ids), np.arange(n))
