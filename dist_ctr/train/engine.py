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
``on_batch_end(trainer, step, logs)``, ``on_epoch_end(trainer, epoch, logs)``, ``on_train_end(trainer, logs)``;
setting ``trainer.stop_training = True`` ends training after the current step.
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
    ) -> None:
        if pipeline not in PIPELINES:
            raise ValueError(f"distributed.pipeline: unknown pipeline {pipeline!r}; expected one of {list(PIPELINES)}")
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
        self.dmp.train()
        batch = batch.to(self.env.device, non_blocking=True)
        loss, (loss_d, logits, _labels, _w) = self.dmp(batch)
        loss.backward()  # fused sparse optimizer updates the embeddings here
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return loss_d, logits

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
    ) -> History:
        """Train ``epochs`` epochs (resuming from ``self.epoch`` if a checkpoint was loaded).

        Per epoch the logs hold ``loss`` (mean training loss), ``samples_per_s``, and ``val_<metric>`` when
        ``eval_data`` is given. Non-finite losses stop training with an error naming the step.
        """
        history = History()
        self.stop_training = False
        show = progress and self.env.is_main
        _callback(callbacks, "on_train_begin", self)
        start_epoch = max(initial_epoch, self.epoch)
        for epoch in range(start_epoch, epochs):
            self.epoch = epoch
            if hasattr(train_data, "set_epoch") and not getattr(self, "_resumed_mid_epoch", False):
                train_data.set_epoch(epoch)  # type: ignore[attr-defined]
            self._resumed_mid_epoch = False
            _callback(callbacks, "on_epoch_begin", self, epoch)
            total = len(train_data) if hasattr(train_data, "__len__") else None  # type: ignore[arg-type]
            bar = None
            if show:
                from tqdm import tqdm

                bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=True,
                           dynamic_ncols=True, mininterval=0.5)
            loss_sum = torch.zeros((), dtype=torch.float64)
            n_steps, n_rows = 0, 0
            t0 = time.perf_counter()
            self._cursor = None
            steps = self._pipelined_steps(train_data) if self.pipeline == "sparse_dist" else self._plain_steps(train_data)
            for rows, loss in steps:
                loss_sum += loss.double().cpu()  # host sync (cheap on CPU; once per step)
                n_steps += 1
                n_rows += rows
                if log_every and self.global_step % log_every == 0:
                    lv = float(loss)  # host sync
                    if not math.isfinite(lv):
                        raise TrainingError(f"loss is {lv} at step {self.global_step} (epoch {epoch}); check labels "
                                            "and learning rates")
                    step_logs = {"step": self.global_step, "loss": lv,
                                 "samples_per_s": n_rows * self.env.world_size / max(1e-9, time.perf_counter() - t0)}
                    history.steps.append(step_logs)
                    _callback(callbacks, "on_batch_end", self, self.global_step, step_logs)
                    if bar is not None:
                        bar.set_postfix(loss=f"{lv:.4f}")
                if bar is not None:
                    bar.update(1)
                if checkpoint_root and checkpoint_every and self.global_step % checkpoint_every == 0:
                    self.save(checkpoint_root, train_data, storage_options=storage_options, keep=checkpoint_keep)
                if eval_data is not None and eval_every_steps and self.global_step % eval_every_steps == 0:
                    m = self.evaluate(eval_data)
                    history.steps.append({"step": self.global_step, **{f"val_{k}": v for k, v in m.items()}})
                if self.stop_training or (max_steps and self.global_step >= max_steps):
                    self.stop_training = True
                    break
            steps.close()  # a pipelined epoch stopped early drops its read-ahead batches (the cursor excludes them)
            elapsed = time.perf_counter() - t0
            if bar is not None:
                bar.close()
            logs: dict[str, float] = {
                "loss": float(loss_sum) / max(1, n_steps),
                "samples_per_s": n_rows * self.env.world_size / max(1e-9, elapsed),
                "steps": float(n_steps),
            }
            if not math.isfinite(logs["loss"]):
                raise TrainingError(f"mean training loss of epoch {epoch} is not finite")
            if eval_data is not None:
                for k, v in self.evaluate(eval_data).items():
                    logs[f"val_{k}"] = v
            history.add_epoch(epoch, logs)
            self.epoch = epoch + 1
            _callback(callbacks, "on_epoch_end", self, epoch, logs)
            if checkpoint_root:
                finished = not self.stop_training or (total is not None and n_steps >= total)
                if not finished:
                    self.epoch = epoch  # stopped mid-epoch (max_steps): keep the loader cursor for an exact resume
                self.save(checkpoint_root, train_data, storage_options=storage_options, keep=checkpoint_keep,
                          epoch_done=finished)
            if self.stop_training:
                break
        _callback(callbacks, "on_train_end", self, history)
        return history

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
