"""Schema options of the generator and in-memory synthetic tables (tests, notebooks)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from dist_ctr.data.synthetic.ids import _sigmoid
from dist_ctr.data.synthetic.model import PlantedModel
from dist_ctr.data.synthetic.signal import PlantedSignal
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SchemaError, SparseFeat, VarLenSparseFeat


def with_options(schema: FeatureSchema, tasks: int | None = None, sequences: bool = False, seq_maxlen: int = 20,
                 seq_vocab: int = 100_000) -> FeatureSchema:
    """The schema the generator writes for these options.

    Args:
        schema (FeatureSchema): the base schema.
        tasks (int | None): number of binary label columns ``T`` (``label``, ``label_1``, ...); None keeps the
            schema's labels.
        sequences (bool): add a target ``item_id`` and its behaviour history ``hist_item_id`` (same table,
            ``maxlen=seq_maxlen``) unless the schema already links a history to a target.
        seq_maxlen (int): history length cap ``L``.
        seq_vocab (int): item vocabulary.

    Returns:
        FeatureSchema
    """
    feats = list(schema.features)
    labels = list(schema.labels)
    if tasks is not None:
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")
        if tasks != len(labels):
            labels = [LabelSpec("label")] + [LabelSpec(f"label_{t}") for t in range(1, tasks)]
    if sequences:
        tables = {f.embedding_name for f in schema.single_sparse}
        if not any(v.embedding_name in tables for v in schema.varlen_features):
            dim = schema.sparse_features[0].embedding_dim if schema.sparse_features else 8
            feats.append(SparseFeat("item_id", seq_vocab, dim))
            feats.append(VarLenSparseFeat(SparseFeat("hist_item_id", seq_vocab, dim, embedding_name="item_id"),
                                          maxlen=seq_maxlen, combiner="mean"))
    return FeatureSchema(tuple(feats), tuple(labels))


def _written_schema(schema: FeatureSchema, raw_hex: bool) -> FeatureSchema:
    """Record the raw column dtypes in the schema written next to the data."""
    out: list[Any] = []
    for f in schema.features:
        if isinstance(f, DenseFeat):
            out.append(replace(f, dtype="int32"))
            continue
        sf = f.sparsefeat if isinstance(f, VarLenSparseFeat) else f
        sf = replace(sf, dtype="string" if (raw_hex and sf.use_hash) else "int32")
        out.append(replace(f, sparsefeat=sf) if isinstance(f, VarLenSparseFeat) else sf)
    return FeatureSchema(tuple(out), schema.labels)


@dataclass
class SynthTable:
    """An in-memory synthetic table and its truth.

    ``logits`` ``(T, N)`` are the true logits (for a regression task: the noiseless target, the label adding
    standard normal noise), ``probs = sigmoid(logits)``, ``first_order_probs`` ``(N,)`` task 0's additive part.
    """

    table: pa.Table
    probs: np.ndarray
    first_order_probs: np.ndarray
    schema: FeatureSchema
    model: PlantedModel
    logits: np.ndarray


def synth_table(schema: FeatureSchema | str, rows: int, seed: int = 0, model_seed: int = 0,
                signal: PlantedSignal | None = None, positive_rate: float | Sequence[float] = 0.25,
                tasks: int | None = None, sequences: bool = False, seq_maxlen: int = 20, seq_vocab: int = 100_000,
                raw_hex: bool = False, row_id_start: int = 0) -> SynthTable:
    """Generate ``rows`` rows in memory (tests, notebooks). Same rows as :func:`generate` writes in one file."""
    base = _resolve_schema(schema)
    sch = with_options(base, tasks=tasks, sequences=sequences, seq_maxlen=seq_maxlen, seq_vocab=seq_vocab)
    model = PlantedModel(sch, model_seed=model_seed, signal=signal, positive_rate=positive_rate)
    tab, z, zf = model.sample(np.random.default_rng([seed, 0]), rows, row_id_start=row_id_start, raw_hex=raw_hex)
    return SynthTable(tab, _sigmoid(z.astype(np.float64)), _sigmoid(zf.astype(np.float64)), sch, model, z)


def _resolve_schema(schema: FeatureSchema | str) -> FeatureSchema:
    if isinstance(schema, FeatureSchema):
        return schema
    if isinstance(schema, str):
        from dist_ctr.data.presets import PRESETS, get_preset

        if schema.strip().lower().replace("_", "-") in PRESETS:
            return get_preset(schema)
        if schema.endswith((".yaml", ".yml", ".json")):
            return FeatureSchema.load(schema)
        raise SchemaError(f"unknown schema {schema!r}: give a FeatureSchema, a preset name {sorted(PRESETS)} or a "
                          f".yaml/.json schema file")
    raise TypeError(f"schema must be a FeatureSchema or a preset name, got {type(schema).__name__}")
