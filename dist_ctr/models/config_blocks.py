"""Frozen dataclass blocks holding DeepCTR's common argument runs; each model's config inherits the blocks it
takes, so its YAML keys stay flat (``model.config.dnn_hidden_units``, ...) and :func:`dist_ctr.strict.from_dict`
reads the same field types and defaults. A config overrides a block's default by re-declaring the field (the field
keeps the block's place in the field order).

Field order: the fields of the blocks come first (the last base first, as :mod:`dataclasses` collects them), then
the config's own. The compat API (:mod:`dist_ctr.compat.models.signatures`) derives the positional arguments of the
models DeepCTR-Torch lacks from that order; those configs fix it with :func:`positional_order`.

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class C(DNNArgs):
...     dnn_hidden_units: tuple[int, ...] = (8,)
>>> [f.name for f in dataclasses.fields(C)], C().dnn_hidden_units
(['dnn_activation', 'dnn_dropout', 'l2_reg_dnn', 'dnn_hidden_units'], (8,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, TypeVar

__all__: list[str] = []  # config plumbing; nothing re-exported by dist_ctr.models

C = TypeVar("C", bound=type)


@dataclass(frozen=True)
class InitArgs:
    """``init_std``: std of the ``N(0, init_std ** 2)`` init of embeddings and dense kernels."""

    init_std: float = 1e-4


@dataclass(frozen=True)
class EmbeddingArgs(InitArgs):
    """Regularisation and init of the embeddings: ``l2_reg_embedding``, ``init_std``."""

    l2_reg_embedding: float = 1e-5


@dataclass(frozen=True)
class DNNOptions:
    """A DNN's options besides its widths: ``dnn_activation``, ``dnn_dropout``, ``l2_reg_dnn``."""

    dnn_activation: str = "relu"
    dnn_dropout: float = 0.0
    l2_reg_dnn: float = 0.0


@dataclass(frozen=True)
class DNNArgs(DNNOptions):
    """DeepCTR's DNN tower: ``dnn_hidden_units`` and the :class:`DNNOptions`."""

    dnn_hidden_units: tuple[int, ...] = (256, 128)


@dataclass(frozen=True)
class BatchNormArgs:
    """``dnn_use_bn``: batch norm in the DNN."""

    dnn_use_bn: bool = False


@dataclass(frozen=True)
class LinearArgs:
    """DeepCTR's linear part: ``linear_feature_names`` (``None`` = every feature) and ``l2_reg_linear``.

    ``linear_in_embedding_tables``: store each sparse feature's linear weight as extra columns of its embedding
    rows where the deep part reads the same table (one lookup per id instead of two; see
    :class:`dist_ctr.sparse.SparseArch`). The same model and arithmetic under an element-wise sparse optimizer
    (exact Adagrad, Adam, SGD); training refuses it under row-wise Adagrad. The compat facade turns it on when it
    compiles with an element-wise one.
    """

    l2_reg_linear: float = 1e-5
    linear_feature_names: Optional[tuple[str, ...]] = None
    linear_in_embedding_tables: bool = False


@dataclass(frozen=True)
class DNNFeatureArgs:
    """``dnn_feature_names``: DeepCTR's ``dnn_feature_columns`` as names (``None`` = every feature)."""

    dnn_feature_names: Optional[tuple[str, ...]] = None


@dataclass(frozen=True)
class DeepArgs(DNNArgs, DNNFeatureArgs, EmbeddingArgs):
    """A DNN over the embeddings: :class:`DNNArgs`, ``dnn_feature_names``, ``l2_reg_embedding``, ``init_std``."""


@dataclass(frozen=True)
class WideDeepArgs(BatchNormArgs, LinearArgs, DeepArgs):
    """DeepCTR's usual set (WDL, DeepFM, DCN, xDeepFM, ...): :class:`DeepArgs`, the linear part, ``dnn_use_bn``."""


@dataclass(frozen=True)
class HistoryArgs:
    """The targets of a behaviour-sequence model (``history_feature_list``, DeepCTR's argument) and, optionally,
    each target's history feature (``history_features``, target -> history; see :mod:`dist_ctr.models.inputs`)."""

    history_feature_list: tuple[str, ...] = ()
    history_features: Optional[Mapping[str, str]] = None


@dataclass(frozen=True)
class SequenceArgs(DNNArgs, EmbeddingArgs):
    """The DNN and regularisation of the behaviour-sequence models (DIN, DIEN, BST, DSIN)."""

    l2_reg_embedding: float = 1e-6


@dataclass(frozen=True)
class MultiTaskArgs(BatchNormArgs, DNNOptions, EmbeddingArgs):
    """The multi-task models' shared arguments; ``task_types`` / ``task_names`` default to the schema's."""

    task_types: Optional[tuple[str, ...]] = None
    task_names: Optional[tuple[str, ...]] = None


def positional_order(*names: str) -> Callable[[C], C]:
    """Class decorator: list a config's fields (``dataclasses.fields``) with ``names`` first, in that order.

    For the configs whose field order is a compat positional signature (DeepCTR's order for a model DeepCTR-Torch
    lacks) that the blocks cannot produce. Only the listing order changes; fields, types and defaults do not.
    """

    def deco(cls: C) -> C:
        fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise TypeError(f"{cls.__name__}: positional_order names unknown field(s) {unknown}")
        order = list(names) + [n for n in fields if n not in names]
        cls.__dataclass_fields__ = {n: fields[n] for n in order}  # type: ignore[attr-defined]
        return cls

    return deco
