"""Typed retraining pipeline configuration: a job (``dist_ctr.config.JobConfig`` sections) plus a strict
``retrain:`` section. Unknown keys are errors naming the key path.

>>> from dist_ctr.strict import from_dict
>>> r = from_dict(RetrainSection, {"data_root": "s3://lake/clicks", "registry": "s3://models",
...                                "model_name": "ctr", "window": {"mode": "last_n", "last_n": 3}}, "retrain")
>>> r.window.last_n, r.eval_partition, r.warm_start
(3, 'newest_complete', 'parent')
>>> from_dict(RetrainSection, {"data_root": "x", "registry": "y", "model_name": "m", "gate": {"min_aucc": 0.5}},
...           "retrain")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dist_ctr.strict.ConfigError: retrain.gate: unknown key 'min_aucc' (allowed: min_auc, max_auc_drop, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from dist_ctr.config import (DataSection, DistributedSection, JobConfig, ModelSection, OptimSection, SchemaSection,
                             TrainSection, _apply_overrides)
from dist_ctr.strict import ConfigError, from_dict, ranged

__all__ = ["GateSection", "PipelineConfig", "RetrainSection", "WindowSection", "load_pipeline"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class WindowSection:
    """``since_parent``: the complete partitions after the newest version's window; ``last_n``: the last N."""

    mode: Literal["since_parent", "last_n"] = "since_parent"
    last_n: int = ranged(1, ge=1)


@dataclass
class GateSection:
    """Thresholds of the eval gate (``dist_ctr.pipeline.gate.GateConfig``); an unset rule is not checked."""

    min_auc: Optional[float] = None
    max_auc_drop: Optional[float] = None
    max_logloss_rise: Optional[float] = None
    calibration_range: Optional[tuple[float, float]] = None
    tasks: Optional[list[str]] = None

    def __post_init__(self) -> None:
        if self.calibration_range is not None and not self.calibration_range[0] < self.calibration_range[1]:
            raise ConfigError(f"calibration_range: expected [low, high] with low < high, got "
                              f"{list(self.calibration_range)}")


@dataclass
class SynthDaysSection:
    """Drifting synthetic daily partitions written under ``data_root`` when absent (``dist_ctr.data.drift``)."""

    days: list[str] = field(default_factory=list)
    rows_per_day: int = ranged(4000, ge=1)
    seed: int = ranged(0, ge=0)
    shuffle_labels_on: list[str] = field(default_factory=list)


@dataclass
class RetrainSection:
    """Where the data and the registry are, and the run's policies (see the module docstring)."""

    data_root: str
    registry: str
    model_name: str
    partition_key: str = "date"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    registry_storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    window: WindowSection = field(default_factory=WindowSection)
    catch_up: Literal["in_order", "one_window"] = "in_order"
    eval_partition: str = "newest_complete"
    gate: GateSection = field(default_factory=GateSection)
    warm_start: Literal["parent", "none"] = "parent"
    on_schema_change: Literal["error", "cold_start"] = "error"
    work_dir: str = "runs/retrain"
    lease_ttl_s: int = ranged(3600, ge=1)
    synth: Optional[SynthDaysSection] = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.model_name):
            raise ConfigError(f"model_name: letters, digits, '_', '-', '.' only (a registry path segment), got "
                              f"{self.model_name!r}")


@dataclass
class PipelineConfig:
    """A job (the sections of :class:`~dist_ctr.config.JobConfig`) plus ``retrain``."""

    name: str
    schema: SchemaSection
    retrain: RetrainSection
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    seed: int = ranged(0, ge=0)
    output_dir: str = "runs"

    def job(self) -> JobConfig:
        """The job part (``retrain`` left out)."""
        return JobConfig(name=self.name, schema=self.schema, data=self.data, model=self.model, optim=self.optim,
                         train=self.train, distributed=self.distributed, seed=self.seed, output_dir=self.output_dir)


def _dates_as_text(raw: Any) -> Any:
    """YAML reads ``2026-11-05`` as a date; partition values are text (``'2026-11-05'``)."""
    import datetime

    if isinstance(raw, dict):
        return {k: _dates_as_text(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_dates_as_text(v) for v in raw]
    return raw.isoformat() if isinstance(raw, datetime.date) else raw


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a pipeline file; errors name the file and the key path."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"pipeline file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: cannot parse YAML: {e}") from None
    if overrides:
        raw = _apply_overrides(raw or {}, overrides)
    try:
        cfg = from_dict(PipelineConfig, _dates_as_text(raw))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    if cfg.schema.path and not Path(cfg.schema.path).is_absolute():
        sp = Path(cfg.schema.path)
        cfg.schema.path = str(sp.resolve() if sp.exists() else (p.parent / sp).resolve())
    return cfg
