"""Each kind of bad input gives a clear error naming the file (row group / column), or is skipped and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dist_ctr.data.config import DataConfig
from dist_ctr.data.errors import (
    BadFileError,
    BadValueError,
    DataPathNotFoundError,
    SchemaMismatchError,
)
from dist_ctr.data.loader import build_loader
from dist_ctr.schema import FeatureSchema, LabelSpec
from tests.data.conftest import tiny_schema, tiny_table, write_tiny_set


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(url=str(root), batch_size=8, shuffle_buffer_rows=16, prefetch=2, **kw)


def _row_ids(loader) -> np.ndarray:
    return np.concatenate([b.row_ids.numpy() for b in loader])


def _good_plus(tmp_path: Path, name: str, writer) -> tuple[Path, Path, int]:
    root = tmp_path / "d"
    n = write_tiny_set(root, file_rows=(20, 12))
    bad = root / name
    writer(bad)
    return root, bad, n


def _retyped(table: pa.Table, column: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def _bad_values(table: pa.Table, column: str, values) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(i).type))


CASES = {
    # name: (writer, error type, text in message, row group named)
    "corrupt": (lambda p: p.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1"), BadFileError, "corrupt", False),
    "truncated": (lambda p: (pq.write_table(tiny_table(16, 1000, 9), p, row_group_size=8),
                             p.write_bytes(p.read_bytes()[:-40])), BadFileError, "truncated", False),
    "empty": (lambda p: p.write_bytes(b""), BadFileError, "empty file", False),
    "missing_column": (lambda p: pq.write_table(tiny_table(16, 1000, 9).drop_columns(["I2"]), p),
                       SchemaMismatchError, "column 'I2': missing column", False),
    "wrong_type": (lambda p: pq.write_table(_retyped(tiny_table(16, 1000, 9), "C1", [str(i) for i in range(16)]), p),
                   SchemaMismatchError, "column 'C1': has type string", False),
    "null_label": (lambda p: pq.write_table(_bad_values(tiny_table(16, 1000, 9), "label", [None] + [0] * 15), p,
                                            row_group_size=8), BadValueError, "column 'label': 1 null label", True),
    "non_binary_label": (lambda p: pq.write_table(_bad_values(tiny_table(16, 1000, 9), "label", [0] * 12 + [2] * 4),
                                                  p, row_group_size=8),
                         BadValueError, "column 'label': binary label must be 0 or 1, got 2.0", True),
    "negative_id": (lambda p: pq.write_table(_bad_values(tiny_table(16, 1000, 9), "C1", [3] * 15 + [-7]), p,
                                             row_group_size=8), BadValueError, "column 'C1': negative id -7", True),
    "id_too_large": (lambda p: pq.write_table(_bad_values(tiny_table(16, 1000, 9), "C1", [50] + [1] * 15), p,
                                              row_group_size=8), BadValueError, "id 50 >= vocabulary_size 50", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_error_names_file(tmp_path, case):
    writer, err, text, names_rg = CASES[case]
    root, bad, _ = _good_plus(tmp_path, "zz-bad.parquet", writer)
    with pytest.raises(err) as ei:
        list(build_loader(tiny_schema(), _cfg(root), seed=0))
    msg = str(ei.value)
    assert str(bad) in msg and text in msg, msg
    assert ei.value.file == str(bad)
    if names_rg:
        assert ei.value.row_group is not None and f"row group {ei.value.row_group}" in msg


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("world_size", [1, 2])
def test_bad_file_skipped_and_reported(tmp_path, case, world_size):
    writer, _err, text, names_rg = CASES[case]
    root, bad, n = _good_plus(tmp_path, "zz-bad.parquet", writer)
    loaders = [build_loader(tiny_schema(), _cfg(root, on_bad_file="skip"), rank=r, world_size=world_size)
               for r in range(world_size)]
    assert len({len(ld) for ld in loaders}) == 1
    ids = np.concatenate([_row_ids(ld) for ld in loaders])
    good = ids[(ids >= 0) & (ids < 1000)]
    assert np.array_equal(np.sort(good), np.arange(n))  # every good row exactly once
    entries = [e for ld in loaders for e in ld.bad_files.entries]
    assert entries and all(e.file == str(bad) and text in e.reason for e in entries)
    if names_rg:  # the bad row group is skipped, the good row group of the same file is read
        bad_rgs = {e.row_group for e in entries}
        assert len(bad_rgs) == 1 and entries[0].rows == 8
        good_rg = 1 - bad_rgs.pop()
        assert np.array_equal(np.sort(ids[ids >= 1000]), np.arange(1000 + 8 * good_rg, 1008 + 8 * good_rg))
    else:
        assert not (ids >= 1000).any()
    # a file rejected while listing is left out by every rank alike (each rank's report lists it once);
    # a bad row group found while reading is reported by the one rank that read it
    counts = [ld.bad_files.count for ld in loaders]
    if names_rg:
        assert sum(counts) == 1
    else:
        assert counts == [1] * world_size
    assert any(str(bad) in ld.bad_files.summary() for ld in loaders)


def test_missing_path(tmp_path):
    with pytest.raises(DataPathNotFoundError, match="no such file or directory") as ei:
        build_loader(tiny_schema(), _cfg(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(ei.value)


def test_directory_without_parquet(tmp_path):
    (tmp_path / "README.txt").write_text("hi")
    with pytest.raises(DataPathNotFoundError, match="no Parquet files"):
        build_loader(tiny_schema(), _cfg(tmp_path))


def test_all_files_bad_under_skip_is_an_error(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(Exception, match="no rows left after skipping"):
        build_loader(tiny_schema(), _cfg(tmp_path, on_bad_file="skip"))


def test_inference_without_labels(tmp_path):
    pq.write_table(tiny_table(10, 0, 1).drop_columns(["label"]), tmp_path / "a.parquet")
    with pytest.raises(SchemaMismatchError, match="column 'label': missing column"):
        build_loader(tiny_schema(), _cfg(tmp_path))
    ld = build_loader(tiny_schema(), _cfg(tmp_path, require_labels=False, shuffle=False))
    b = next(iter(ld))
    assert b.labels.shape == (8, 1) and float(b.labels.abs().sum()) == 0.0


def test_regression_label_accepts_any_finite_value(tmp_path):
    t = tiny_table(10, 0, 1)
    t = _bad_values(t, "label", [5] * 10)
    pq.write_table(t, tmp_path / "a.parquet")
    schema = tiny_schema(labels=(LabelSpec("label", "regression"),))
    b = next(iter(build_loader(schema, _cfg(tmp_path, shuffle=False))))
    assert b.labels[:, 0].tolist() == [5.0] * 8
    with pytest.raises(BadValueError, match="binary label"):
        list(build_loader(tiny_schema(), _cfg(tmp_path)))
    assert isinstance(schema, FeatureSchema)
