"""Strict construction of nested dataclasses from YAML / JSON mappings.

Unknown keys, missing required keys and values of the wrong type are errors that name the full key path
(``train.checkpoint.every_steps``), never silently ignored.

>>> from dist_ctr.config import TrainSection
>>> from_dict(TrainSection, {"epochs": 2, "checkpoint": {"every_steps": 10}}).checkpoint.every_steps
10
>>> from_dict(TrainSection, {"checkpoint": {"every_step": 10}}, "train")
Traceback (most recent call last):
...
dist_ctr.strict.ConfigError: train.checkpoint: unknown key 'every_step' (allowed: dir, every_steps, keep, resume, storage_options)

Numbers carry their allowed range in the field's metadata (:func:`ranged`), checked by :func:`from_dict` with the
key path:

>>> from_dict(TrainSection, {"epochs": -1}, "train")
Traceback (most recent call last):
...
dist_ctr.strict.ConfigError: train.epochs: must be >= 1, got -1
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from dist_ctr.errors import ConfigErrorBase

T = TypeVar("T")

_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ConfigErrorBase):
    """A config value is wrong; the message starts with the key path."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed interval of a number: ``gt`` / ``ge`` lower bound (exclusive / inclusive), ``le`` upper bound.

    >>> Range(gt=0).check(0.0, "optim.dense.lr")
    Traceback (most recent call last):
    ...
    dist_ctr.strict.ConfigError: optim.dense.lr: must be > 0, got 0.0
    """

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def check(self, value: Any, path: str) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        if self.gt is not None and not value > self.gt:
            raise ConfigError(f"{path}: must be > {self.gt:g}, got {value!r}")
        if self.ge is not None and not value >= self.ge:
            raise ConfigError(f"{path}: must be >= {self.ge:g}, got {value!r}")
        if self.le is not None and not value <= self.le:
            raise ConfigError(f"{path}: must be <= {self.le:g}, got {value!r}")


def ranged(default: Any, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A dataclass field with ``default`` whose value :func:`from_dict` checks against the range
    (``epochs: int = ranged(1, ge=1)``)."""
    return dataclasses.field(default=default, metadata={"range": Range(gt=gt, ge=ge, le=le)})


def check_ranges(obj: Any, path: str = "") -> None:
    """Check every ranged field of dataclass ``obj`` (recursively); for configs built in code, not parsed."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        rng = f.metadata.get("range")
        if rng is not None:
            rng.check(value, _join(path, f.name))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, _join(path, f.name))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if errors else f"{path or 'value'}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, _join(path, i)) for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_convert(a, v, _join(path, i)) for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        out = [_convert(inner, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, path): _convert(vt, v, _join(path, str(k))) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
            return float(value)  # YAML 1.1 reads `1e-5` (no dot) as text; it is the number a user meant
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively and strictly (see module docstring)."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{path or cls.__name__}: unknown key {unknown[0]!r} (allowed: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
            rng = f.metadata.get("range")
            if rng is not None:
                rng.check(kwargs[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{path or cls.__name__}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data form of a (nested) dataclass, for YAML / checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
