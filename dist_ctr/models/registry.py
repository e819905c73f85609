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
from dist_ctr.strict import ConfigError, from_dict


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


def make_config(name: str, config: Mapping[str, Any] | Any | None, path: str = "model.config") -> Any:
    """Typed config for model ``name`` from a mapping or an instance of its config class.

    A mapping goes through the one strict loader (:func:`dist_ctr.strict.from_dict`): an unknown key or a value of
    the wrong type fails here, naming the key path (``model.config.dnn_hidden_units[1]: expected an integer,
    got 'x'``), never deep in a layer.
    """
    _ensure_loaded()
    if name not in MODEL_REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; registered: {sorted(MODEL_REGISTRY)}")
    entry = MODEL_REGISTRY[name]
    if config is None:
        return entry.config_cls()
    if isinstance(config, entry.config_cls):
        return config
    if not isinstance(config, Mapping):
        raise ModelConfigError(f"{path}: model {name!r}: config must be a mapping or {entry.config_cls.__name__}")
    fields = sorted(f.name for f in dataclasses.fields(entry.config_cls))
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ModelConfigError(f"{path}: model {name!r}: unknown config key(s) {unknown}; allowed: {fields}")
    try:
        return from_dict(entry.config_cls, config, path)
    except ConfigError as e:
        raise ModelConfigError(f"{e} (model {name!r})") from None


def build_model(name: str, schema: FeatureSchema, config: Mapping[str, Any] | Any | None = None) -> CTRModel:
    """Build a registered model: ``MODEL_REGISTRY[name].cls(schema, typed_config)`` (embeddings on ``meta``).

    A value the config's types admit but the model's layers refuse (an unknown activation, a head count that does
    not divide the embedding size, a feature of the wrong kind) is a :class:`ModelConfigError` naming the model.
    """
    cfg = make_config(name, config)
    try:
        return MODEL_REGISTRY[name].cls(schema, cfg)
    except (ValueError, TypeError, KeyError) as e:
        if isinstance(e, ConfigErrorBase):
            raise
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        raise ModelConfigError(f"model.config: model {name!r} refuses this config or schema: {text}") from e


def _ensure_loaded() -> None:
    import dist_ctr.models  # noqa: F401  (imports every model file, which registers itself)
