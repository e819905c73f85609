"""DeepCTR-Torch's ``deepctr_torch.inputs``: feature columns and ``get_feature_names``.

The columns are :mod:`dist_ctr.schema`'s (subclasses, so ``isinstance`` against either works and a
``FeatureSchema`` accepts them) with one convenience DeepCTR programs rely on: NumPy integers are accepted where
an ``int`` is expected, because the quick-start writes ``SparseFeat(feat, data[feat].max() + 1)`` and pandas
returns ``numpy.int64``.

>>> import numpy as np
>>> f = SparseFeat("C1", np.int64(10), embedding_dim=4)
>>> f.vocabulary_size, type(f.vocabulary_size).__name__
(10, 'int')
>>> h = VarLenSparseFeat(SparseFeat("genres", 20, 4), maxlen=5, combiner="mean", length_name="genres_len")
>>> get_feature_names([f, DenseFeat("I1", 1), h, f])
['C1', 'I1', 'genres', 'genres_len']
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

from dist_ctr.schema import features as _f
from dist_ctr.schema.features import DEFAULT_GROUP_NAME, SchemaError

__all__ = ["DEFAULT_GROUP_NAME", "DenseFeat", "SparseFeat", "VarLenSparseFeat", "get_feature_names"]


def _as_int(value: Any) -> Any:
    """``numpy.int64(5)`` -> ``5``; anything else unchanged (the schema then validates it)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


class SparseFeat(_f.SparseFeat):
    """DeepCTR's ``SparseFeat(name, vocabulary_size, embedding_dim=4, use_hash=False, dtype, embedding_name,
    group_name)``; see :class:`dist_ctr.schema.SparseFeat`. ``use_hash=True`` hashes raw values with the stable
    64-bit hash (DeepCTR-Torch only prints a notice)."""

    def __post_init__(self) -> None:
        for key in ("vocabulary_size", "embedding_dim"):
            object.__setattr__(self, key, _as_int(getattr(self, key)))
        super().__post_init__()


class DenseFeat(_f.DenseFeat):
    """DeepCTR's ``DenseFeat(name, dimension=1, dtype="float32")``; see :class:`dist_ctr.schema.DenseFeat`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dimension", _as_int(self.dimension))
        super().__post_init__()


class VarLenSparseFeat(_f.VarLenSparseFeat):
    """DeepCTR's ``VarLenSparseFeat(sparsefeat, maxlen, combiner="mean", length_name=None, weight_name=None,
    weight_norm=True)``; see :class:`dist_ctr.schema.VarLenSparseFeat`.

    Input convention (DeepCTR's): the column arrives as a padded 2-D int array ``(N, L)``. Without
    ``length_name`` the non-zero ids of a row are its ids (0 is padding, so real ids start at 1); with
    ``length_name`` the first ``length`` entries are the ids (0 is then an ordinary id).
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "maxlen", _as_int(self.maxlen))
        super().__post_init__()


def get_feature_names(feature_columns: Iterable[Any]) -> list[str]:
    """Input names a model reads, first-use order without duplicates: each column's name, then a var-len
    column's ``length_name`` / ``weight_name`` when set (DeepCTR's ``build_input_features`` order)."""
    names: dict[str, None] = {}
    for c in feature_columns:
        if not isinstance(c, (_f.SparseFeat, _f.DenseFeat, _f.VarLenSparseFeat)):
            raise SchemaError(f"get_feature_names: not a feature column: {c!r}")
        names.setdefault(c.name, None)
        if isinstance(c, _f.VarLenSparseFeat):
            for extra in (c.length_name, c.weight_name):
                if extra is not None:
                    names.setdefault(extra, None)
    return list(names)
