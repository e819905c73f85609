"""``FeatureSchema``: the ordered features and labels of a job, validated, with a strict YAML / JSON round trip.

Schema order is the order of everything downstream: the pooled sparse output ``(B, F, D)``, the dense
tensor ``(B, n_dense)``, the keys of the ``KeyedJaggedTensor`` and the label columns ``(B, T)``.

>>> s = FeatureSchema(
...     features=(SparseFeat("C1", 10, 4), DenseFeat("I1")),
...     labels=(LabelSpec("label"),),
... )
>>> FeatureSchema.from_dict(s.to_dict()) == s
True
>>> [t.name for t in s.tables()]
['C1']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from dist_ctr.schema.features import (
    DenseFeat,
    Feature,
    LabelSpec,
    SchemaError,
    SparseFeat,
    TableSpec,
    VarLenSparseFeat,
)

_SPARSE_KEYS = {"name", "vocabulary_size", "embedding_dim", "use_hash", "dtype", "embedding_name", "group_name"}
_VARLEN_KEYS = {"maxlen", "combiner", "length_name", "weight_name", "weight_norm"}
_DENSE_KEYS = {"name", "dimension", "dtype"}
_LABEL_KEYS = {"name", "task"}


class SchemaFileNotFoundError(SchemaError, FileNotFoundError):
    """No schema file at the path."""


def _check_keys(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


@dataclass(frozen=True)
class FeatureSchema:
    """Ordered features and labels.

    Args:
        features (tuple[Feature, ...]): sparse, var-len and dense features, in the order models see them.
        labels (tuple[LabelSpec, ...]): training targets ``T``; may be empty for inference-only schemas.
    """

    features: tuple[Feature, ...]
    labels: tuple[LabelSpec, ...] = field(default_factory=lambda: (LabelSpec("label"),))

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "labels", tuple(self.labels))
        seen: set[str] = set()
        for f in self.features:
            if not isinstance(f, (SparseFeat, VarLenSparseFeat, DenseFeat)):
                raise SchemaError(f"not a feature column: {f!r}")
            if f.name in seen:
                raise SchemaError(f"duplicate feature name {f.name!r}")
            seen.add(f.name)
        for lab in self.labels:
            if lab.name in seen:
                raise SchemaError(f"label {lab.name!r} has the same name as a feature or another label")
            seen.add(lab.name)
        self.tables()  # validates shared tables

    # ---- views ---------------------------------------------------------------------------------------------
    @property
    def sparse_features(self) -> list[SparseFeat | VarLenSparseFeat]:
        """Single- and multi-valued categorical features, schema order (the KJT keys)."""
        return [f for f in self.features if isinstance(f, (SparseFeat, VarLenSparseFeat))]

    @property
    def single_sparse(self) -> list[SparseFeat]:
        return [f for f in self.features if isinstance(f, SparseFeat)]

    @property
    def varlen_features(self) -> list[VarLenSparseFeat]:
        return [f for f in self.features if isinstance(f, VarLenSparseFeat)]

    @property
    def dense_features(self) -> list[DenseFeat]:
        return [f for f in self.features if isinstance(f, DenseFeat)]

    @property
    def n_dense(self) -> int:
        """Width of the dense tensor ``(B, n_dense)``."""
        return sum(f.dimension for f in self.dense_features)

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse_features]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense_features]

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def task_types(self) -> list[str]:
        return [lab.task for lab in self.labels]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature named {name!r} in the schema (features: {[f.name for f in self.features]})")

    def tables(self) -> list[TableSpec]:
        """Embedding tables by ``embedding_name``, first-use order.

        Features sharing a table must agree on ``embedding_dim``; the table has the largest vocabulary of its
        features (each feature's ids are still checked against its own ``vocabulary_size``).
        """
        order: list[str] = []
        dims: dict[str, tuple[int, str]] = {}
        vocab: dict[str, int] = {}
        names: dict[str, list[str]] = {}
        for f in self.sparse_features:
            t = f.embedding_name
            if t not in dims:
                order.append(t)
                dims[t] = (f.embedding_dim, f.name)
                vocab[t] = f.vocabulary_size
                names[t] = []
            elif dims[t][0] != f.embedding_dim:
                raise SchemaError(
                    f"feature {f.name!r} shares table {t!r} with feature {dims[t][1]!r} but has embedding_dim "
                    f"{f.embedding_dim} != {dims[t][0]}"
                )
            vocab[t] = max(vocab[t], f.vocabulary_size)
            names[t].append(f.name)
        return [TableSpec(t, vocab[t], dims[t][0], tuple(names[t])) for t in order]

    # ---- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        feats: list[dict[str, Any]] = []
        for f in self.features:
            if isinstance(f, DenseFeat):
                feats.append({"type": "dense", "name": f.name, "dimension": f.dimension, "dtype": f.dtype})
                continue
            sf = f.sparsefeat if isinstance(f, VarLenSparseFeat) else f
            d: dict[str, Any] = {
                "type": "varlen" if isinstance(f, VarLenSparseFeat) else "sparse",
                "name": sf.name,
                "vocabulary_size": sf.vocabulary_size,
                "embedding_dim": sf.embedding_dim,
                "use_hash": sf.use_hash,
                "dtype": sf.dtype,
                "embedding_name": sf.embedding_name,
                "group_name": sf.group_name,
            }
            if isinstance(f, VarLenSparseFeat):
                d.update(
                    maxlen=f.maxlen,
                    combiner=f.combiner,
                    length_name=f.length_name,
                    weight_name=f.weight_name,
                    weight_norm=f.weight_norm,
                )
            feats.append(d)
        return {"features": feats, "labels": [{"name": lab.name, "task": lab.task} for lab in self.labels]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "schema") -> "FeatureSchema":
        if not isinstance(d, Mapping):
            raise SchemaError(f"{where}: expected a mapping with 'features' and 'labels', got {type(d).__name__}")
        _check_keys(where, d, {"features", "labels"})
        if "features" not in d:
            raise SchemaError(f"{where}: missing key 'features'")
        feats: list[Feature] = []
        for i, raw in enumerate(d["features"] or []):
            loc = f"{where}.features[{i}]" + (f" ({raw.get('name')!r})" if isinstance(raw, Mapping) else "")
            if not isinstance(raw, Mapping):
                raise SchemaError(f"{loc}: expected a mapping, got {raw!r}")
            kind = raw.get("type")
            body = {k: v for k, v in raw.items() if k != "type"}
            try:
                if kind == "dense":
                    _check_keys(loc, body, _DENSE_KEYS)
                    feats.append(DenseFeat(**body))
                elif kind == "sparse":
                    _check_keys(loc, body, _SPARSE_KEYS)
                    feats.append(SparseFeat(**body))
                elif kind == "varlen":
                    _check_keys(loc, body, _SPARSE_KEYS | _VARLEN_KEYS)
                    sp = {k: v for k, v in body.items() if k in _SPARSE_KEYS}
                    vl = {k: v for k, v in body.items() if k in _VARLEN_KEYS}
                    if "maxlen" not in vl:
                        raise SchemaError(f"{loc}: varlen feature needs 'maxlen'")
                    feats.append(VarLenSparseFeat(SparseFeat(**sp), **vl))
                else:
                    raise SchemaError(f"{loc}: 'type' must be one of sparse / varlen / dense, got {kind!r}")
            except TypeError as e:  # missing required argument
                raise SchemaError(f"{loc}: {e}") from None
        labels: list[LabelSpec] = []
        for i, raw in enumerate(d.get("labels", [{"name": "label", "task": "binary"}]) or []):
            loc = f"{where}.labels[{i}]"
            if isinstance(raw, str):
                raw = {"name": raw}
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise SchemaError(f"{loc}: expected a mapping with 'name', got {raw!r}")
            _check_keys(loc, raw, _LABEL_KEYS)
            labels.append(LabelSpec(**raw))
        return cls(tuple(feats), tuple(labels))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        p = Path(path)
        p.write_text(self.to_json() if p.suffix == ".json" else self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSchema":
        """Read a schema from a ``.yaml`` / ``.yml`` / ``.json`` file; errors name the file and key."""
        import yaml

        p = Path(path)
        if not p.exists():
            raise SchemaFileNotFoundError(f"schema file not found: {p}")
        text = p.read_text()
        try:
            raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise SchemaError(f"{p}: cannot parse: {e}") from None
        return cls.from_dict(raw, where=str(p))

    @classmethod
    def from_columns(cls, columns: Iterable[Feature], labels: Iterable[LabelSpec | str] = ("label",)) -> "FeatureSchema":
        """Build from DeepCTR-style feature columns (duplicates across linear / dnn lists are merged)."""
        feats: dict[str, Feature] = {}
        for c in columns:
            if c.name in feats and feats[c.name] != c:
                raise SchemaError(f"feature {c.name!r} is given twice with different definitions")
            feats.setdefault(c.name, c)
        labs = tuple(LabelSpec(x) if isinstance(x, str) else x for x in labels)
        return cls(tuple(feats.values()), labs)
