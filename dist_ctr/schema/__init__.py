"""Feature schema: DeepCTR-style feature columns, labels, tables, stable hashing."""

from dist_ctr.schema.features import (
    COMBINERS,
    DEFAULT_GROUP_NAME,
    DenseFeat,
    Feature,
    LabelSpec,
    SchemaError,
    SparseFeat,
    TableSpec,
    VarLenSparseFeat,
)
from dist_ctr.schema.hashing import hash64, hash_one, stable_hash
from dist_ctr.schema.schema import FeatureSchema

__all__ = [
    "COMBINERS",
    "DEFAULT_GROUP_NAME",
    "DenseFeat",
    "Feature",
    "FeatureSchema",
    "LabelSpec",
    "SchemaError",
    "SparseFeat",
    "TableSpec",
    "VarLenSparseFeat",
    "hash64",
    "hash_one",
    "stable_hash",
]
