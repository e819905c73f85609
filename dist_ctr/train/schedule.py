"""When ``Trainer.fit`` logs, checkpoints and evaluates: small objects that answer ``due(step, epoch_end)``.

``step`` is the trainer's global step right after a trained batch (1 for the first batch of a fresh run); at the
end of an epoch ``fit`` asks again with ``epoch_end=True``. The schedules only decide; the engine does the work.

>>> EveryNSteps(3).due(6), EveryNSteps(3).due(7), EveryNSteps(0).due(6)
(True, False, False)
>>> ck = CheckpointSchedule(root="ck", every_steps=4)
>>> ck.due(8), ck.due(9), ck.due(9, epoch_end=True), CheckpointSchedule(every_steps=4).due(8)
(True, False, True, False)
>>> ev = EvalSchedule(every_steps=5, at_epoch_end=False)
>>> ev.due(10), ev.due(11), ev.due(11, epoch_end=True)
(True, False, False)
>>> TargetStop("auc", 0.8).reached({"auc": 0.81}), TargetStop("logloss", 0.45).reached({"logloss": 0.46})
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class EveryNSteps:
    """Due at steps ``n, 2n, ...``; never when ``n`` is 0. The epoch end is not a reason on its own.

    Args:
        n (int): the period in global steps (``0``: never).
    """

    n: int = 0

    def due(self, step: int, epoch_end: bool = False) -> bool:
        """True when ``step`` is a positive multiple of ``n``."""
        return bool(self.n) and step % self.n == 0


@dataclass(frozen=True)
class CheckpointSchedule:
    """Checkpoints of one ``fit``: every ``every_steps`` steps and at every epoch end, only with a ``root``.

    Args:
        root (str | None): the checkpoint root (``None`` or ``""``: no checkpoints at all).
        every_steps (int): mid-epoch period in global steps (``0``: epoch ends only).
    """

    root: Optional[str] = None
    every_steps: int = 0

    def due(self, step: int, epoch_end: bool = False) -> bool:
        """True when ``fit`` saves now: at an epoch end, or at a step multiple of ``every_steps``."""
        if not self.root:
            return False
        return epoch_end or EveryNSteps(self.every_steps).due(step)


@dataclass(frozen=True)
class EvalSchedule:
    """Evaluations of one ``fit``: every ``every_steps`` steps and/or at every epoch end.

    Args:
        every_steps (int): mid-epoch period in global steps (``0``: none).
        at_epoch_end (bool): evaluate after each epoch (the epoch's logs get ``val_<metric>``).
    """

    every_steps: int = 0
    at_epoch_end: bool = True

    @classmethod
    def for_data(cls, eval_data: object, every_steps: int = 0, at_epoch_end: bool = True) -> "EvalSchedule":
        """The schedule ``fit`` follows: never due without ``eval_data``.

        >>> EvalSchedule.for_data(None, every_steps=2).due(2, epoch_end=True)
        False
        """
        if eval_data is None:
            return cls(every_steps=0, at_epoch_end=False)
        return cls(every_steps=every_steps, at_epoch_end=at_epoch_end)

    def due(self, step: int, epoch_end: bool = False) -> bool:
        """True when ``fit`` evaluates now."""
        if epoch_end:
            return self.at_epoch_end
        return EveryNSteps(self.every_steps).due(step)


_LOWER_IS_BETTER = ("logloss", "mse", "loss")


@dataclass
class TargetStop:
    """Engine callback: ``on_evaluate`` ends training (``trainer.stop_training``) at the first evaluation whose
    ``metric`` reaches ``value`` (``>=``, or ``<=`` for a loss). Every rank sees the same reduced metrics, so every
    rank stops after the same step.

    Args:
        metric (str): a key of the evaluation's metrics (``auc``, ``logloss``, ``<task>/auc``).
        value (float): the target.
        announce (bool): print one line when the target is reached (rank 0).
    """

    metric: str
    value: float
    announce: bool = False
    reached_at: Optional[int] = None

    def reached(self, metrics: dict[str, Any]) -> bool:
        """Whether ``metrics`` meet the target; a missing metric is a config error naming what exists."""
        if self.metric not in metrics:
            from dist_ctr.strict import ConfigError

            raise ConfigError(f"train.stop_at.metric: {self.metric!r} is not an evaluation metric (have: "
                              f"{sorted(metrics)})")
        v = float(metrics[self.metric])
        lower = self.metric.rsplit("/", 1)[-1] in _LOWER_IS_BETTER
        return v <= self.value if lower else v >= self.value

    def on_evaluate(self, trainer: Any, step: int, metrics: dict[str, Any]) -> None:
        if self.reached_at is None and self.reached(metrics):
            self.reached_at = step
            trainer.stop_training = True
            if self.announce:
                print(f"[train] stop_at: {self.metric} {float(metrics[self.metric]):.5f} reached the target "
                      f"{self.value} at step {step}", flush=True)
