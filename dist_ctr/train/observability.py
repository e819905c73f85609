"""Run logs: TensorBoard scalars and a metrics JSONL, written by rank 0 from the engine's callbacks.

A :class:`RunLogger` is an engine callback (see ``train/engine.py``). It writes, under ``<output_dir>/<job name>/``:

- ``tb/``: TensorBoard event files (``tensorboard --logdir <output_dir>/<job name>/tb``), through
  ``torch.utils.tensorboard.SummaryWriter`` (backed by the ``tensorboard`` package; no TensorFlow needed);
- ``metrics.jsonl``: one JSON object per record, ``{"step", "kind": "train" | "epoch" | "eval", ...}``.

Scalars: ``train/loss``, ``train/samples_per_s``, ``train/epoch``, ``lr/dense`` (the dense optimizer's first param
group), ``lr/sparse`` (the job's fused sparse optimizer config), per epoch ``epoch/loss`` and
``epoch/samples_per_s``, and from :meth:`RunLogger.log_eval` ``eval/<task>/<metric>`` (``auc``, ``logloss`` or
``mse``, ``mae``) plus ``eval/rows``, for the evaluations during training too (``train.eval_every_steps``: the
engine's ``on_evaluate``, at the step evaluated).

Only rank 0 writes; on other ranks every method is a no-op. TensorBoard needs a local directory: when
``output_dir`` is a remote fsspec URL (``s3://...``), the files are written to a local temporary directory and
copied to the URL by :meth:`RunLogger.close`. A fresh run (step 0 at ``on_train_begin``) replaces the files of an
earlier run of the same job name; a resumed run appends to them.

Plots are made from these files afterwards, never from live state: ``dist-ctr report RUN_DIR``
(``dist_ctr/report.py``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Optional, TextIO

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


def run_dir_for(output_dir: str, job_name: str) -> str:
    """``<output_dir>/<job name>`` (a path or URL).

    Args:
        output_dir (str): the job's ``output_dir`` (local path or fsspec URL).
        job_name (str): the job's ``name``.

    Returns:
        str: the run directory.

    >>> run_dir_for("runs/", "demo")
    'runs/demo'
    """
    return f"{output_dir.rstrip('/')}/{job_name}"


def _is_remote(url: str) -> bool:
    """True for a URL with a scheme other than ``file`` (``s3://``, ``memory://``, ...)."""
    return "://" in url and not url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def dense_lr(optimizer: Any) -> Optional[float]:
    """Learning rate of the dense optimizer inside the trainer's ``CombinedOptimizer``.

    Args:
        optimizer: ``Trainer.optimizer`` (TorchRec ``CombinedOptimizer`` of ``("sparse", ...)``, ``("dense", ...)``),
            or any optimizer with ``param_groups``.

    Returns:
        float | None: the first dense param group's ``lr``; ``None`` when there is none.
    """
    for name, opt in getattr(optimizer, "optimizers", ()):
        if name == "dense" and getattr(opt, "param_groups", None):
            return float(opt.param_groups[0]["lr"])
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[-1]["lr"]) if groups else None


def eval_tags(metrics: dict[str, float], task_names: tuple[str, ...], split: str = "eval") -> dict[str, float]:
    """TensorBoard tags for ``Trainer.evaluate`` metrics.

    Single-task keys (``auc``) get the task's name; multi-task keys are already ``<task>/<metric>``.

    Args:
        metrics (dict[str, float]): ``Trainer.evaluate``'s result (``EvalAccumulator.compute``).
        task_names (tuple[str, ...]): the trainer's task names.
        split (str): tag prefix (``eval`` or ``eval_train``).

    Returns:
        dict[str, float]: tag -> value.

    >>> eval_tags({"eval_rows": 10.0, "auc": 0.7}, ("label",))
    {'eval/rows': 10.0, 'eval/label/auc': 0.7}
    """
    task = task_names[0] if task_names else "task0"
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k == "eval_rows":
            out[f"{split}/rows"] = float(v)
        elif "/" in k:
            out[f"{split}/{k}"] = float(v)
        else:
            out[f"{split}/{task}/{k}"] = float(v)
    return out


class RunLogger:
    """Engine callback writing TensorBoard scalars and ``metrics.jsonl`` for one run (rank 0 only).

    Args:
        run_dir (str): ``<output_dir>/<job name>``; a local path or an fsspec URL (copied at :meth:`close`).
        enabled (bool): write anything at all (``env.is_main``); ``False`` makes every method a no-op.
        sparse_lr (float | None): the fused sparse optimizer's learning rate (``job.optim.sparse.lr``).
        storage_options (dict | None): fsspec options for a remote ``run_dir``.
    """

    def __init__(self, run_dir: str, enabled: bool = True, sparse_lr: Optional[float] = None,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.sparse_lr = sparse_lr
        self.storage_options = storage_options or {}
        self.remote = _is_remote(run_dir)
        self._local = tempfile.mkdtemp(prefix="dist_ctr_run_") if (self.remote and enabled) else _local_path(run_dir)
        self.tb_dir = f"{run_dir}/{TB_DIR}"
        self.metrics_path = f"{run_dir}/{METRICS_FILE}"
        self.task_names: tuple[str, ...] = ()
        self._writer: Any = None
        self._jsonl: Optional[TextIO] = None

    @classmethod
    def for_job(cls, job: Any, is_main: bool) -> "RunLogger":
        """The logger of a ``JobConfig`` (``<output_dir>/<name>``, the sparse optimizer's lr).

        Args:
            job (JobConfig): the job.
            is_main (bool): this process is rank 0.

        Returns:
            RunLogger: not opened yet (opens at ``on_train_begin`` or the first record).
        """
        return cls(run_dir_for(job.output_dir, job.name), enabled=is_main, sparse_lr=float(job.optim.sparse.lr),
                   storage_options=job.train.checkpoint.storage_options)

    # ---- files --------------------------------------------------------------------------------------------
    def open(self, fresh: bool = True) -> None:
        """Create the writers (idempotent).

        Args:
            fresh (bool): replace an earlier run's event files and JSONL (``False``: append, for a resume).
        """
        if not self.enabled or self._writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        tb = Path(self._local) / TB_DIR
        tb.mkdir(parents=True, exist_ok=True)
        if fresh:
            for old in tb.glob("events.out.tfevents.*"):
                old.unlink()
        self._writer = SummaryWriter(log_dir=str(tb), flush_secs=30)
        self._jsonl = open(Path(self._local) / METRICS_FILE, "w" if fresh else "a", encoding="utf-8")

    def _record(self, step: int, kind: str, values: dict[str, Any], scalars: dict[str, float]) -> None:
        """One JSONL line and its TensorBoard scalars."""
        if not self.enabled:
            return
        self.open(fresh=False)
        assert self._writer is not None and self._jsonl is not None
        self._jsonl.write(json.dumps({"step": int(step), "kind": kind, **values}) + "\n")
        for tag, v in scalars.items():
            self._writer.add_scalar(tag, float(v), global_step=int(step))

    def flush(self) -> None:
        """Push buffered records to disk."""
        if self._writer is not None:
            self._writer.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        """Flush and close the files; copy them to a remote ``run_dir``. Safe to call twice."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
            if self.remote:
                import fsspec

                fs, root = fsspec.core.url_to_fs(self.run_dir, **self.storage_options)
                fs.put(self._local.rstrip("/") + "/", root, recursive=True)

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- records ------------------------------------------------------------------------------------------
    def log_eval(self, step: int, metrics: dict[str, float], split: str = "eval") -> None:
        """Record ``Trainer.evaluate`` metrics at ``step``.

        Args:
            step (int): the global step the model was evaluated at.
            metrics (dict[str, float]): ``Trainer.evaluate``'s result.
            split (str): ``"eval"`` (held-out set) or ``"train"`` (training set; tags ``eval_train/...``).
        """
        if not metrics:
            return
        prefix = "eval" if split == "eval" else f"eval_{split}"
        self._record(step, "eval", {"split": split, **{k: float(v) for k, v in metrics.items()}},
                     eval_tags(metrics, self.task_names, prefix))
        self.flush()

    # ---- engine callbacks ---------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Any) -> None:
        self.task_names = tuple(getattr(trainer, "task_names", ()))
        self.open(fresh=int(getattr(trainer, "global_step", 0)) == 0)

    def on_batch_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        values: dict[str, Any] = {"epoch": int(trainer.epoch), "loss": float(logs["loss"]),
                                  "samples_per_s": float(logs["samples_per_s"])}
        lr_d = dense_lr(trainer.optimizer)
        if lr_d is not None:
            values["lr_dense"] = lr_d
        if self.sparse_lr is not None:
            values["lr_sparse"] = self.sparse_lr
        scalars = {"train/loss": values["loss"], "train/samples_per_s": values["samples_per_s"],
                   "train/epoch": float(values["epoch"])}
        if lr_d is not None:
            scalars["lr/dense"] = lr_d
        if self.sparse_lr is not None:
            scalars["lr/sparse"] = self.sparse_lr
        self._record(step, "train", values, scalars)

    def on_evaluate(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        """An evaluation ``fit`` ran (``train.eval_every_steps``): recorded as :meth:`log_eval` at ``step``."""
        self.log_eval(step, metrics)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        values = {"epoch": int(epoch), **{k: float(v) for k, v in logs.items()}}
        scalars = {f"epoch/{k}": float(v) for k, v in logs.items() if k in ("loss", "samples_per_s")}
        self._record(int(trainer.global_step), "epoch", values, scalars)
        self.flush()

    def on_train_end(self, trainer: Any, logs: Any) -> None:
        self.flush()

