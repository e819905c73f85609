"""Schedules of ``Trainer.fit`` (``train/schedule.py``), the callback order they give, and
``train.eval_every_steps`` reaching a job: evaluations at steps N, 2N, ... recorded in ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml


from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import build_model
from dist_ctr.strict import ConfigError
from dist_ctr.train.engine import Trainer
from dist_ctr.train.schedule import CheckpointSchedule, EvalSchedule, EveryNSteps
from tests.distributed.equivalence_jobs import global_batches, tiny_schema


# ---- schedule objects ---------------------------------------------------------------------------------------
def test_every_n_steps():
    assert [s for s in range(1, 13) if EveryNSteps(4).due(s)] == [4, 8, 12]
    assert not any(EveryNSteps(0).due(s) for s in range(0, 10))
    assert EveryNSteps(1).due(7) and not EveryNSteps(4).due(5, epoch_end=True)  # the epoch end is no reason


def test_checkpoint_schedule():
    ck = CheckpointSchedule(root="ck", every_steps=3)
    assert [s for s in range(1, 10) if ck.due(s)] == [3, 6, 9]
    assert ck.due(7, epoch_end=True)
    assert CheckpointSchedule(root="ck").due(5, epoch_end=True) and not CheckpointSchedule(root="ck").due(5)
    for off in (CheckpointSchedule(), CheckpointSchedule(root="", every_steps=1)):
        assert not off.due(3) and not off.due(3, epoch_end=True)


def test_eval_schedule():
    ev = EvalSchedule(every_steps=5)
    assert [s for s in range(1, 16) if ev.due(s)] == [5, 10, 15]
    assert ev.due(7, epoch_end=True)
    assert not EvalSchedule(every_steps=5, at_epoch_end=False).due(10, epoch_end=True)
    assert not any(EvalSchedule(every_steps=0).due(s) for s in range(1, 10))
    none = EvalSchedule.for_data(None, every_steps=2, at_epoch_end=True)
    assert not none.due(2) and not none.due(2, epoch_end=True)
    assert EvalSchedule.for_data([], every_steps=2, at_epoch_end=False) == EvalSchedule(2, False)


# ---- the engine follows them --------------------------------------------------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_begin(self, trainer):
        self.events.append(("train_begin", trainer.global_step))

    def on_epoch_begin(self, trainer, epoch):
        self.events.append(("epoch_begin", epoch))

    def on_batch_end(self, trainer, step, logs):
        self.events.append(("batch_end", step))

    def on_evaluate(self, trainer, step, metrics):
        assert metrics["eval_rows"] == 16.0
        self.events.append(("evaluate", step))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("epoch_end", epoch, "val_auc" in logs))

    def on_train_end(self, trainer, history):
        self.events.append(("train_end", trainer.global_step))


@pytest.fixture(scope="module")
def env() -> DistEnv:
    e = DistEnv()
    init_process_group(e)
    return e


def test_fit_logs_saves_and_evaluates_on_schedule_in_order(env, tmp_path, monkeypatch):
    torch.manual_seed(0)
    trainer = Trainer(build_model("LogisticRegression", tiny_schema(), None), env, seed=0)
    saved: list[tuple[int, bool]] = []
    real_save = trainer.save

    def save(root, train_data=None, storage_options=None, keep=2, epoch_done=False):
        saved.append((trainer.global_step, epoch_done))
        rec.events.append(("save", trainer.global_step))
        return real_save(root, train_data, storage_options=storage_options, keep=keep, epoch_done=epoch_done)

    monkeypatch.setattr(trainer, "save", save)
    rec = _Recorder()
    data, ev = global_batches(tiny_schema(), 3, 8), global_batches(tiny_schema(), 2, 8, seed=1)
    h = trainer.fit(data, epochs=2, eval_data=ev, callbacks=[rec], log_every=2, progress=False,
                    checkpoint_root=str(tmp_path / "ck"), checkpoint_every=4, eval_every_steps=3)
    assert rec.events == [
        ("train_begin", 0), ("epoch_begin", 0), ("batch_end", 2), ("evaluate", 3),
        ("evaluate", 3), ("epoch_end", 0, True), ("save", 3),
        ("epoch_begin", 1), ("batch_end", 4), ("save", 4), ("batch_end", 6), ("evaluate", 6),
        ("evaluate", 6), ("epoch_end", 1, True), ("save", 6), ("train_end", 6),
    ]
    assert saved == [(3, True), (4, False), (6, True)]
    assert [s["step"] for s in h.steps if "val_auc" in s] == [3, 6]
    assert [s["step"] for s in h.steps if "loss" in s] == [2, 4, 6]
    assert len(h.history["val_auc"]) == 2


# ---- train.eval_every_steps in a job ------------------------------------------------------------------------
ROWS, BATCH, EPOCHS = 512, 64, 2
STEPS = EPOCHS * ROWS // BATCH  # 16


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evsched")
    tiny_schema().save(str(d / "schema.yaml"))
    return d


def _run(job_dir: Path, env: DistEnv, name: str, eval_every_steps: int, stop_at: dict | None = None):
    from dist_ctr.config import load_job
    from dist_ctr.train.job import run_job

    raw = {
        "name": name, "seed": 1,
        "schema": {"path": str(job_dir / "schema.yaml")},
        "data": {"synth": {"out": str(job_dir / "data"), "rows": ROWS, "eval_rows": 128, "shards": 2,
                           "row_group_rows": 128, "seed": 5},
                 "train": {"batch_size": BATCH}, "eval": {"batch_size": 128}},
        "model": {"name": "LogisticRegression"},
        "train": {"epochs": EPOCHS, "log_every": 4, "progress": False, "eval_every_steps": eval_every_steps,
                  **({"stop_at": stop_at} if stop_at else {})},
        "output_dir": str(job_dir / "out"),
    }
    (job_dir / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    job = load_job(job_dir / f"{name}.yaml")
    assert job.train.eval_every_steps == eval_every_steps
    res = run_job(job, env, verbose=False)
    recs = [json.loads(x) for x in (job_dir / "out" / name / "metrics.jsonl").read_text().splitlines()]
    return res, [r for r in recs if r["kind"] == "eval"]


@pytest.mark.parametrize("every, expected", [(3, [3, 6, 9, 12, 15, 16]), (4, [4, 8, 12, 16]), (0, [16])])
def test_eval_every_steps_reaches_the_job(job_dir, env, every, expected):
    res, evals = _run(job_dir, env, f"ev{every}", every)
    assert res.steps == STEPS
    assert [r["step"] for r in evals] == expected  # one record per evaluated step, the final one included
    assert all(r["split"] == "eval" and r["eval_rows"] == 128 for r in evals)
    mid = [s["step"] for s in res.history.steps if "val_auc" in s]
    assert mid == [s for s in expected if every and s % every == 0]
    assert res.metrics == {k: v for k, v in evals[-1].items() if k not in ("step", "kind", "split")}
    assert "val_auc" not in res.history.history  # the job's fit never evaluates at epoch ends itself


def test_stop_at_ends_training_at_the_first_evaluation_reaching_the_target(job_dir, env):
    _, evals = _run(job_dir, env, "full", 2)
    aucs = {r["step"]: r["auc"] for r in evals}
    target = aucs[6]
    first = min(step for step, auc in aucs.items() if auc >= target)  # 6, or earlier if an earlier eval tied it
    res, stopped = _run(job_dir, env, "stop", 2, {"metric": "auc", "value": target})
    assert res.steps == first and [r["step"] for r in stopped] == [s for s in sorted(aucs) if s <= first]
    assert res.metrics["auc"] == pytest.approx(aucs[first])
    with pytest.raises(ConfigError, match=r"train.stop_at.metric: 'aucc' is not an evaluation metric"):
        _run(job_dir, env, "typo", 2, {"metric": "aucc", "value": 0.5})
    with pytest.raises(ConfigError, match=r"stop_at: needs eval_every_steps > 0"):
        _run(job_dir, env, "noeval", 0, {"value": 0.5})
