"""A job stopped mid-epoch on 2 processes finishes the epoch on 1 process: every row trained exactly once.

2 spawned ranks (gloo on CPU) train a ``Trainer`` from a Parquet set with a ``row_id`` column for 3 of the epoch's
8 steps (``max_steps``) and checkpoint; 1 process loads that checkpoint (the engine hands every saved rank's loader
cursor to ``ParquetLoader.load_global_state``) and trains the rest of the epoch. The ledger of trained row ids
over both runs holds every row of the data set exactly once -- in the plain loop and under TorchRec's
``TrainPipelineSparseDist``, which reads the loader two batches ahead (the saved cursor must not count them).
"""

from __future__ import annotations

from collections import Counter

import pytest

from dist_ctr.launch.spawn import spawn
from dist_ctr.train import checkpoint as ckpt
from tests.data.conftest import write_tiny_set
from tests.distributed.ray_jobs import read_ledger
from tests.distributed.resume_jobs import fit_parquet

BATCH, STOP = 8, 3


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["none", "sparse_dist"])
def test_two_ranks_stop_mid_epoch_one_rank_finishes_it(tmp_path, pipeline):
    data, ck_root, ledger_dir = tmp_path / "data", str(tmp_path / "ck"), str(tmp_path / "ledger")
    n = write_tiny_set(data)  # 116 rows: 58 per rank under 2 ranks -> 8 steps of 8 (pad)
    saver = spawn(fit_parquet, 2, str(data), ck_root, ledger_dir, BATCH, STOP, False, pipeline)
    assert [s["step"] for s in saver] == [STOP, STOP] and [s["epoch"] for s in saver] == [0, 0]  # mid-epoch
    assert [s["start"]["len"] for s in saver] == [8, 8]
    latest = ckpt.latest_checkpoint(ck_root)
    assert latest is not None and latest.world_size == 2 and not latest.meta["epoch_done"]

    (resumed,) = spawn(fit_parquet, 1, str(data), ck_root, ledger_dir, BATCH, 0, True, pipeline)
    left = n - 2 * STOP * BATCH
    assert resumed["loaded_world"] == 2
    assert resumed["start"] == {"step": STOP, "epoch": 0, "len": -(-left // BATCH)}  # the rest of epoch 0
    assert resumed["epoch"] == 1 and resumed["step"] == STOP + -(-left // BATCH)
    final = ckpt.latest_checkpoint(ck_root)
    assert final is not None and final.world_size == 1 and final.meta["epoch_done"]

    ledger = read_ledger(ledger_dir)
    assert sorted(ledger) == [(0, 0), (0, 1), (1, 0)]  # attempt 0: ranks 0 and 1; attempt 1: one rank
    assert [e["step"] for e in ledger[(0, 0)]] == [1, 2, 3] == [e["step"] for e in ledger[(0, 1)]]
    assert [e["step"] for e in ledger[(1, 0)]] == list(range(STOP + 1, resumed["step"] + 1))
    rows = Counter(r for entries in ledger.values() for e in entries for r in e["rows"])
    assert sorted(rows) == list(range(n)), "a row was never trained"
    assert set(rows.values()) == {1}, f"rows trained twice: {sorted(r for r, c in rows.items() if c > 1)[:10]}"
