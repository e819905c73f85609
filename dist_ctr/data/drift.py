"""Daily synthetic partitions with drift, for retraining tests and demos.

Day ``i`` of ``days`` is written as ``<out>/date=<day>/part-00000.parquet`` followed by ``<out>/date=<day>/_SUCCESS``
(the completeness marker a pipeline waits for). Every day draws from one planted model
(:class:`dist_ctr.data.synthetic.PlantedModel`, weights fixed by ``model_seed``) with three kinds of drift:

- the planted signal moves a little: first-order effects grow by ``signal_step`` per day, pairwise effects shrink
  by the same fraction (the weights of an id do not change, their weight in the label does);
- new ids appear: ``grow_feature`` (default: the first sparse feature) only shows ids below a bound that grows
  linearly from ``grow_start`` of its vocabulary on the first day to all of it on the last day (rows above the
  bound are not drawn), so a table's used id range grows day by day;
- one dense feature (``shift_feature``, default: the first dense feature) is scaled by ``1 + shift_step * i``.

``shuffle_labels`` lists days whose labels are permuted (rows keep their features): a corrupt day for a gate to
catch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dist_ctr.data.synthetic import PlantedSignal, synth_table
from dist_ctr.schema import FeatureSchema

__all__ = ["Drift", "generate_daily"]


@dataclass(frozen=True)
class Drift:
    """How the days differ (see the module docstring)."""

    signal_step: float = 0.05
    grow_feature: Optional[str] = None
    grow_start: float = 0.6
    shift_feature: Optional[str] = None
    shift_step: float = 0.1
    shuffle_labels: tuple[str, ...] = field(default_factory=tuple)


def _day_table(schema: FeatureSchema, i: int, n_days: int, rows: int, seed: int, model_seed: int,
               drift: Drift) -> pa.Table:
    """``rows`` rows of day ``i`` (ids of the growing feature below the day's bound)."""
    base = PlantedSignal()
    k = drift.signal_step * i
    signal = replace(base, first_order_scale=base.first_order_scale * (1 + k),
                     pair_scale=base.pair_scale * max(0.0, 1 - k))
    grow = drift.grow_feature or schema.sparse_features[0].name
    vocab = next(f.vocabulary_size for f in schema.sparse_features if f.name == grow)
    frac = drift.grow_start + (1 - drift.grow_start) * (i / max(1, n_days - 1))
    bound = max(1, int(round(vocab * min(1.0, frac))))
    parts: list[pa.Table] = []
    have, attempt = 0, 0
    while have < rows:
        t = synth_table(schema, rows * 2, seed=seed * 1000 + i * 37 + attempt, model_seed=model_seed,
                        signal=signal, row_id_start=i * 10_000_000 + attempt * rows * 2).table
        keep = np.asarray(t.column(grow).to_numpy(zero_copy_only=False)) < bound
        parts.append(t.filter(pa.array(keep)))
        have += int(keep.sum())
        attempt += 1
    table = pa.concat_tables(parts).slice(0, rows)
    shift = drift.shift_feature or (schema.dense_features[0].name if schema.dense_features else None)
    if shift is not None:
        col = table.column(shift).to_numpy(zero_copy_only=False).astype(np.float64) * (1 + drift.shift_step * i)
        table = table.set_column(table.schema.get_field_index(shift), shift,
                                 pa.array(col.astype(np.float32), mask=np.isnan(col)))
    return table


def generate_daily(out_url: str, schema: FeatureSchema, days: Sequence[str], rows_per_day: int = 4000,
                   seed: int = 0, drift: Drift = Drift(), model_seed: int = 0,
                   storage_options: Optional[dict[str, Any]] = None) -> list[str]:
    """Write one complete partition per day (``date=<day>/part-00000.parquet`` + ``_SUCCESS``).

    Args:
        out_url (str): data root (any fsspec URL).
        schema (FeatureSchema): features and labels to write (vocabularies: the full id ranges).
        days (Sequence[str]): partition values, oldest first (ISO dates).
        rows_per_day (int): rows per partition.
        seed (int): seeds the rows; ``model_seed`` the planted weights.
        drift (Drift): the day-to-day drift.
        storage_options (dict | None): fsspec options.

    Returns:
        list[str]: the partition URLs written.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
    root = root.rstrip("/")
    urls = []
    for i, day in enumerate(days):
        table = _day_table(schema, i, len(days), rows_per_day, seed, model_seed, drift)
        if day in drift.shuffle_labels:
            perm = np.random.default_rng([seed, i, 0x5F]).permutation(table.num_rows)
            for name in schema.label_names:
                col = table.column(name).to_numpy(zero_copy_only=False)[perm]
                table = table.set_column(table.schema.get_field_index(name), name, pa.array(col))
        part = f"{root}/date={day}"
        fs.makedirs(part, exist_ok=True)
        with fs.open(f"{part}/part-00000.parquet", "wb") as f:
            pq.write_table(table, f, row_group_size=max(1, rows_per_day // 2))
        fs.pipe(f"{part}/_SUCCESS", b"")  # last: the partition is complete
        urls.append(f"{out_url.rstrip('/')}/date={day}")
    return urls
