"""Fixtures for model tests: tiny schemas, seeded tiny batches, runnable (materialised) models.

The base schema (``tiny_schema``):

- ``user`` (vocab 20), ``item`` (vocab 30), ``prev_item`` (vocab 30, shares the ``item`` table via
  ``embedding_name``): single-valued;
- ``tags``: multi-hot ``VarLenSparseFeat`` (vocab 12, maxlen 3, sum);
- ``hist_item``: ``VarLenSparseFeat`` on the ``item`` table (maxlen 5, mean), pooled by most models and the
  behaviour sequence of sequence models (DeepCTR's ``item`` / ``hist_item`` convention);
- dense ``x``, ``y``; one binary label ``label`` (``label2`` is added for multi-task models).

All embedding dims are 4. Variants drop the dense (``no_dense``) or the sparse (``no_sparse``) features.
"""

from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.models import CTRModel, build_model
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import materialize

EMBEDDING_DIM = 4


def base_schema(variant: str = "base", num_labels: int = 1) -> FeatureSchema:
    """The tiny schema; ``variant`` in "base" | "no_dense" | "no_sparse"; ``num_labels`` binary labels."""
    sparse = (
        SparseFeat("user", 20, EMBEDDING_DIM),
        SparseFeat("item", 30, EMBEDDING_DIM),
        SparseFeat("prev_item", 30, EMBEDDING_DIM, embedding_name="item"),
        VarLenSparseFeat(SparseFeat("tags", 12, EMBEDDING_DIM), maxlen=3, combiner="sum"),
        VarLenSparseFeat(SparseFeat("hist_item", 30, EMBEDDING_DIM, embedding_name="item"), maxlen=5,
                         combiner="mean"),
    )
    dense = (DenseFeat("x"), DenseFeat("y"))
    feats = {"base": sparse + dense, "no_dense": sparse, "no_sparse": dense}[variant]
    labels = tuple(LabelSpec("label" if i == 0 else f"label{i + 1}") for i in range(num_labels))
    return FeatureSchema(feats, labels)


def make_batch(schema: FeatureSchema, batch_size: int = 4, seed: int = 0, mode: str = "random") -> CTRBatch:
    """A seeded ``CTRBatch`` for ``schema``.

    Args:
        mode (str): "random": var-len lengths in ``[0, maxlen]``, single-valued features always present;
            "full": every feature of every row has at least one id; "empty": row 0 has no id in any feature
            and row 1 has empty var-len bags (the rest as "full").
    """
    g = torch.Generator().manual_seed(seed)
    B = batch_size
    values, lengths = [], []
    for f in schema.sparse_features:
        maxlen = getattr(f, "maxlen", None)
        if maxlen is None:
            ln = torch.ones(B, dtype=torch.long)
        else:
            low = 0 if mode == "random" else 1
            ln = torch.randint(low, maxlen + 1, (B,), generator=g)
        if mode == "empty":
            ln[0] = 0
            if maxlen is not None and B > 1:
                ln[1] = 0
        lengths.append(ln)
        values.append(torch.randint(0, f.vocabulary_size, (int(ln.sum()),), generator=g))  # host sync
    if values:
        kjt = KeyedJaggedTensor.from_lengths_sync(schema.sparse_names, torch.cat(values),
                                                  torch.cat(lengths).to(torch.int32))
    else:
        # No sparse features: an empty KJT that still carries the batch size.
        kjt = KeyedJaggedTensor(keys=[], values=torch.zeros(0, dtype=torch.long),
                                lengths=torch.zeros(0, dtype=torch.int32), stride=B)
    dense = torch.randn(B, schema.n_dense, generator=g)
    labels = torch.randint(0, 2, (B, max(1, len(schema.labels))), generator=g).float()
    return CTRBatch(dense, kjt, labels)


def runnable(name: str, schema: FeatureSchema, config: object = None, seed: int = 0) -> CTRModel:
    """``build_model`` + ``materialize``: an unsharded model on CPU with seeded dense and embedding init."""
    torch.manual_seed(seed)
    return materialize(build_model(name, schema, config), seed=seed)  # type: ignore[return-value]


@pytest.fixture()
def tiny_schema() -> FeatureSchema:
    return base_schema("base")


@pytest.fixture()
def no_dense_schema() -> FeatureSchema:
    return base_schema("no_dense")


@pytest.fixture()
def no_sparse_schema() -> FeatureSchema:
    return base_schema("no_sparse")


@pytest.fixture()
def batch_builder() -> Callable[..., CTRBatch]:
    """``batch_builder(schema, batch_size=4, seed=0, mode="random"|"full"|"empty") -> CTRBatch``."""
    return make_batch


@pytest.fixture()
def tiny_batch(tiny_schema: FeatureSchema) -> CTRBatch:
    return make_batch(tiny_schema, 4, seed=0)


@pytest.fixture()
def model_factory() -> Callable[[str, FeatureSchema, Optional[object], int], CTRModel]:
    """``model_factory(name, schema, config=None, seed=0)``: a runnable (materialised) model."""
    return runnable


@pytest.fixture()
def schema_factory() -> Callable[..., FeatureSchema]:
    """``schema_factory(variant="base", num_labels=1)``: see :func:`base_schema`."""
    return base_schema
