"""Run a job config on this process: data -> model -> Trainer -> metrics, checkpoint, summary.

Every launcher (``dist-ctr train`` locally, spawn, Ray workers) ends here with a ``DistEnv``; nothing in this file
knows who started the process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist

from dist_ctr.config import JobConfig, load_schema
from dist_ctr.data.config import DEFAULT_BATCH_SIZE
from dist_ctr.data.reports import report_rows
from dist_ctr.distributed.env import DistEnv
from dist_ctr.distributed.model_parallel import quiet_torchrec
from dist_ctr.schema import FeatureSchema
from dist_ctr.strict import ConfigError, to_dict
from dist_ctr.train import checkpoint as ckpt
from dist_ctr.train.engine import History, Trainer
from dist_ctr.train.observability import RunLogger
from dist_ctr.train.schedule import TargetStop


@dataclass
class JobResult:
    """What a job run produced: metrics, speed, where its checkpoint and logs are."""

    metrics: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    samples_per_s: float = 0.0
    steps: int = 0
    checkpoint: Optional[str] = None
    history: Optional[History] = None
    schema: Optional[FeatureSchema] = None
    step_losses: list[float] = field(default_factory=list)
    tb_dir: Optional[str] = None
    metrics_path: Optional[str] = None
    data_report: dict[str, Any] = field(default_factory=dict)  # skipped / filled, all ranks (data/reports.py)

    def summary(self) -> dict[str, Any]:
        """A picklable, JSON-able summary.

        Returns:
            dict[str, Any]: metrics, speed, steps, checkpoint, TensorBoard dir and metrics JSONL path.
        """
        return {"eval": self.metrics, "train": self.train_metrics, "baseline_eval": self.baseline_metrics,
                "samples_per_s": self.samples_per_s, "steps": self.steps, "checkpoint": self.checkpoint,
                "tb_dir": self.tb_dir, "metrics_path": self.metrics_path, "data_report": self.data_report}


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def ensure_synthetic_data(job: JobConfig, schema: FeatureSchema, env: DistEnv) -> None:
    """Generate the job's synthetic data set once (rank 0) when it is not there yet."""
    s = job.data.synth
    if s is None:
        return
    from dist_ctr.data.synthetic import generate

    out = Path(s.out)
    marker = out / "_SUCCESS"
    if env.is_main and not marker.exists():
        t0 = time.perf_counter()
        rep_train = generate(str(out / "train"), schema, rows=s.rows, shards=s.shards, row_group_rows=s.row_group_rows,
                             seed=s.seed)
        rep_eval = generate(str(out / "eval"), schema, rows=s.eval_rows, shards=max(1, s.shards // 2),
                            row_group_rows=s.row_group_rows, seed=s.seed + 1, row_id_start=s.rows)
        dt = time.perf_counter() - t0
        info = {"train": getattr(rep_train, "__dict__", str(rep_train)), "eval": getattr(rep_eval, "__dict__", str(rep_eval))}
        marker.write_text(json.dumps(info, default=str))
        bayes = getattr(rep_eval, "bayes_auc", None)
        print(f"[data] generated {s.rows:,} train + {s.eval_rows:,} eval rows under {out} in {dt:.1f}s"
              + (f" (generator's Bayes AUC on eval: {bayes:.4f})" if bayes else ""), flush=True)
    _barrier()


def _data_cfg(job: JobConfig, which: str):
    from dist_ctr.data.config import DataConfig

    raw = dict(job.data.train if which == "train" else (job.data.eval or {}))
    if job.data.synth is not None and "url" not in raw:
        raw["url"] = str(Path(job.data.synth.out) / which)
    if which == "eval" and not raw.get("url"):
        return None
    if which == "eval":
        base = dict(job.data.train)
        base.pop("url", None)
        base.update(raw)
        raw = base
        raw.setdefault("shuffle", False)
    return DataConfig.from_dict(raw, where=f"data.{which}")


def build_loaders(job: JobConfig, schema: FeatureSchema, env: DistEnv):
    from dist_ctr.data.loader import build_loader

    train_cfg = _data_cfg(job, "train")
    eval_cfg = _data_cfg(job, "eval")
    train = build_loader(schema, train_cfg, rank=env.rank, world_size=env.world_size, seed=job.seed, device=env.device)
    ev = (build_loader(schema, eval_cfg, rank=env.rank, world_size=env.world_size, seed=job.seed, device=env.device)
          if eval_cfg is not None else None)
    return train, ev, train_cfg


def make_trainer(job: JobConfig, schema: FeatureSchema, env: DistEnv, model_name: str | None = None,
                 model_config: dict[str, Any] | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> Trainer:
    from dist_ctr.models import build_model

    torch.manual_seed(job.seed)  # dense init: same on every rank (DDP also broadcasts rank 0's)
    np.random.seed(job.seed)
    model = build_model(model_name or job.model.name, schema,
                        job.model.config if model_config is None else model_config)
    trainer = Trainer(model, env, sparse_optim=job.optim.sparse, dense_optim=job.optim.dense,
                      sharding=job.distributed.sharding, batch_size=batch_size, seed=job.seed,
                      pipeline=job.distributed.pipeline, sync_batchnorm=job.distributed.sync_batchnorm,
                      loss_reduction=job.train.loss_reduction, precision=job.train.precision)
    trainer.meta = {"job": to_dict(job), "schema": schema.to_dict(), "model": model_name or job.model.name,
                    "model_config": job.model.config if model_config is None else model_config}
    return trainer


def run_job(job: JobConfig, env: DistEnv, callbacks: tuple = (), verbose: bool = True,
            print_result: bool = True) -> JobResult:
    """Train (and evaluate) a job on this process; collective when the world size is above 1."""
    quiet_torchrec()
    schema = load_schema(job.schema)
    ensure_synthetic_data(job, schema, env)
    train_data, eval_data, train_cfg = build_loaders(job, schema, env)
    trainer = make_trainer(job, schema, env, batch_size=getattr(train_cfg, "batch_size", DEFAULT_BATCH_SIZE))
    tc = job.train
    ck = tc.checkpoint
    ck_root = ck.dir or None
    if ck_root and ck.resume:
        skipped: list[str] = []
        latest = ckpt.latest_checkpoint(ck_root, ck.storage_options, skipped)
        if env.is_main:
            for line in skipped:  # torn / corrupt / uncommitted newer checkpoints: say so, use the newest good one
                print(f"[train] resume: {line}", flush=True)
        if latest is not None:
            trainer.load(latest.url, train_data, ck.storage_options)
            if env.is_main and verbose:
                print(f"[train] resumed from {latest.url} (step {latest.step}, epoch {latest.epoch})", flush=True)
    if env.is_main and verbose:
        print(f"[train] model {job.model.name} | {len(schema.sparse_features)} sparse, {schema.n_dense} dense "
              f"features | {env.world_size} worker(s) on {env.device.type} | sparse optimizer "
              f"{job.optim.sparse.name} (fused) | dense {job.optim.dense.name}", flush=True)
    run_log = RunLogger.for_job(job, env.is_main)
    if tc.stop_at is not None:
        if eval_data is None:
            raise ConfigError("train.stop_at: needs data.eval (the evaluations that check the target)")
        callbacks = (*callbacks, TargetStop(tc.stop_at.metric, tc.stop_at.value, announce=env.is_main and verbose))
    try:
        result, train_time = _train_and_evaluate(job, schema, env, trainer, train_data, eval_data, train_cfg,
                                                 (run_log, *callbacks), run_log, verbose)
    finally:
        run_log.close()
    if env.is_main and verbose and print_result:  # the Ray driver prints the run's summary itself
        print_summary(job, result, train_time)
    return result


def _train_and_evaluate(job: JobConfig, schema: FeatureSchema, env: DistEnv, trainer: Trainer, train_data: Any,
                        eval_data: Any, train_cfg: Any, callbacks: tuple, run_log: RunLogger,
                        verbose: bool) -> tuple[JobResult, float]:
    """Fit, evaluate (eval set, train set, baseline) and log the evaluations to ``run_log``.

    Returns:
        tuple[JobResult, float]: the result and the training time in seconds.
    """
    tc = job.train
    ck = tc.checkpoint
    ck_root = ck.dir or None
    t0 = time.perf_counter()
    history = trainer.fit(
        train_data, epochs=tc.epochs, eval_data=eval_data, callbacks=callbacks, max_steps=tc.max_steps,
        log_every=tc.log_every, progress=tc.progress and verbose, checkpoint_root=ck_root,
        checkpoint_every=ck.every_steps, checkpoint_keep=ck.keep, storage_options=ck.storage_options,
        eval_every_steps=tc.eval_every_steps, eval_at_epoch_end=False,  # the final evaluation is below
    )
    train_time = time.perf_counter() - t0
    result = JobResult(history=history, schema=schema, steps=trainer.global_step, tb_dir=run_log.tb_dir,
                       metrics_path=run_log.metrics_path)
    epochs_sps = history.history.get("samples_per_s", [])
    result.samples_per_s = float(np.mean(epochs_sps)) if epochs_sps else 0.0
    result.step_losses = [s["loss"] for s in history.steps if "loss" in s]
    if eval_data is not None:
        last = _eval_at(history, trainer.global_step)
        if last is not None:  # ``eval_every_steps`` evaluated (and logged) this very model already
            result.metrics = last
        else:
            result.metrics = trainer.evaluate(eval_data)
            run_log.log_eval(trainer.global_step, result.metrics)
    if tc.eval_train:
        result.train_metrics = trainer.evaluate(train_data)
        run_log.log_eval(trainer.global_step, result.train_metrics, split="train")
    if getattr(tc, "baseline", False) and eval_data is not None:
        base = make_trainer(job, schema, env, model_name="LogisticRegression", model_config={},
                            batch_size=getattr(train_cfg, "batch_size", DEFAULT_BATCH_SIZE))
        base.fit(train_data, epochs=tc.epochs, progress=False, log_every=0, max_steps=tc.max_steps)
        result.baseline_metrics = base.evaluate(eval_data)
    if ck_root:  # the checkpoint this run wrote last (the directory may hold newer ones of other runs)
        mine = [c for c in ckpt.list_checkpoints(ck_root, ck.storage_options) if c.step == trainer.global_step]
        result.checkpoint = mine[-1].url if mine else None
    result.data_report = _gather_data_report([train_data, eval_data])
    return result, train_time


def _eval_at(history: History, step: int) -> Optional[dict[str, float]]:
    """The metrics of the evaluation ``fit`` ran at ``step`` (``eval_every_steps``), or ``None``.

    >>> h = History(steps=[{"step": 4, "loss": 0.5}, {"step": 4, "val_auc": 0.7}])
    >>> _eval_at(h, 4), _eval_at(h, 5)
    ({'auc': 0.7}, None)
    """
    for s in reversed(history.steps):
        if s["step"] != step:
            return None
        if any(k.startswith("val_") for k in s):
            return {k[len("val_"):]: v for k, v in s.items() if k.startswith("val_")}
    return None


def _gather_data_report(loaders: list[Any]) -> dict[str, Any]:
    """Skipped files / row groups and filled values of every rank's loaders, merged (collective over ranks)."""
    from dist_ctr.data.reports import merge_reports

    mine = merge_reports(ld.report() for ld in loaders if ld is not None and hasattr(ld, "report"))
    if dist.is_initialized() and dist.get_world_size() > 1:
        every: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(every, mine)
        return merge_reports(every)
    return mine


def _metric_cells(m: dict[str, float]) -> str:
    """``auc 0.7312   logloss 0.4523   rows 100,000`` (per-task keys keep their ``task/`` prefix)."""
    cells = [f"{k} {v:.4f}" for k, v in m.items() if k != "eval_rows"]
    if "eval_rows" in m:
        cells.append(f"rows {int(m['eval_rows']):,}")
    return "   ".join(cells)


def summary_lines(job: JobConfig, r: JobResult, train_time: float) -> list[str]:
    """The aligned end-of-run block ``print_summary`` prints.

    Args:
        job (JobConfig): the job.
        r (JobResult): its result.
        train_time (float): training seconds.

    Returns:
        list[str]: a ``[result]`` header line and indented ``label  value`` rows.
    """
    rows: list[tuple[str, str]] = [("samples/s", f"{r.samples_per_s:,.0f} (training)")]
    if r.metrics:
        rows.append(("eval", _metric_cells(r.metrics)))
    if r.train_metrics:
        rows.append(("train", _metric_cells(r.train_metrics)))
    if r.baseline_metrics:
        rows.append(("baseline", _metric_cells(r.baseline_metrics) + " (logistic regression, same split)"))
    if r.checkpoint:
        rows.append(("checkpoint", r.checkpoint))
    if r.tb_dir:
        rows.append(("tensorboard", f"{r.tb_dir}   (tensorboard --logdir {r.tb_dir})"))
    if r.metrics_path:
        rows.append(("metrics", r.metrics_path))
    rows += report_rows(r.data_report)
    width = max(len(k) for k, _ in rows)
    return ([f"[result] {job.name}: {r.steps} steps in {train_time:.1f} s"]
            + [f"  {k:<{width}} {v}" for k, v in rows])


def print_summary(job: JobConfig, r: JobResult, train_time: float) -> None:
    """Print the aligned end-of-run summary (rank 0)."""
    print("\n".join(summary_lines(job, r, train_time)), flush=True)


def run_job_summary(env: DistEnv, job: JobConfig) -> dict[str, Any]:
    """Spawn-friendly wrapper: runs the job and returns a picklable summary (rank 0 prints)."""
    return run_job(job, env, verbose=env.is_main).summary()
