"""DeepCTR-Torch's ``deepctr_torch.models``: one class per registered model, under its DeepCTR name.

The classes are generated from :data:`dist_ctr.models.MODEL_REGISTRY` when this module is imported, so a model
added to the registry appears here with no further code. Each constructor takes DeepCTR-Torch's arguments (see
:mod:`dist_ctr.compat.models.signatures`): feature column lists (mapped to one
:class:`~dist_ctr.schema.FeatureSchema` and to the config's ``*_feature_names``), the model's hyper-parameters
(into its typed config), ``seed``, ``task`` (or ``task_types`` / ``task_names`` for multi-task models),
``device`` and ``gpus``. An unknown keyword is a ``TypeError`` naming it. The object offers ``compile`` /
``fit`` / ``evaluate`` / ``predict`` (:class:`~dist_ctr.compat.base.CompatModel`).

>>> from dist_ctr.compat.inputs import SparseFeat
>>> cols = [SparseFeat("a", 10, 4), SparseFeat("b", 5, 4)]
>>> m = DeepFM(cols, cols, dnn_hidden_units=(8,))
>>> m.model_name, m.config.dnn_hidden_units, m.config.linear_feature_names
('DeepFM', (8,), ('a', 'b'))
>>> DeepFM(cols, cols, dnn_hidden_unit=(8,))
Traceback (most recent call last):
...
TypeError: DeepFM(): got an unexpected keyword argument 'dnn_hidden_unit'
"""

from __future__ import annotations

import inspect
from typing import Any

from dist_ctr.compat.base import CompatModel
from dist_ctr.compat.models.signatures import ModelSpec, model_spec
from dist_ctr.models.registry import MODEL_REGISTRY, _ensure_loaded, make_config
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat

_TASK_TYPES = ("binary", "regression")


def _label_name(features: set[str]) -> str:
    for cand in ("label", "_label", "__label__"):
        if cand not in features:
            return cand
    raise ValueError("no free name for the label column")


def _build(spec: ModelSpec, bound: dict[str, Any]) -> dict[str, Any]:
    """Arguments -> (schema, config, columns) for :class:`CompatModel`."""
    name = spec.name
    columns: list[Any] = []
    names_of: dict[str, Any] = {}
    for arg in spec.column_args:
        cols = bound[arg]
        if cols is None:
            if arg not in ("base_feature_columns", "bias_feature_columns"):
                raise TypeError(f"{name}(): missing feature columns {arg!r}")
            names_of[arg] = None
            continue
        cols = list(cols)
        for c in cols:
            if not isinstance(c, (SparseFeat, DenseFeat, VarLenSparseFeat)):
                raise TypeError(f"{name}(): {arg} holds {c!r}, not a SparseFeat / DenseFeat / VarLenSparseFeat")
        columns.extend(cols)
        names_of[arg] = tuple(c.name for c in cols)
    feature_names = {c.name for c in columns}
    if spec.multitask:
        types, names = tuple(bound["task_types"]), tuple(bound["task_names"])
        if len(types) != len(names):
            raise ValueError(f"{name}(): task_types {types} and task_names {names} differ in length")
        labels = tuple(LabelSpec(n, t) for n, t in zip(names, types))
    else:
        task = bound["task"]
        if task not in _TASK_TYPES:
            raise ValueError(f"{name}(): task must be 'binary' or 'regression', got {task!r}")
        labels = (LabelSpec(_label_name(feature_names), task),)
    for t in (lab.task for lab in labels):
        if t not in _TASK_TYPES:
            raise ValueError(f"{name}(): task types must be 'binary' or 'regression', got {t!r}")
    schema = FeatureSchema.from_columns(columns, labels)
    cfg: dict[str, Any] = {}
    fields = {f for f in spec.config_cls.__dataclass_fields__}  # type: ignore[attr-defined]
    for f in fields:
        if f.endswith("_feature_names"):
            arg = f[: -len("_names")] + "_columns"
            if arg in names_of:
                cfg[f] = names_of[arg]
        elif f in bound:
            v = bound[f]
            cfg[f] = tuple(v) if isinstance(v, list) else v
    if spec.multitask:
        cfg.update({k: tuple(bound[k]) for k in ("task_types", "task_names") if k in fields})
    return {"schema": schema, "config": make_config(name, cfg), "feature_columns": columns}


def make_model_class(name: str) -> type:
    """The compat class of registered model ``name`` (a :class:`CompatModel` subclass)."""
    _ensure_loaded()
    entry = MODEL_REGISTRY[name]
    spec = model_spec(name, entry.config_cls)

    def __init__(self: CompatModel, *args: Any, **kwargs: Any) -> None:
        try:
            ba = spec.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}(): {e}") from None
        ba.apply_defaults()
        bound = dict(ba.arguments)
        built = _build(spec, bound)
        CompatModel.__init__(self, name, built["schema"], built["config"], built["feature_columns"],
                             seed=bound["seed"], device=bound["device"], gpus=bound["gpus"])

    doc = (entry.cls.__doc__ or "").strip().splitlines()
    cls = type(name, (CompatModel,), {
        "__init__": __init__,
        "__module__": __name__,
        "__doc__": f"DeepCTR-Torch-compatible ``{name}``{spec.signature}.\n\n"
                   f"Model: :class:`{entry.cls.__module__}.{entry.cls.__name__}` "
                   f"({doc[0] if doc else ''}); config :class:`{entry.config_cls.__name__}`.",
        "spec": spec,
    })
    cls.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *spec.signature.parameters.values()])
    cls.__signature__ = spec.signature  # type: ignore[attr-defined]
    return cls


_ensure_loaded()
__all__ = sorted(MODEL_REGISTRY)
for _name in __all__:
    globals()[_name] = make_model_class(_name)
del _name
