"""Feature columns with DeepCTR-Torch's names and meanings, and the labels a job trains on.

``SparseFeat`` is one categorical id per row; ``VarLenSparseFeat`` wraps a ``SparseFeat`` for a list of ids
per row (pooled by ``combiner`` into one vector, or kept as a sequence for attention / RNN models);
``DenseFeat`` is a float vector of ``dimension`` values per row. Features with the same ``embedding_name``
share one embedding table.

>>> f = SparseFeat("C1", vocabulary_size=100, embedding_dim=8)
>>> f.embedding_name
'C1'
>>> VarLenSparseFeat(SparseFeat("genres", 20, 8), maxlen=5, combiner="mean").name
'genres'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from dist_ctr.errors import SchemaErrorBase

DEFAULT_GROUP_NAME = "default_group"
COMBINERS = ("sum", "mean", "max")
TASK_TYPES = ("binary", "regression")


class SchemaError(SchemaErrorBase):
    """A feature schema is invalid; the message names the feature or key."""


def _auto_dim(vocabulary_size: int) -> int:
    return 6 * int(pow(vocabulary_size, 0.25))


@dataclass(frozen=True)
class SparseFeat:
    """One categorical id per row.

    Args:
        name (str): column name in the data.
        vocabulary_size (int): table rows; ids must lie in ``[0, vocabulary_size)`` unless ``use_hash``.
        embedding_dim (int | "auto"): vector size; "auto" is DeepCTR's ``6 * vocabulary_size ** 0.25``.
        use_hash (bool): raw values (strings or ints) are hashed with :func:`stable_hash` modulo the vocabulary.
        dtype (str): dtype of the raw column (informational; ids are int64 once read).
        embedding_name (str | None): table name; features with equal names share a table. Defaults to ``name``.
        group_name (str): DeepCTR's feature group (used by FLEN / field-aware models).
    """

    name: str
    vocabulary_size: int
    embedding_dim: int = 4
    use_hash: bool = False
    dtype: str = "int64"
    embedding_name: str | None = None
    group_name: str = DEFAULT_GROUP_NAME

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"feature name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.vocabulary_size, int) or self.vocabulary_size < 1:
            raise SchemaError(f"feature {self.name!r}: vocabulary_size must be an int >= 1, got {self.vocabulary_size!r}")
        if self.embedding_dim == "auto":
            object.__setattr__(self, "embedding_dim", _auto_dim(self.vocabulary_size))
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise SchemaError(f"feature {self.name!r}: embedding_dim must be an int >= 1, got {self.embedding_dim!r}")
        if self.embedding_name is None:
            object.__setattr__(self, "embedding_name", self.name)


@dataclass(frozen=True)
class VarLenSparseFeat:
    """A list of ids per row (multi-hot bag or behaviour sequence).

    Args:
        sparsefeat (SparseFeat): the id space and table.
        maxlen (int): lists are truncated to their first ``maxlen`` ids.
        combiner (str): "sum" | "mean" | "max" when pooled.
        length_name (str | None): optional column holding each row's true length.
        weight_name (str | None): optional list column of per-id weights (DeepCTR's weighted sequence).
        weight_norm (bool): normalise weights (DeepCTR's argument; kept for compatibility).
    """

    sparsefeat: SparseFeat
    maxlen: int
    combiner: str = "mean"
    length_name: str | None = None
    weight_name: str | None = None
    weight_norm: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.sparsefeat, SparseFeat):
            raise SchemaError(f"VarLenSparseFeat needs a SparseFeat, got {type(self.sparsefeat).__name__}")
        if not isinstance(self.maxlen, int) or self.maxlen < 1:
            raise SchemaError(f"feature {self.name!r}: maxlen must be an int >= 1, got {self.maxlen!r}")
        if self.combiner not in COMBINERS:
            raise SchemaError(f"feature {self.name!r}: unknown combiner {self.combiner!r}; expected one of {COMBINERS}")

    @property
    def name(self) -> str:
        return self.sparsefeat.name

    @property
    def vocabulary_size(self) -> int:
        return self.sparsefeat.vocabulary_size

    @property
    def embedding_dim(self) -> int:
        return self.sparsefeat.embedding_dim

    @property
    def use_hash(self) -> bool:
        return self.sparsefeat.use_hash

    @property
    def dtype(self) -> str:
        return self.sparsefeat.dtype

    @property
    def embedding_name(self) -> str:
        return self.sparsefeat.embedding_name  # type: ignore[return-value]

    @property
    def group_name(self) -> str:
        return self.sparsefeat.group_name


@dataclass(frozen=True)
class DenseFeat:
    """A float vector of ``dimension`` values per row.

    Args:
        name (str): column name (a float column, or a fixed-size list column when ``dimension > 1``).
        dimension (int): values per row.
        dtype (str): raw dtype (informational; values are float32 once read).
    """

    name: str
    dimension: int = 1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"feature name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.dimension, int) or self.dimension < 1:
            raise SchemaError(f"feature {self.name!r}: dimension must be an int >= 1, got {self.dimension!r}")


@dataclass(frozen=True)
class LabelSpec:
    """One training target: a column and its task type ("binary" -> BCE, "regression" -> MSE)."""

    name: str
    task: Literal["binary", "regression"] = "binary"

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise SchemaError(f"label {self.name!r}: unknown task {self.task!r}; expected one of {TASK_TYPES}")


Feature = Union[SparseFeat, VarLenSparseFeat, DenseFeat]


@dataclass(frozen=True)
class TableSpec:
    """One embedding table: its name, size, dim and the features that read it (schema order)."""

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: tuple[str, ...] = field(default_factory=tuple)
