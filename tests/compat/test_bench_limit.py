"""The facade bench's limit (dist_ctr.bench.limit through FacadeRunner.limit_steps): the bare embedding step trains
the model's own tables and nothing else, the bare dense step trains the interaction and tower on fixed lookups and
leaves the tables alone, and the runner's own model is not touched by either."""

from __future__ import annotations

import torch

from dist_ctr.bench.facade import COMPAT, FacadeRunner
from dist_ctr.bench.limit import limit_rate
from dist_ctr.bench.peer import peer_columns
from dist_ctr.bench.peer_data import make_data


def _local(v: torch.Tensor) -> torch.Tensor:
    """A state-dict value as a plain tensor (a sharded table's one local shard at world size 1)."""
    return (v.local_shards()[0].tensor if hasattr(v, "local_shards") else v).detach().clone()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: _local(v) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _state(model).items() if "embedding" in k and v.dim() == 2}


def test_limit_steps_train_the_lookups_and_the_dense_part_apart():
    vocabs = [40] * 26
    d = make_data(512, vocabs, seed=0)
    runner = FacadeRunner("DeepFM", peer_columns(COMPAT, vocabs, 4), lr=0.01, seed=1, batch=128)
    own_before = _state(runner.model.trainer.dmp)
    emb_step, dense_step, batches = runner.limit_steps(d)
    assert len(batches) == 4 and all(b.batch_size == 128 for b in batches)

    lookups = emb_step.__self__  # the Trainer of the bare embedding step
    before = _tables(lookups.dmp)
    assert before, "the bare embedding step holds the model's tables"
    emb_step(batches[0])
    after = _tables(lookups.dmp)
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)

    free = dict(zip(dense_step.__code__.co_freevars, (c.cell_contents for c in dense_step.__closure__ or ())))
    second = free["model"]  # the second model, whose lookups return one batch's fixed outputs
    assert second is not runner.model.model
    dense_before, tables_before = _state(second), _tables(second)
    assert tables_before
    dense_step(batches[1])  # fixed lookups, BCE, backward, Adam
    dense_after, tables_after = _state(second), _tables(second)
    changed = {k for k in dense_before if not torch.equal(dense_before[k], dense_after[k])}
    assert changed and not changed & set(tables_before), "the tower trains, the tables do not"
    assert all(torch.equal(tables_before[k], tables_after[k]) for k in tables_before)

    own_after = _state(runner.model.trainer.dmp)
    assert all(torch.equal(own_before[k], own_after[k]) for k in own_before)
    assert limit_rate(3.0, 6.0) == 2.0
