"""The training engine: one loop for every launcher and world size.

``Trainer`` owns a sharded ``CTRTask`` (always through DistributedModelParallel, also at world size 1) and runs
``fit`` / ``evaluate`` / ``predict`` over iterables of :class:`~dist_ctr.data.batch.CTRBatch`. Data objects may
offer ``set_epoch(e)``, ``__len__``, ``state_dict()`` / ``load_state_dict()`` (the Parquet loader does); plain
lists of batches work too (the compat facade uses them).

Training steps run in one of two loops, chosen by ``pipeline``:

- ``"none"``: the plain loop, one batch at a time (``train_step``): move, forward, backward (the fused sparse
  optimizer updates the embeddings inside backward), dense optimizer step.
- ``"sparse_dist"``: TorchRec's ``TrainPipelineSparseDist``, which copies batch ``i + 2`` to the device and starts
  batch ``i + 1``'s embedding input distribution (the all-to-all of ids) while batch ``i`` trains; on CUDA the
  copies and collectives run on their own streams. Same maths, same order of updates: losses equal the plain
  loop's. The loader is read up to two batches ahead, so the cursor saved with a checkpoint is the one recorded
  when the last *trained* batch was read (exact resume either way).
- ``"auto"`` (default): ``"sparse_dist"`` on CUDA when the model is pipelineable (``CTRTask.pipelineable``),
  else ``"none"``.

Callbacks are objects with any of ``on_train_begin(trainer)``, ``on_epoch_begin(trainer, epoch)``,
``on_batch_end(trainer, step, logs)``, ``on_evaluate(trainer, step, metrics)``, ``on_epoch_end(trainer, epoch,
logs)``, ``on_train_end(trainer, logs)``; setting ``trainer.stop_training = True`` ends training after the current
step. After each trained batch ``fit`` logs (``on_batch_end``), saves and evaluates (``on_evaluate``) in that order
when their schedules are due (``train/schedule.py``); at an epoch end it evaluates (``on_evaluate``), calls
``on_epoch_end``, then saves.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.config import DEFAULT_BATCH_SIZE
from dist_ctr.distributed.batchnorm import convert_global_batchnorm
from dist_ctr.distributed.env import DistEnv
from dist_ctr.distributed.model_parallel import parallelize
from dist_ctr.train import checkpoint as ckpt
from dist_ctr.train.metrics import EvalAccumulator
from dist_ctr.train.schedule import CheckpointSchedule, EvalSchedule, EveryNSteps
from dist_ctr.train.task import CTRTask
from dist_ctr.errors import TrainingFailure


class TrainingError(TrainingFailure):
    """Training cannot go on (non-finite loss, bad labels); the message says where."""


@dataclass
class History:
    """Per-epoch logs (``history[k]`` is a list over epochs, as Keras' ``History.history``) and step logs."""

    history: dict[str, list[float]] = field(default_factory=dict)
    steps: list[dict[str, float]] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)

    def add_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)


PIPELINES = ("auto", "sparse_dist", "none")
PRECISIONS = ("fp32", "bf16")


class _CursorTrackedBatches:
    """Iterator over ``data`` that records each batch it hands out with the loader cursor right after it.

    The sparse-dist pipeline reads ahead; ``read.popleft()`` is ``(batch, cursor)`` of the next batch to finish
    training, in order.
    """

    def __init__(self, data: Iterable[CTRBatch]) -> None:
        self._it = iter(data)
        self._data = data
        self._tracks = hasattr(data, "state_dict")
        self.read: deque[tuple[CTRBatch, Optional[dict[str, Any]]]] = deque()

    def __iter__(self) -> "_CursorTrackedBatches":
        return self

    def __next__(self) -> CTRBatch:
        batch = next(self._it)
        self.read.append((batch, self._data.state_dict() if self._tracks else None))  # type: ignore[attr-defined]
        return batch


@dataclass
class _FitRun:
    """What one ``fit`` call works with: data, callbacks, schedules, options, and the history it fills."""

    train_data: Iterable[CTRBatch]
    eval_data: Optional[Iterable[CTRBatch]]
    callbacks: Sequence[Any]
    epochs: int
    max_steps: int
    log: EveryNSteps
    show: bool
    checkpoint: CheckpointSchedule
    checkpoint_keep: int
    storage_options: dict[str, Any] | None
    evaluation: EvalSchedule
    history: History = field(default_factory=History)


class _EpochStats:
    """Running totals of one epoch: loss sum (float64, on the loss's device: no host sync per step), steps,
    rows, and the start time."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.loss_sum: Optional[torch.Tensor] = None
        self.steps, self.rows = 0, 0
        self.t0 = time.perf_counter()

    def add(self, rows: int, loss: torch.Tensor) -> None:
        loss = loss.detach().double()
        self.loss_sum = loss.clone() if self.loss_sum is None else self.loss_sum.add_(loss)
        self.steps += 1
        self.rows += rows

    def samples_per_s(self) -> float:
        """Global training speed since the epoch began (rows of all ranks)."""
        return self.rows * self.world_size / max(1e-9, time.perf_counter() - self.t0)

    def logs(self) -> dict[str, float]:
        """The epoch's logs: mean ``loss``, ``samples_per_s``, ``steps``."""
        total = float(self.loss_sum) if self.loss_sum is not None else 0.0  # host sync (once per epoch)
        return {"loss": total / max(1, self.steps), "samples_per_s": self.samples_per_s(),
                "steps": float(self.steps)}


def _callback(callbacks: Sequence[Any], name: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


class Trainer:
    """Sharded training of one model.

    Args:
        model (nn.Module): a ``CTRModel`` (embeddings on meta; dense layers built after ``torch.manual_seed``).
        env (DistEnv): this process's place; the process group must exist (``init_process_group``).
        task_types (Sequence[str]): per output column; default: the schema's label tasks.
        sparse_optim / dense_optim: optimizer configs.
        sharding (dict | None): sharding constraints (``distributed/sharding_config.py``).
        batch_size (int): per-rank batch size hint for the planner.
        seed (int): embedding init seed (identical init whatever the sharding).
        task_names (Sequence[str] | None): names for per-task metrics.
        loss_weights (Sequence[float] | None): per-task loss weights.
        loss_reduction (str): ``"mean"`` (default) or ``"sum"`` over the global batch, DeepCTR-Torch's
            (``train/task.py``).
        precision (str): ``"fp32"`` (default) or ``"bf16"``: the forward runs under ``torch.autocast`` with
            bfloat16 (matmuls and convolutions in bf16, reductions and the loss in fp32; weights, gradients and
            optimizer state stay fp32; logits come out fp32). It pays where the hardware has bf16 matrix units
            (GPUs, CPUs with AVX-512 BF16 / AMX); on a CPU without them bf16 matmuls are emulated and slower.
        pipeline (str): training loop, ``"auto"`` | ``"sparse_dist"`` | ``"none"`` (see the module docstring).
        sync_batchnorm (bool): batch norms of ``model`` normalise over the global batch (all ranks), so N ranks
            train the model one process would (``distributed/batchnorm.py``; swapped in place, same state-dict
            keys); ``False`` keeps per-rank statistics (plain DDP behaviour). No effect at world size 1.
    """

    def __init__(
        self,
        model: nn.Module,
        env: DistEnv,
        task_types: Sequence[str] | None = None,
        sparse_optim: SparseOptimConfig | None = None,
        dense_optim: DenseOptimConfig | None = None,
        sharding: dict[str, Any] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seed: int = 0,
        task_names: Sequence[str] | None = None,
        loss_weights: Sequence[float] | None = None,
        pipeline: str = "auto",
        sync_batchnorm: bool = True,
        loss_reduction: str = "mean",
        precision: str = "fp32",
    ) -> None:
        if pipeline not in PIPELINES:
            raise ValueError(f"distributed.pipeline: unknown pipeline {pipeline!r}; expected one of {list(PIPELINES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"train.precision: unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        self.precision = precision
        schema = getattr(model, "schema", None)
        if task_types is None:
            task_types = schema.task_types if schema is not None and schema.labels else ["binary"]
        if task_names is None and schema is not None and schema.labels:
            task_names = schema.label_names
        self.env = env
        self.model = model
        if sync_batchnorm:
            convert_global_batchnorm(model)
        self.task = CTRTask(model, task_types, loss_weights, loss_reduction, env.world_size)
        self.task_types = tuple(task_types)
        self.task_names = tuple(task_names) if task_names else tuple(f"task{i}" for i in range(len(task_types)))
        par = parallelize(self.task, env, sparse_optim or SparseOptimConfig(), dense_optim or DenseOptimConfig(),
                          sharding, batch_size=batch_size, seed=seed)
        self.dmp = par.dmp
        self.optimizer = par.optimizer
        self.plan = par.plan
        self.global_step = 0
        self.epoch = 0
        self.stop_training = False
        self.meta: dict[str, Any] = {}
        if pipeline == "sparse_dist" and not self.task.pipelineable:
            raise ValueError(f"distributed.pipeline: {type(model).__name__} is not pipelineable (it feeds its "
                             "embedding modules something other than the batch's ids); use 'auto' or 'none'")
        self.pipeline = (pipeline if pipeline != "auto" else
                         "sparse_dist" if env.device.type == "cuda" and self.task.pipelineable else "none")
        self._pipe: Any = None  # the TrainPipelineSparseDist of the running epoch
        self._cursor: Optional[dict[str, Any]] = None  # loader cursor after the last trained batch (pipelined)
        self.last_batch: Optional[CTRBatch] = None  # the batch ``fit`` trained last (for callbacks: ledgers, debugging)
        self.pipelined_modules: Optional[int] = None  # sharded modules the sparse-dist pipeline took over

    # ---- steps --------------------------------------------------------------------------------------------
    def train_step(self, batch: CTRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the plain loop. Returns (loss, logits) detached."""
        self._detach_pipeline()
        if not self.dmp.training:  # ``train()`` walks every submodule: only when an evaluation switched it off
            self.dmp.train()
        batch = batch.to(self.env.device, non_blocking=True)
        with self.autocast():
            loss, (loss_d, logits, _labels, _w) = self.dmp(batch)
        loss.backward()  # fused sparse optimizer updates the embeddings here
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return loss_d, logits

    def autocast(self) -> torch.autocast:
        """The forward's precision context: bf16 autocast under ``precision="bf16"``, else a disabled one."""
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _detach_pipeline(self) -> None:
        """Give the sharded modules their own forwards back (the pipeline re-attaches on its next step)."""
        if self._pipe is not None:
            self._pipe.detach()

    def _plain_steps(self, data: Iterable[CTRBatch]) -> Iterator[tuple[int, torch.Tensor]]:
        """``(rows, loss)`` per trained batch of the plain loop."""
        for batch in data:
            loss, _ = self.train_step(batch)
            self.last_batch = batch
            yield batch.batch_size, loss

    def _pipelined_steps(self, data: Iterable[CTRBatch]) -> Iterator[tuple[int, torch.Tensor]]:
        """``(rows, loss)`` per trained batch of ``TrainPipelineSparseDist``; one pipeline per epoch."""
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        self.dmp.train()
        batches = _CursorTrackedBatches(data)
        self._pipe = TrainPipelineSparseDist(self.dmp, self.optimizer, self.env.device)
        try:
            while True:
                try:
                    with self.autocast():
                        loss_d, _logits, labels, _w = self._pipe.progress(batches)
                except StopIteration:
                    return
                if self.pipelined_modules is None:  # after the first step the model has been rewritten
                    self.pipelined_modules = len(getattr(self._pipe, "_pipelined_modules", ()))
                self.last_batch, self._cursor = batches.read.popleft()
                self.global_step += 1
                yield labels.shape[0], loss_d
        finally:
            self._pipe.detach()
            self._pipe = None

    @torch.no_grad()
    def _forward_eval(self, batch: CTRBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._detach_pipeline()
        batch = batch.to(self.env.device, non_blocking=True)
        with self.autocast():
            _loss, (_l, logits, labels, weights) = self.dmp(batch)
        return self.task.predict_proba(logits), labels, weights

    def evaluate(self, data: Iterable[CTRBatch]) -> dict[str, float]:
        """Exact metrics over every rank's rows of ``data`` (collective when world size > 1)."""
        self.dmp.eval()
        acc = EvalAccumulator(self.task_types, self.task_names)
        for batch in data:
            preds, labels, weights = self._forward_eval(batch)
            acc.update(preds, labels, weights)
        self.dmp.train()
        return acc.compute()

    def predict(self, data: Iterable[CTRBatch]) -> torch.Tensor:
        """Predictions ``(N, T)`` for this rank's rows (probabilities for binary tasks)."""
        self.dmp.eval()
        out = [self._forward_eval(b)[0].cpu() for b in data]  # host sync
        self.dmp.train()
        return torch.cat(out) if out else torch.zeros(0, len(self.task_types))

    # ---- loop ---------------------------------------------------------------------------------------------
    def fit(
        self,
        train_data: Iterable[CTRBatch],
        epochs: int = 1,
        eval_data: Optional[Iterable[CTRBatch]] = None,
        callbacks: Sequence[Any] = (),
        max_steps: int = 0,
        log_every: int = 50,
        progress: bool = True,
        checkpoint_root: Optional[str] = None,
        checkpoint_every: int = 0,
        checkpoint_keep: int = 2,
        storage_options: dict[str, Any] | None = None,
        initial_epoch: int = 0,
        eval_every_steps: int = 0,
        eval_at_epoch_end: bool = True,
    ) -> History:
        """Train ``epochs`` epochs (resuming from ``self.epoch`` if a checkpoint was loaded).

        Per epoch the logs hold ``loss`` (mean training loss), ``samples_per_s``, and ``val_<metric>`` when
        ``eval_data`` is given and ``eval_at_epoch_end``. With ``eval_every_steps`` N, ``eval_data`` is also
        evaluated at global steps N, 2N, ... (``history.steps`` gets ``{"step", "val_<metric>"}``; callbacks get
        ``on_evaluate``). Non-finite losses stop training with an error naming the step.
        """
        run = _FitRun(train_data=train_data, eval_data=eval_data, callbacks=callbacks, epochs=epochs,
                      max_steps=max_steps, log=EveryNSteps(log_every), show=progress and self.env.is_main,
                      checkpoint=CheckpointSchedule(checkpoint_root, checkpoint_every),
                      checkpoint_keep=checkpoint_keep, storage_options=storage_options,
                      evaluation=EvalSchedule.for_data(eval_data, eval_every_steps, eval_at_epoch_end))
        self.stop_training = False
        _callback(callbacks, "on_train_begin", self)
        for epoch in range(max(initial_epoch, self.epoch), epochs):
            self._fit_epoch(run, epoch)
            if self.stop_training:
                break
        _callback(callbacks, "on_train_end", self, run.history)
        return run.history

    def _fit_epoch(self, run: "_FitRun", epoch: int) -> None:
        """One epoch of ``fit``: begin, train steps until the data ends or training stops, end."""
        total = self._begin_epoch(run, epoch)
        bar = self._progress_bar(run, epoch, total)
        stats = _EpochStats(self.env.world_size)
        self._cursor = None
        data = run.train_data
        steps = self._pipelined_steps(data) if self.pipeline == "sparse_dist" else self._plain_steps(data)
        for rows, loss in steps:
            stats.add(rows, loss)
            self._after_step(run, epoch, stats, loss, bar)
            if self._should_stop(run):
                break
        steps.close()  # a pipelined epoch stopped early drops its read-ahead batches (the cursor excludes them)
        logs = stats.logs()
        if bar is not None:
            bar.close()
        self._end_epoch(run, epoch, logs, whole=total is not None and stats.steps >= total)

    def _begin_epoch(self, run: "_FitRun", epoch: int) -> Optional[int]:
        """Position the data on ``epoch`` (unless resumed mid-epoch), call ``on_epoch_begin``; returns its length."""
        self.epoch = epoch
        data = run.train_data
        if hasattr(data, "set_epoch") and not getattr(self, "_resumed_mid_epoch", False):
            data.set_epoch(epoch)  # type: ignore[attr-defined]
        self._resumed_mid_epoch = False
        _callback(run.callbacks, "on_epoch_begin", self, epoch)
        return len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]

    def _progress_bar(self, run: "_FitRun", epoch: int, total: Optional[int]) -> Any:
        """A tqdm bar for the epoch on rank 0 when ``progress``; else ``None``."""
        if not run.show:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {epoch + 1}/{run.epochs}", unit="step", leave=True,
                    dynamic_ncols=True, mininterval=0.5)

    def _after_step(self, run: "_FitRun", epoch: int, stats: "_EpochStats", loss: torch.Tensor, bar: Any) -> None:
        """After a trained batch: step log (``log_every``), progress, checkpoint and evaluation when due."""
        step = self.global_step
        if run.log.due(step):
            self._log_step(run, epoch, stats, loss, bar)
        if bar is not None:
            bar.update(1)
        if run.checkpoint.due(step):
            self._save_checkpoint(run)
        if run.evaluation.due(step):
            self._evaluate_at(run, step)

    def _log_step(self, run: "_FitRun", epoch: int, stats: "_EpochStats", loss: torch.Tensor, bar: Any) -> None:
        """Check the step's loss is finite, append the step logs to the history, call ``on_batch_end``."""
        lv = float(loss)  # host sync
        if not math.isfinite(lv):
            raise TrainingError(f"loss is {lv} at step {self.global_step} (epoch {epoch}); check labels "
                                "and learning rates")
        step_logs = {"step": self.global_step, "loss": lv, "samples_per_s": stats.samples_per_s()}
        run.history.steps.append(step_logs)
        _callback(run.callbacks, "on_batch_end", self, self.global_step, step_logs)
        if bar is not None:
            bar.set_postfix(loss=f"{lv:.4f}")

    def _evaluate_at(self, run: "_FitRun", step: int) -> dict[str, float]:
        """Evaluate ``run.eval_data`` mid-epoch: ``history.steps`` gets the ``val_`` metrics, callbacks
        ``on_evaluate(trainer, step, metrics)``."""
        m = self.evaluate(run.eval_data)  # type: ignore[arg-type]
        run.history.steps.append({"step": step, **{f"val_{k}": v for k, v in m.items()}})
        _callback(run.callbacks, "on_evaluate", self, step, m)
        return m

    def _should_stop(self, run: "_FitRun") -> bool:
        """A callback set ``stop_training`` or ``max_steps`` is reached (sets ``stop_training``)."""
        if self.stop_training or (run.max_steps and self.global_step >= run.max_steps):
            self.stop_training = True
            return True
        return False

    def _end_epoch(self, run: "_FitRun", epoch: int, logs: dict[str, float], whole: bool) -> None:
        """Check the epoch's loss, evaluate (epoch-end schedule), record, ``on_epoch_end``, checkpoint.

        ``whole``: every batch of a sized epoch was trained. The epoch counts as finished when it was whole or
        training was not stopped (checked after ``on_epoch_end``, which may stop it); an unfinished epoch
        (``max_steps``) is checkpointed with its loader cursor and epoch number for an exact resume.
        """
        if not math.isfinite(logs["loss"]):
            raise TrainingError(f"mean training loss of epoch {epoch} is not finite")
        if run.evaluation.due(self.global_step, epoch_end=True):
            m = self.evaluate(run.eval_data)  # type: ignore[arg-type]
            for k, v in m.items():
                logs[f"val_{k}"] = v
            _callback(run.callbacks, "on_evaluate", self, self.global_step, m)
        run.history.add_epoch(epoch, logs)
        self.epoch = epoch + 1
        _callback(run.callbacks, "on_epoch_end", self, epoch, logs)
        if run.checkpoint.due(self.global_step, epoch_end=True):
            finished = not self.stop_training or whole
            if not finished:
                self.epoch = epoch  # stopped mid-epoch (max_steps): keep the loader cursor for an exact resume
            self._save_checkpoint(run, epoch_done=finished)

    def _save_checkpoint(self, run: "_FitRun", epoch_done: bool = False) -> None:
        self.save(run.checkpoint.root, run.train_data, storage_options=run.storage_options,  # type: ignore[arg-type]
                  keep=run.checkpoint_keep, epoch_done=epoch_done)

    # ---- checkpoints --------------------------------------------------------------------------------------
    def app_state(self) -> dict[str, Any]:
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}

    def save(self, root: str, train_data: Any = None, storage_options: dict[str, Any] | None = None, keep: int = 2,
             epoch_done: bool = False) -> str:
        """Collective checkpoint of model, optimizers, loader cursor, step and epoch."""
        loader_state = None
        if train_data is not None and hasattr(train_data, "state_dict") and not epoch_done:
            cursor = self._cursor if self._cursor is not None else train_data.state_dict()
            loader_state = ckpt.to_jsonable(cursor)
        meta = {"epoch_done": epoch_done, **self.meta}
        return ckpt.save_checkpoint(root, self.global_step, self.epoch, self.app_state(), loader_state, meta,
                                    rank=self.env.rank, world_size=self.env.world_size,
                                    storage_options=storage_options, keep=keep)

    def load(self, url: str, train_data: Any = None, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load a committed checkpoint (any world size) and, if given, the loader cursor for this rank.

        The checkpoint is validated first (:func:`~dist_ctr.train.checkpoint.validate_checkpoint`: marker, model
        name and config, tables, shards); every failure is one ``CheckpointError`` line naming ``url``.
        """
        state = self.app_state()
        shapes = {f"model.{k}": tuple(v.size()) for k, v in state["model"].items() if hasattr(v, "size")}
        meta = ckpt.validate_checkpoint(url, model=self.meta.get("model"), model_config=self.meta.get("model_config"),
                                        schema=getattr(self.model, "schema", None), shapes=shapes,
                                        storage_options=storage_options)
        ckpt.load_checkpoint(url, state, storage_options)
        with ckpt.dcp_errors(url):
            self.dmp.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optim"])
        self.global_step = int(meta["step"])
        self.epoch = int(meta["epoch"])
        self._resumed_mid_epoch = False
        if train_data is not None and hasattr(train_data, "load_state_dict") and not meta.get("epoch_done"):
            states = ckpt.load_loader_states(url, storage_options)
            if int(meta["world_size"]) == self.env.world_size and self.env.rank < len(states) and states[self.env.rank]:
                train_data.load_state_dict(states[self.env.rank])
                self._resumed_mid_epoch = True
            elif hasattr(train_data, "load_global_state") and states:
                train_data.load_global_state(states)  # resume mid-epoch on another world size
                self._resumed_mid_epoch = True
        return meta
