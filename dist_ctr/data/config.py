"""Typed, strict configuration of a Parquet data set and its loader (``data.train`` / ``data.eval`` of a job).

Unknown keys are errors that name the key; ``storage_options`` (credentials, endpoints) never appear in a
``repr`` or a log line.

>>> cfg = DataConfig.from_dict({"url": "s3://b/train", "batch_size": 2048,
...                             "storage_options": {"key": "AKIA", "secret": "s3cr3t"},
...                             "partitions": {"date": {"min": "2026-11-01", "max": "2026-11-20"}}})
>>> cfg.batch_size, "s3cr3t" in repr(cfg)
(2048, False)
>>> DataConfig.from_dict({"url": "x", "batch_sise": 1}, where="data.train")
Traceback (most recent call last):
...
dist_ctr.strict.ConfigError: data.train: unknown key 'batch_sise' (allowed: url, storage_options, partitions, batch_size, shuffle, shuffle_buffer_rows, num_workers, prefetch, tail_policy, on_bad_file, on_non_finite, dense, vocabularies, row_id_column, require_labels, file_suffixes)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from dist_ctr.strict import ConfigError, from_dict, ranged


DEFAULT_BATCH_SIZE = 4096  # rows per batch when a job or a caller does not say

@dataclass
class DenseTransformConfig:
    """How dense columns become the ``(B, n_dense)`` float32 tensor.

    Nulls / NaNs are replaced by ``fill_na`` first; then per feature (``per_feature`` overrides ``transform``):

    - ``"none"``: values as they are;
    - ``"log"``: ``log(1 + max(x, 0))``, the Criteo convention (Criteo's integer counts are >= 0 except a few
      ``-1`` / ``-2`` sentinels, which the clip maps to 0 -- the same as DLRM's preprocessing);
    - ``"minmax"``: ``clip((x - min) / (max - min), 0, 1)`` with ``stats[name] = [min, max]`` precomputed on the
      training set (``max == min`` gives 0).

    Then every value is multiplied by ``scale``.

    Args:
        transform (str): default transform for every dense feature (``"log"``: Criteo-style counts, which the
            synthetic generator also writes; set ``"none"`` for features that may be negative).
        fill_na (float): value for nulls and NaNs (before the transform).
        per_feature (dict[str, str]): feature name -> transform.
        stats (dict[str, list[float]]): feature name -> ``[min, max]`` for ``"minmax"``.
        scale (float): multiplies every transformed dense value. Models that multiply their inputs together (the
            cross networks of DCN, DCN-Mix, DLRM-DCNv2) see the dense columns beside embeddings of a few
            hundredths; ``log`` counts reach about 12, and at that ratio the products with dense columns swamp
            the products between embeddings early in training. A ``scale`` of 0.1 brings them closer.
    """

    transform: Literal["none", "log", "minmax"] = "log"
    fill_na: float = ranged(0.0)
    per_feature: dict[str, str] = field(default_factory=dict)
    stats: dict[str, list[float]] = field(default_factory=dict)
    scale: float = ranged(1.0, gt=0)

    def __post_init__(self) -> None:
        for name, t in self.per_feature.items():
            if t not in ("none", "log", "minmax"):
                raise ConfigError(f"dense.per_feature.{name}: must be one of ['none', 'log', 'minmax'], got {t!r}")
        for name, mm in self.stats.items():
            if len(mm) != 2:
                raise ConfigError(f"dense.stats.{name}: expected [min, max], got {mm!r}")

    def transform_of(self, name: str) -> str:
        return self.per_feature.get(name, self.transform)


def _check_partitions(parts: Mapping[str, Any]) -> None:
    for key, cond in parts.items():
        where = f"partitions.{key}"
        if isinstance(cond, Mapping):
            bad = sorted(set(cond) - {"min", "max"})
            if bad:
                raise ConfigError(f"{where}: unknown key {bad[0]!r} (allowed: min, max)")
            if not cond:
                raise ConfigError(f"{where}: a range needs 'min' and/or 'max'")
        elif isinstance(cond, (list, tuple)):
            if not cond:
                raise ConfigError(f"{where}: an empty list selects nothing")
        elif not isinstance(cond, (str, int, float)) or isinstance(cond, bool):
            raise ConfigError(f"{where}: expected a value, a list of values or {{min, max}}, got {cond!r}")


@dataclass
class DataConfig:
    """A Parquet data set on an fsspec URL and how one rank reads it.

    Args:
        url (str): a file or directory on any fsspec URL (local path, ``file://``, ``s3://``, ``gs://``,
            ``memory://``). Directories are searched recursively for ``file_suffixes``; paths with a segment
            starting with ``_`` or ``.`` (``_SUCCESS``, ``_temporary/``) are ignored.
        storage_options (dict): passed to fsspec as is (``key``/``secret``, ``endpoint_url``, ``client_kwargs``,
            ``config_kwargs`` for timeouts / retries ...). Never logged.
        partitions (dict): Hive partition filter on ``key=value/`` path segments: a value, a list of values, or
            ``{min, max}`` (inclusive). Values compare as numbers when both sides parse as numbers, else as
            strings (ISO dates compare correctly as strings).
        batch_size (int): rows per batch ``B``.
        shuffle (bool): shuffle file / row-group order per epoch and rows within a window.
        shuffle_buffer_rows (int): rows per shuffle window (memory bound; a window is whole row groups, so it
            holds at most this plus one row group).
        num_workers (int): reader threads per rank (row groups of a window are read in parallel). The row order
            does not depend on it, so a cursor resumes under any value.
        prefetch (int): batches prepared ahead by a background thread (bounded queue); 0 reads synchronously.
        tail_policy (str): how ranks agree on steps per epoch: ``"pad"`` (every rank yields
            ``ceil(max_rank_rows / B)`` full batches; missing rows are pad rows with ``row_ids == -1``, zero dense
            values, id 0 for single-valued features, empty lists, label 0) or ``"drop"`` (every rank yields
            ``floor(min_rank_rows / B)`` full batches; the rest of each rank's rows is not read this epoch).
        on_bad_file (str): ``"error"`` raises :class:`~dist_ctr.data.errors.DataError`; ``"skip"`` skips the file /
            row group and lists it in the loader's ``bad_files`` report.
        on_non_finite (str): a dense value that is ``inf`` / ``-inf`` (NaN and null are filled by ``dense.fill_na``
            either way): ``"error"`` raises :class:`~dist_ctr.data.errors.BadValueError` naming file, row group
            and column; ``"fill"`` replaces it by ``dense.fill_na`` and counts it per column in the loader's
            ``filled`` report.
        dense (DenseTransformConfig): dense fill / transform.
        vocabularies (dict[str, str]): feature name -> URL of a vocabulary file (one value per line): the value on
            line ``i`` (0-based) gets id ``i + 1``; id 0 is the out-of-vocabulary / null bucket.
        row_id_column (str | None): column holding each row's id (the ledger). When the data has no such column
            the row's position in the sorted listing is used.
        require_labels (bool): the schema's label columns must exist (False for inference: labels are 0).
        file_suffixes (list[str]): file name endings that count as Parquet in a directory.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    partitions: dict[str, Any] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    shuffle: bool = True
    shuffle_buffer_rows: int = 65536
    num_workers: int = 1
    prefetch: int = 4
    tail_policy: Literal["pad", "drop"] = "pad"
    on_bad_file: Literal["error", "skip"] = "error"
    on_non_finite: Literal["error", "fill"] = "error"
    dense: DenseTransformConfig = field(default_factory=DenseTransformConfig)
    vocabularies: dict[str, str] = field(default_factory=dict)
    row_id_column: Optional[str] = "row_id"
    require_labels: bool = True
    file_suffixes: list[str] = field(default_factory=lambda: [".parquet", ".parq", ".pq"])

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError("url: must be a non-empty string")
        for name in ("batch_size", "shuffle_buffer_rows", "num_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch: must be >= 0, got {self.prefetch}")
        if self.tail_policy not in ("pad", "drop"):
            raise ConfigError(f"tail_policy: must be one of ['pad', 'drop'], got {self.tail_policy!r}")
        if self.on_bad_file not in ("error", "skip"):
            raise ConfigError(f"on_bad_file: must be one of ['error', 'skip'], got {self.on_bad_file!r}")
        if isinstance(self.dense, Mapping):
            self.dense = from_dict(DenseTransformConfig, self.dense, "dense")
        _check_partitions(self.partitions)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "data") -> "DataConfig":
        """Strict construction: unknown keys, wrong types and bad values raise ``ConfigError`` naming the key."""
        return from_dict(cls, d, where)
