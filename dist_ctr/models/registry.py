"""Registry: build a model by name from a schema and a typed config; unknown keys are errors.

>>> sorted(MODEL_REGISTRY)[:1]  # doctest: +SKIP
['AFM']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, TypeVar

from dist_ctr.models.base import CTRModel
from dist_ctr.schema import FeatureSchema
from dist_ctr.errors import ConfigErrorBase


class ModelConfigError(ConfigErrorBase):
    """A model name or config key is wrong; the message names it."""


M = TypeVar("M", bound=type)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    config_cls: type


MODEL_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config_cls: type) -> Callable[[M], M]:
    """Class decorator: ``@register_model("DeepFM", DeepFMConfig)``; the class is built as ``cls(schema, config)``."""

    def deco(cls: M) -> M:
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        if not dataclasses.is_dataclass(config_cls):
            raise TypeError(f"config of {name!r} must be a dataclass")
        MODEL_REGISTRY[name] = ModelEntry(name, cls, config_cls)
        return cls

    return deco


def _coerce(value: Any) -> Any:
    """YAML gives lists where configs hold tuples."""
    if isinstance(value, list):
        return tuple(_coerce(v) for v in value)
    return value


def make_config(name: str, config: Mapping[str, Any] | Any | None) -> Any:
    """Typed config for model ``name`` from a mapping (strict) or an instance of its config class."""
    _ensure_loaded()
    if name not in MODEL_REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; registered: {sorted(MODEL_REGISTRY)}")
    entry = MODEL_REGISTRY[name]
    if config is None:
        return entry.config_cls()
    if isinstance(config, entry.config_cls):
        return config
    if not isinstance(config, Mapping):
        raise ModelConfigError(f"model {name!r}: config must be a mapping or {entry.config_cls.__name__}")
    fields = {f.name: f for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ModelConfigError(f"model {name!r}: unknown config key(s) {unknown}; allowed: {sorted(fields)}")
    try:
        return entry.config_cls(**{k: _coerce(v) for k, v in config.items()})
    except (TypeError, ValueError) as e:
        raise ModelConfigError(f"model {name!r}: {e}") from None


def build_model(name: str, schema: FeatureSchema, config: Mapping[str, Any] | Any | None = None) -> CTRModel:
    """Build a registered model: ``MODEL_REGISTRY[name].cls(schema, typed_config)`` (embeddings on ``meta``)."""
    cfg = make_config(name, config)
    return MODEL_REGISTRY[name].cls(schema, cfg)


def _ensure_loaded() -> None:
    import dist_ctr.models  # noqa: F401  (imports every model file, which registers itself)
