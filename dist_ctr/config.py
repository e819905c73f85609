"""Typed job configuration: ``jobs/*.yaml`` -> :class:`JobConfig` (strict: unknown keys are errors).

A job names its schema (a preset or a file), its data (URLs, plus an optional synthetic data set to generate
when absent), a registered model with its typed config, optimizers, the training loop, and where it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from dist_ctr.strict import ConfigError, from_dict, ranged


@dataclass
class SchemaSection:
    """Exactly one of ``preset`` (with ``preset_args``) or ``path``."""

    preset: Optional[str] = None
    preset_args: dict[str, Any] = field(default_factory=dict)
    path: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.preset is None) == (self.path is None):
            raise ConfigError("schema: give exactly one of 'preset' or 'path'")


@dataclass
class SynthSection:
    """A synthetic data set generated under ``out`` before training when it does not exist yet, with the job's
    schema (``schema.preset`` / ``schema.path``) and a planted signal drawn from ``seed``."""

    out: str = "runs/data/demo"
    rows: int = ranged(200_000, ge=1)
    eval_rows: int = ranged(50_000, ge=0)
    shards: int = ranged(4, ge=1)
    row_group_rows: int = ranged(16_384, ge=1)
    seed: int = ranged(7, ge=0)


@dataclass
class DataSection:
    """``train`` / ``eval`` are loader configs (see ``dist_ctr.data.config.DataConfig``); with ``synth`` set and
    no URL given, they default to the generated ``<out>/train`` and ``<out>/eval``."""

    train: dict[str, Any] = field(default_factory=dict)
    eval: Optional[dict[str, Any]] = None
    synth: Optional[SynthSection] = None


@dataclass
class ModelSection:
    name: str = "DCNMix"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class SparseOptimConfig:
    """Fused embedding optimizer applied in backward (FBGEMM TBE under DMP)."""

    name: Literal["rowwise_adagrad", "adagrad", "adam", "sgd"] = "rowwise_adagrad"
    lr: float = ranged(0.05, gt=0)
    eps: float = ranged(1e-8, gt=0)
    weight_decay: float = ranged(0.0, ge=0)


@dataclass
class DenseOptimConfig:
    name: Literal["adam", "adagrad", "sgd", "adamw", "rmsprop"] = "adam"
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.0, ge=0)


@dataclass
class OptimSection:
    sparse: SparseOptimConfig = field(default_factory=SparseOptimConfig)
    dense: DenseOptimConfig = field(default_factory=DenseOptimConfig)


@dataclass
class CheckpointSection:
    dir: Optional[str] = None
    every_steps: int = ranged(0, ge=0)
    keep: int = ranged(2, ge=0)
    resume: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StopAtSection:
    """End training at the first evaluation whose ``metric`` reaches ``value`` (MLPerf's time to target):
    ``>= value`` for AUCs, ``<= value`` for losses (``logloss``, ``mse``, ``loss``). ``metric`` is a key of the
    evaluation's metrics: ``auc``, ``logloss``, or ``<task>/auc`` for a multi-task model."""

    value: float
    metric: str = "auc"


@dataclass
class TrainSection:
    epochs: int = ranged(1, ge=1)
    max_steps: int = ranged(0, ge=0)
    log_every: int = ranged(50, ge=0)
    eval_every_steps: int = ranged(0, ge=0)
    progress: bool = True
    baseline: bool = False
    eval_train: bool = False
    loss_reduction: Literal["mean", "sum"] = "mean"
    precision: Literal["fp32", "bf16"] = "fp32"
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    stop_at: Optional[StopAtSection] = None

    def __post_init__(self) -> None:
        if self.stop_at is not None and not self.eval_every_steps:
            raise ConfigError("stop_at: needs eval_every_steps > 0 (the evaluations that check the target)")


@dataclass
class RaySection:
    address: Optional[str] = None
    num_workers: int = ranged(2, ge=1)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    storage_path: Optional[str] = None
    max_failures: int = ranged(0, ge=-1)
    report_every: int = ranged(50, ge=0)


@dataclass
class DistributedSection:
    world_size: int = ranged(1, ge=1)
    launcher: Literal["local", "spawn", "ray"] = "local"
    sharding: dict[str, Any] = field(default_factory=dict)
    pipeline: Literal["auto", "sparse_dist", "none"] = "auto"
    sync_batchnorm: bool = True
    ray: RaySection = field(default_factory=RaySection)


@dataclass
class JobConfig:
    name: str
    schema: SchemaSection
    data: DataSection
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    seed: int = ranged(0, ge=0)
    output_dir: str = "runs"


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Read and validate a job file; errors name the file and the key path."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"job file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: cannot parse YAML: {e}") from None
    if overrides:
        raw = _apply_overrides(raw, overrides)
    try:
        job = from_dict(JobConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    from dist_ctr.models.registry import ModelConfigError, make_config

    try:
        make_config(job.model.name, job.model.config, "model.config")  # a bad model key fails here, with its path
    except ModelConfigError as e:
        raise ModelConfigError(f"{p}: {e}") from None
    if job.schema.path and not Path(job.schema.path).is_absolute():
        # absolute either way: Ray Train workers do not share the driver's working directory
        job.schema.path = str((p.parent / job.schema.path).resolve()) if not Path(job.schema.path).exists() \
            else str(Path(job.schema.path).resolve())
    return job


def _apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 2}`` -> nested update (keys are still validated by the strict loader)."""
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for k in parts[:-1]:
            node = node.setdefault(k, {})
        node[parts[-1]] = value
    return out


def load_schema(section: SchemaSection):  # -> FeatureSchema
    from dist_ctr.schema import FeatureSchema

    if section.path:
        return FeatureSchema.load(section.path)
    from dist_ctr.data.presets import get_preset

    return get_preset(section.preset, **section.preset_args)  # type: ignore[arg-type]
