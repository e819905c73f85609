"""DeepCTR-Torch's ``deepctr_torch.callbacks``: ``EarlyStopping``, ``ModelCheckpoint``, ``History`` (Keras-style).

Callbacks see the compat model (``self.model``) and Keras-style hooks: ``on_train_begin(logs)``,
``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)``. ``logs`` holds ``loss``,
the compiled metrics and their ``val_`` versions. Setting ``model.stop_training = True`` sets the engine's
``trainer.stop_training``: training ends after the current epoch.

Monitoring: with ``mode="auto"`` a monitor containing ``auc`` or ``acc`` is maximised, anything else minimised.
DeepCTR-Torch logs no ``val_loss``; monitor ``val_auc`` / ``val_binary_crossentropy`` / ... (a missing monitor
warns, as in Keras).

>>> h = History()
>>> h.on_train_begin()
>>> h.on_epoch_end(0, {"loss": 0.5, "auc": 0.7})
>>> h.history, h.epoch
({'loss': [0.5], 'auc': [0.7]}, [0])
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from typing import Any, Optional

__all__ = ["Callback", "EarlyStopping", "History", "ModelCheckpoint"]


class Callback:
    """Keras-style base class; ``self.model`` is the compat model once training starts."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[dict[str, float]] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[dict[str, float]] = None) -> None:
        pass


class History(Callback):
    """``history[key]`` is a list over epochs; ``epoch`` the epoch indices (Keras' ``History``)."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: Optional[dict[str, float]] = None) -> None:
        self.history = {}
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"mode {mode!r} is unknown, falling back to 'auto'", stacklevel=3)
        mode = "auto"
    if mode == "auto":
        return "max" if ("auc" in monitor or "acc" in monitor) else "min"
    return mode


class _Monitor(Callback):
    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        super().__init__()
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.min_delta = abs(min_delta) if self.mode == "max" else -abs(min_delta)
        self.best = -math.inf if self.mode == "max" else math.inf

    def _improved(self, value: float) -> bool:
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value - self.min_delta < self.best

    def _value(self, logs: Optional[dict[str, float]]) -> Optional[float]:
        v = (logs or {}).get(self.monitor)
        if v is None:
            warnings.warn(f"{type(self).__name__}: monitor {self.monitor!r} is not in the logs (available: "
                          f"{sorted(logs or {})})", RuntimeWarning, stacklevel=3)
            return None
        return float(v)


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` stops improving by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor (str): a log key, e.g. ``"val_auc"``.
        min_delta (float): smallest change that counts as an improvement.
        patience (int): epochs without improvement before stopping.
        verbose (int): print a line when stopping.
        mode (str): "auto" | "min" | "max".
        baseline (float | None): stop if the monitor does not beat it within ``patience`` epochs.
        restore_best_weights (bool): reload the best epoch's weights when stopping (via a temporary checkpoint).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: Optional[float] = None, restore_best_weights: bool = False) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.stopped_epoch = 0
        self._best_dir: Optional[str] = None

    def on_train_begin(self, logs: Optional[dict[str, float]] = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = self.baseline if self.baseline is not None else (-math.inf if self.mode == "max" else math.inf)
        if self.restore_best_weights:
            self._best_dir = tempfile.mkdtemp(prefix="dist_ctr_es_")

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        value = self._value(logs)
        if value is None:
            return
        if self._improved(value):
            self.best = value
            self.wait = 0
            if self._best_dir is not None:
                self.model.save_weights(self._best_dir)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self._best_dir is not None and self.model.has_weights(self._best_dir):
                self.model.load_weights(self._best_dir)

    def on_train_end(self, logs: Optional[dict[str, float]] = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1:05d}: early stopping")
        if self._best_dir is not None:
            shutil.rmtree(self._best_dir, ignore_errors=True)
            self._best_dir = None


class ModelCheckpoint(_Monitor):
    """Save the model after every ``period`` epochs (or only when ``monitor`` improves).

    ``filepath`` may hold format fields filled from the epoch (1-based) and the logs, e.g.
    ``"ckpt/model.{epoch:02d}-{val_auc:.4f}"``. It names a directory (any fsspec URL) holding a committed
    sharded checkpoint (``Trainer.save``; ``model.load_weights(filepath)`` restores it). The weights are
    sharded, so ``save_weights_only=False`` saves the same checkpoint (no pickled model object).

    Args:
        filepath (str): directory (template) to save to.
        monitor (str): log key for ``save_best_only``.
        verbose (int): print a line per save.
        save_best_only (bool): save only when ``monitor`` improves.
        save_weights_only (bool): accepted for compatibility.
        mode (str): "auto" | "min" | "max".
        period (int): epochs between saves.
    """

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", period: int = 1) -> None:
        super().__init__(monitor, mode)
        self.filepath = str(filepath)
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.period = period
        self.epochs_since_last_save = 0
        self.saved: list[str] = []

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, float]] = None) -> None:
        logs = logs or {}
        self.epochs_since_last_save += 1
        if self.epochs_since_last_save < self.period:
            return
        self.epochs_since_last_save = 0
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improved(value):
                if self.verbose > 0 and value is not None:
                    print(f"Epoch {epoch + 1:05d}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1:05d}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, "
                      f"saving model to {path}")
            self.best = value
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1:05d}: saving model to {path}")
        self.model.save_weights(path)
        self.saved.append(path)

