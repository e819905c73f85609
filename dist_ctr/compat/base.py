"""``CompatModel``: DeepCTR-Torch's Keras-like ``compile`` / ``fit`` / ``evaluate`` / ``predict`` on the engine.

Notation: ``N`` rows, ``B`` batch size, ``T`` tasks.

A compat model holds a registered :class:`~dist_ctr.models.base.CTRModel` built from the feature columns, and,
from ``compile`` on, a :class:`~dist_ctr.train.engine.Trainer`: the same ``CTRTask`` + DistributedModelParallel
+ fused sparse optimizer as every job, in one process group of world size 1 (created on first use when none
exists). ``fit`` feeds the engine's loop with batches cut from the input dict; nothing here loops over training
steps itself.

Differences from DeepCTR-Torch, by design:

- Optimizers: the embeddings get the fused counterpart of the named optimizer (FBGEMM's TBE kernels, applied in
  backward), the dense layers the torch optimizer, both at DeepCTR-Torch's default learning rates: ``"sgd"``
  (0.01), ``"adam"`` (0.001), ``"adagrad"`` (0.01). FBGEMM has no fused Adam for CPU: on CPU ``"adam"`` trains
  the embeddings with fused Adagrad (lr 0.01) and the dense layers with Adam (a warning says so). ``"rmsprop"`` has no fused kernel: the embeddings use fused
  Adagrad (lr 0.01; the adaptive, momentum-free method RMSprop derives from) and the dense layers torch's
  RMSprop (lr 0.01) when the engine offers it, else Adagrad (lr 0.01); a warning says which. ``compile`` also
  takes ``sparse_optimizer=`` (a name such as ``"rowwise_adagrad"``, the fast default of jobs, or a
  ``SparseOptimConfig``) and ``DenseOptimConfig`` objects as ``optimizer``. Optimizer instances cannot be
  passed: the embedding tables do not exist as ordinary parameters before sharding.
- Loss: the task decides it (BCE-with-logits for ``"binary"``, MSE for ``"regression"``); ``loss`` must agree.
  As in DeepCTR-Torch it is summed over the batch (``reduction='sum'``; so ``"sgd"`` at lr 0.01 takes the steps
  a DeepCTR-Torch program expects), with the L2 terms added to that sum; ``compile(loss_reduction="mean")``
  gives the engine's per-row mean instead. ``history["loss"]`` is the per-row training loss (the summed loss over
  the rows, regularisation included), as DeepCTR-Torch logs it.
- Training metrics are exact metrics over the epoch's training predictions (each row scored by the model at the
  step that trained on it, dropout on, as DeepCTR-Torch does), not DeepCTR-Torch's mean of per-batch values.
  Validation metrics come from the engine's exact ``evaluate`` (AUC / logloss / MSE over the whole validation
  set); a metric it does not report (``accuracy``, ``mse`` of a binary task) is computed from one prediction
  pass with the same exact formulas. With several tasks, ``<metric>`` is the mean over tasks and
  ``<task_name>_<metric>`` each task's value.
- ``device="cuda:N"`` trains on that GPU (an error when CUDA is absent). ``gpus`` is accepted (``gpus[0]``
  must be ``device``, as in DeepCTR-Torch) but this facade runs one process on one device: multi-GPU training
  goes through the real distributed path (a job run by ``dist-ctr train`` with ``distributed.world_size``,
  one process per GPU under Ray / torchrun), never DataParallel; a warning says so when ``gpus`` lists several.
- Weights are saved as sharded checkpoints (``save_weights`` / ``load_weights``, a directory on any fsspec URL)
  through ``Trainer.save`` / ``Trainer.load``; ``ModelCheckpoint`` uses them.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from dist_ctr.compat.callbacks import Callback, History
from dist_ctr.compat.carried import copy_splitting_carried
from dist_ctr.compat.data import BatchStream, PreparedData, prepare
from dist_ctr.compat.metrics import ENGINE_KEY, METRICS, metric_value
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.distributed.model_parallel import ELEMENTWISE_SPARSE
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse.init import table_inits
from dist_ctr.train import checkpoint as ckpt
from dist_ctr.train.engine import Trainer

# name -> (dense config, fused sparse config), DeepCTR-Torch's default learning rates and torch's default eps
# (torch.optim.Adagrad: 1e-10; torch.optim.Adam: 1e-8), which its compile(name) uses for every parameter.
ADAGRAD_EPS = 1e-10
OPTIMIZERS: dict[str, tuple[DenseOptimConfig, SparseOptimConfig]] = {
    "sgd": (DenseOptimConfig("sgd", lr=0.01), SparseOptimConfig("sgd", lr=0.01)),
    "adam": (DenseOptimConfig("adam", lr=1e-3), SparseOptimConfig("adam", lr=1e-3, eps=1e-8)),
    "adagrad": (DenseOptimConfig("adagrad", lr=0.01), SparseOptimConfig("adagrad", lr=0.01, eps=ADAGRAD_EPS)),
    "rmsprop": (DenseOptimConfig("rmsprop", lr=0.01),  # type: ignore[arg-type]
                SparseOptimConfig("adagrad", lr=0.01, eps=ADAGRAD_EPS)),
}
# FBGEMM's CPU kernels offer exact / row-wise Adagrad and SGD only: "adam" on CPU trains the embeddings with this.
CPU_ADAM_FALLBACK = SparseOptimConfig("adagrad", lr=0.01, eps=ADAGRAD_EPS)
LOSSES = {"binary_crossentropy": "binary", "mse": "regression"}
def _dense_supports(name: str) -> bool:
    """Whether the engine's dense optimizer factory knows ``name`` (probed on a dummy parameter)."""
    from dist_ctr.distributed.optim import dense_optimizer

    try:
        dense_optimizer([("probe", torch.nn.Parameter(torch.zeros(1)))], DenseOptimConfig(name, lr=0.01))  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def make_env(device: str | torch.device) -> DistEnv:
    """World size 1 on ``device``; creates the process group when none exists."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device={str(device)!r} was requested but CUDA is not available; use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"device={str(device)!r}: expected 'cpu' or 'cuda[:N]'")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() != 1:
        raise NotImplementedError(
            f"the compat facade trains in one process, but a process group of world size {dist.get_world_size()} "
            "exists; for multi-process training use the job path (dist-ctr train)")
    env = DistEnv(0, 1, 1, dev)
    init_process_group(env)
    return env


class _EngineBridge:
    """Engine callback: collects training predictions, turns engine logs into DeepCTR logs, runs Keras callbacks."""

    def __init__(self, model: "CompatModel", callbacks: Sequence[Callback], epochs: int, verbose: int,
                 val: Optional[PreparedData], batch_size: int) -> None:
        self.model, self.callbacks, self.epochs, self.verbose = model, list(callbacks), epochs, verbose
        self.val, self.batch_size = val, batch_size
        self.t0 = 0.0

    def on_train_begin(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_begin({})

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.t0 = time.time()
        self.model._train_rows = []
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})

    def on_epoch_end(self, trainer: Trainer, epoch: int, engine_logs: dict[str, float]) -> None:
        m = self.model
        logs: dict[str, float] = {"loss": float(engine_logs["loss"])}
        if m._train_rows:
            preds = torch.cat([p for p, _ in m._train_rows]).double().cpu().numpy()  # (N, T) host sync
            labels = torch.cat([y for _, y in m._train_rows]).double().cpu().numpy()
            logs.update(m._metrics_from_preds(preds, labels))
        m._train_rows = []
        if self.val is not None:
            engine_val = {k[len("val_"):]: v for k, v in engine_logs.items() if k.startswith("val_")}
            val = m._metrics_from_engine(engine_val, self.val, self.batch_size)
            logs.update({"val_" + k: v for k, v in val.items()})
        if self.verbose > 0:
            line = f"{int(time.time() - self.t0)}s - loss: {logs['loss']: .4f}"
            for k, v in logs.items():
                if k != "loss":
                    line += f" - {k}: {v: .4f}"
            print(f"Epoch {epoch + 1}/{self.epochs}")
            print(line)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self, trainer: Trainer, history: Any) -> None:
        for cb in self.callbacks:
            cb.on_train_end({})


class CompatModel:
    """A registered model behind DeepCTR-Torch's Keras-like API (subclassed per model in ``compat.models``).

    Args:
        model_name (str): registry name.
        schema (FeatureSchema): features (from the column arguments) and labels (one per task).
        config: the model's typed config.
        feature_columns (list): every column argument's columns (for ``get_feature_names`` order).
        seed (int): dense init (``torch.manual_seed``) and embedding init seed.
        device (str): "cpu" or "cuda[:N]".
        gpus (list | None): accepted for compatibility (see the module docstring).
    """

    def __init__(self, model_name: str, schema: FeatureSchema, config: Any, feature_columns: Sequence[Any],
                 seed: int = 1024, device: str = "cpu", gpus: Optional[Sequence[Any]] = None) -> None:
        from dist_ctr.compat.inputs import get_feature_names
        from dist_ctr.models import build_model

        if gpus:
            if str(gpus[0]) not in str(device):
                raise ValueError(f"gpus[0] ({gpus[0]!r}) should be the same GPU as device ({device!r})")
            if len(gpus) > 1:
                warnings.warn(f"gpus={list(gpus)}: the compat facade trains one process on {device}; multi-GPU "
                              "training runs through the distributed path (dist-ctr train with "
                              "distributed.world_size), not DataParallel", UserWarning, stacklevel=3)
        self.model_name = model_name
        self.schema = schema
        self.config = config
        self.feature_columns = list(feature_columns)
        self.feature_names = get_feature_names(self.feature_columns)
        self.seed = int(seed)
        self.device = str(device)
        self.gpus = gpus
        self.task_types = tuple(schema.task_types)
        self.task_names = tuple(schema.label_names)
        torch.manual_seed(self.seed)
        self.model = build_model(model_name, schema, config)  # embeddings on meta until the Trainer shards them
        self.trainer: Optional[Trainer] = None
        self.history = History()
        self.metrics: list[str] = []
        self.metrics_names: list[str] = ["loss"]
        self._optim: Optional[tuple[DenseOptimConfig, SparseOptimConfig]] = None
        self.loss_reduction = "sum"  # DeepCTR-Torch's; compile(loss_reduction=...) sets it
        self.precision = "fp32"  # compile(precision=...) sets it
        self._train_rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._collect = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(compat of {self.model_name!r}, tasks={list(zip(self.task_names, self.task_types))})"

    # ---- compile ------------------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "adam", loss: Any = None, metrics: Optional[Sequence[str]] = None,
                sparse_optimizer: str | SparseOptimConfig | None = None, loss_reduction: str = "sum",
                precision: str = "fp32") -> None:
        """Choose optimizers, check the loss against the tasks, set the metrics; builds the sharded trainer.

        Args:
            optimizer (str | DenseOptimConfig): "sgd" | "adam" | "adagrad" | "rmsprop" (see the module docstring).
            loss (str | list[str] | None): "binary_crossentropy" / "mse" per task; must match the task types.
            metrics (list[str] | None): of ``METRICS``.
            sparse_optimizer (str | SparseOptimConfig | None): override the fused embedding optimizer.
            loss_reduction (str): ``"sum"`` over the batch (DeepCTR-Torch's) or ``"mean"`` (the engine's).
            precision (str): ``"fp32"`` or ``"bf16"`` (autocast of the forward, fp32 weights; see
                :class:`~dist_ctr.train.engine.Trainer`).
        """
        if loss_reduction not in ("sum", "mean"):
            raise ValueError(f"loss_reduction must be 'sum' (DeepCTR-Torch's) or 'mean', got {loss_reduction!r}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.loss_reduction, self.precision = loss_reduction, precision
        dense, sparse = self._optimizers(optimizer, sparse_optimizer)
        self._check_loss(loss)
        bad = [m for m in (metrics or []) if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; expected some of {list(METRICS)}")
        self.metrics = list(metrics or [])
        self.metrics_names = ["loss", *self.metrics]
        self._build_trainer(dense, sparse)

    def _optimizers(self, optimizer: Any, sparse_optimizer: Any) -> tuple[DenseOptimConfig, SparseOptimConfig]:
        if isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("compile(optimizer=<torch optimizer>) is not supported: embedding tables are sharded and "
                            "updated by fused kernels; pass a name ('sgd', 'adam', 'adagrad', 'rmsprop') or a "
                            "dist_ctr.config.DenseOptimConfig (and sparse_optimizer=...)")
        if isinstance(optimizer, DenseOptimConfig):
            dense, sparse = optimizer, OPTIMIZERS.get(optimizer.name, OPTIMIZERS["adam"])[1]
        elif isinstance(optimizer, str):
            if optimizer not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
            dense, sparse = OPTIMIZERS[optimizer]
            if optimizer == "rmsprop":
                if _dense_supports("rmsprop"):
                    note = "dense layers: RMSprop (lr 0.01)"
                else:
                    dense, note = DenseOptimConfig("adagrad", lr=0.01), "dense layers: Adagrad (lr 0.01)"
                warnings.warn(f"optimizer 'rmsprop': embeddings use fused Adagrad (lr 0.01, no fused RMSprop "
                              f"exists); {note}", UserWarning, stacklevel=3)
        else:
            raise TypeError(f"optimizer must be a name or a DenseOptimConfig, got {type(optimizer).__name__}")
        on_cpu = torch.device(self.device).type == "cpu"
        if sparse_optimizer is None:
            if on_cpu and sparse.name == "adam":
                sparse = CPU_ADAM_FALLBACK
                warnings.warn("optimizer 'adam' on CPU: FBGEMM has no fused Adam kernel for CPU, so the embeddings "
                              "use fused Adagrad (lr 0.01); the dense layers use Adam (lr 0.001)", UserWarning,
                              stacklevel=3)
            return dense, sparse
        if isinstance(sparse_optimizer, SparseOptimConfig):
            sparse = sparse_optimizer
        elif isinstance(sparse_optimizer, str):
            sparse = dataclasses.replace(sparse, name=sparse_optimizer)  # type: ignore[arg-type]
        else:
            raise TypeError(f"sparse_optimizer must be a name or a SparseOptimConfig, got {type(sparse_optimizer).__name__}")
        from dist_ctr.distributed.optim import sparse_optimizer_spec

        sparse_optimizer_spec(sparse)  # unknown names raise here, naming them
        if on_cpu and sparse.name == "adam":
            raise ValueError("sparse_optimizer 'adam': FBGEMM has no fused Adam kernel for CPU; use 'adagrad', "
                             "'rowwise_adagrad' or 'sgd' (or device='cuda')")
        return dense, sparse

    def _check_loss(self, loss: Any) -> None:
        if loss is None:
            return
        if callable(loss) and not isinstance(loss, str):
            raise TypeError("custom loss functions are not supported: the loss follows the task "
                            "('binary' -> binary_crossentropy, 'regression' -> mse)")
        losses = [loss] * len(self.task_types) if isinstance(loss, str) else list(loss)
        if len(losses) != len(self.task_types):
            raise ValueError(f"{len(losses)} losses given for {len(self.task_types)} tasks {list(self.task_names)}")
        for name, lv, task in zip(self.task_names, losses, self.task_types):
            if lv not in LOSSES:
                raise ValueError(f"unknown loss {lv!r}; expected one of {sorted(LOSSES)}")
            if LOSSES[lv] != task:
                raise ValueError(f"loss {lv!r} does not fit task {name!r} of type {task!r} (binary tasks train with "
                                 "binary_crossentropy, regression tasks with mse)")

    def _build_trainer(self, dense: DenseOptimConfig, sparse: SparseOptimConfig) -> None:
        from dist_ctr.models import build_model

        env = make_env(self.device)
        old = self.trainer
        carried = getattr(self.config, "linear_in_embedding_tables", None)
        if old is None and carried is False and sparse.name in ELEMENTWISE_SPARSE:
            # One lookup per id: the linear weights ride in the embedding rows (same model and arithmetic under an
            # element-wise sparse optimizer; see dist_ctr.sparse.SparseArch). The tables are still on meta.
            self.config = dataclasses.replace(self.config, linear_in_embedding_tables=True)
            torch.manual_seed(self.seed)
            self.model = build_model(self.model_name, self.schema, self.config)
        split = old is not None and bool(carried) and sparse.name not in ELEMENTWISE_SPARSE
        if split:  # a row-wise optimizer keeps state per row: the linear weights go back to tables of their own
            tails = {n: i.tail for n, i in table_inits(build_model(self.model_name, self.schema, self.config)).items()
                     if i.tail is not None}
            self.config = dataclasses.replace(self.config, linear_in_embedding_tables=False)
        if old is not None:  # re-compile: the embeddings were sharded in place, so rebuild and carry the weights
            torch.manual_seed(self.seed)
            self.model = build_model(self.model_name, self.schema, self.config)
        trainer = Trainer(self.model, env, task_types=self.task_types, sparse_optim=sparse, dense_optim=dense,
                          batch_size=256, seed=self.seed, task_names=self.task_names,
                          loss_reduction=self.loss_reduction, precision=self.precision)
        if split:
            copy_splitting_carried(old.dmp, trainer.dmp, tails)  # type: ignore[union-attr]
        elif old is not None:
            with tempfile.TemporaryDirectory(prefix="dist_ctr_recompile_") as tmp:
                ckpt.save_checkpoint(tmp, 0, 0, {"model": old.dmp.state_dict()}, None, {})
                state = {"model": trainer.dmp.state_dict()}
                ckpt.load_checkpoint(f"{tmp}/step_00000000", state)
                trainer.dmp.load_state_dict(state["model"])
        trainer.task.register_forward_hook(self._on_task_forward)
        self.trainer, self._optim = trainer, (dense, sparse)

    def _on_task_forward(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        """Keep the training predictions of the epoch (for DeepCTR-style training metrics)."""
        if not (self._collect and self.metrics and module.training):  # training metrics need the predictions
            return
        _loss, (_l, logits, labels, weights) = output
        keep = weights > 0  # (B,) boolean mask: a host sync on CUDA
        preds = self.trainer.task.predict_proba(logits)  # type: ignore[union-attr]
        self._train_rows.append((preds[keep].detach(), labels[keep].detach()))  # on the device until the epoch ends

    def _require_trainer(self, what: str) -> Trainer:
        if self.trainer is None:
            raise RuntimeError(f"{what}: call model.compile(optimizer, loss, metrics) first")
        return self.trainer

    def _ensure_trainer(self) -> Trainer:
        """``predict`` / weights on an uncompiled model (DeepCTR-Torch allows it): Adam defaults, no metrics."""
        if self.trainer is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._build_trainer(*self._optimizers("adam", None))
        return self.trainer  # type: ignore[return-value]

    # ---- data ---------------------------------------------------------------------------------------------
    def _prepare(self, x: Any, y: Any = None) -> PreparedData:
        return prepare(self.schema, x, y, feature_names=self.feature_names, label_names=self.task_names)

    # ---- metrics ------------------------------------------------------------------------------------------
    def _metrics_from_preds(self, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Compiled metrics of predictions / labels ``(N, T)``."""
        out: dict[str, float] = {}
        T = len(self.task_types)
        for name in self.metrics:
            vals = [metric_value(name, preds[:, t], labels[:, t]) for t in range(T)]
            out[name] = float(np.mean(vals))
            if T > 1:
                for t, v in enumerate(vals):
                    out[f"{self.task_names[t]}_{name}"] = v
        return out

    def _metrics_from_engine(self, engine: Mapping[str, float], data: PreparedData, batch_size: int) -> dict[str, float]:
        """Compiled metrics from the engine's ``evaluate`` dict; the rest from one prediction pass."""
        T = len(self.task_types)
        out: dict[str, float] = {}
        preds: Optional[np.ndarray] = None
        for name in self.metrics:
            vals = []
            for t, task in enumerate(self.task_types):
                key = ENGINE_KEY.get((task, name))
                ekey = (key if T == 1 else f"{self.task_names[t]}/{key}") if key else None
                if ekey is not None and ekey in engine:
                    vals.append(float(engine[ekey]))
                    continue
                if preds is None:
                    preds = self._predict_prepared(data, batch_size)
                vals.append(metric_value(name, preds[:, t], data.labels[:, t]))  # type: ignore[index]
            out[name] = float(np.mean(vals))
            if T > 1:
                for t, v in enumerate(vals):
                    out[f"{self.task_names[t]}_{name}"] = v
        return out

    # ---- Keras-like API -----------------------------------------------------------------------------------
    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1, verbose: int = 1,
            initial_epoch: int = 0, validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            callbacks: Optional[Sequence[Callback]] = None) -> History:
        """Train through the engine. Returns the :class:`History` (also ``model.history``).

        Args:
            x (dict | list): column name -> values (see :mod:`dist_ctr.compat.data`).
            y: labels ``(N,)`` or ``(N, T)``.
            batch_size (int | None): rows per step (default 256).
            epochs (int): index of the last epoch (Keras: trains epochs ``initial_epoch .. epochs - 1``).
            verbose (int): 0 silent, 1 progress bar + epoch lines, 2 epoch lines.
            initial_epoch (int): first epoch index.
            validation_split (float): the LAST fraction of the rows is held out for validation (Keras).
            validation_data (tuple | None): ``(x_val, y_val)``; wins over ``validation_split``.
            shuffle (bool): a new seeded permutation of the training rows every epoch.
            callbacks (list[Callback] | None): Keras-style callbacks (``dist_ctr.compat.callbacks``).
        """
        trainer = self._require_trainer("fit")
        if y is None:
            raise ValueError("fit needs labels y")
        batch_size = 256 if batch_size is None else int(batch_size)
        data = self._prepare(x, y)
        val: Optional[PreparedData] = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val)")
            if len(validation_data) == 3 and validation_data[2] is not None:
                raise NotImplementedError("validation sample weights are not supported")
            val = self._prepare(validation_data[0], validation_data[1])
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split must lie in (0, 1), got {validation_split}")
            split_at = int(data.n_rows * (1.0 - validation_split))
            val = data.subset(np.arange(split_at, data.n_rows))
            data = data.subset(np.arange(split_at))
        if data.n_rows == 0:
            raise ValueError("no training rows (empty x, or validation_split took them all)")
        stream = BatchStream(data, batch_size, shuffle=shuffle, seed=self.seed)
        val_stream = BatchStream(val, batch_size) if val is not None and val.n_rows else None
        if val_stream is None:
            val = None
        self.history = History()
        cbs = [*(callbacks or []), self.history]
        params = {"batch_size": batch_size, "epochs": epochs, "steps": len(stream), "samples": data.n_rows,
                  "verbose": verbose, "metrics": self.metrics_names}
        for cb in cbs:
            cb.set_model(self)
            cb.set_params(params)
        if verbose > 0:
            print(f"Train on {data.n_rows} samples, validate on {val.n_rows if val is not None else 0} samples, "
                  f"{len(stream)} steps per epoch")
        bridge = _EngineBridge(self, cbs, epochs, verbose, val, batch_size)
        trainer.epoch = 0  # Keras: every fit() call runs epochs initial_epoch .. epochs - 1
        self._collect = True
        try:
            trainer.fit(stream, epochs=epochs, eval_data=val_stream, callbacks=[bridge], progress=verbose == 1,
                        initial_epoch=initial_epoch, log_every=10)
        finally:
            self._collect = False
            self._train_rows = []
        return self.history

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> dict[str, float]:
        """Compiled metrics on ``(x, y)``: the engine's exact ``evaluate`` (one pass; accuracy etc. one more)."""
        trainer = self._require_trainer("evaluate")
        data = self._prepare(x, y)
        engine = trainer.evaluate(BatchStream(data, batch_size))
        return self._metrics_from_engine(engine, data, batch_size)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Predictions ``(N, T)`` float64: probabilities for binary tasks, values for regression."""
        self._ensure_trainer()
        return self._predict_prepared(self._prepare(x), batch_size)

    def _predict_prepared(self, data: PreparedData, batch_size: int) -> np.ndarray:
        out = self._ensure_trainer().predict(BatchStream(data, batch_size))
        return out.double().numpy()  # (N, T)

    # ---- state --------------------------------------------------------------------------------------------
    @property
    def stop_training(self) -> bool:
        return bool(self.trainer.stop_training) if self.trainer is not None else False

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        if self.trainer is not None:
            self.trainer.stop_training = bool(value)

    def save_weights(self, filepath: str) -> str:
        """Committed sharded checkpoint of weights and optimizer state under directory ``filepath``
        (earlier ones there are replaced). Returns the checkpoint URL."""
        return self._ensure_trainer().save(str(filepath), keep=1)

    @staticmethod
    def has_weights(filepath: str) -> bool:
        return ckpt.latest_checkpoint(str(filepath)) is not None

    def load_weights(self, filepath: str) -> None:
        """Restore what :meth:`save_weights` (or ``ModelCheckpoint``) wrote at ``filepath``, validated first (one
        ``CheckpointError`` line); torn newer checkpoints there are passed over with a warning naming each."""
        self._ensure_trainer().load(ckpt.newest_good_or(str(filepath), "load_weights"))

    def state_dict(self) -> dict[str, Any]:
        """The sharded model's state dict (DMP keys; ``ShardedTensor`` embeddings)."""
        return self._ensure_trainer().dmp.state_dict()
