"""ParquetSource: files and directory trees on local paths, file:// and memory://, Hive partitions."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from dist_ctr.data.errors import DataError, DataPathNotFoundError
from dist_ctr.data.source import ParquetSource, partition_matches
from tests.data.conftest import FILE_ROWS, ROW_GROUP, tiny_table


def test_directory_tree_units(tiny_set):
    root, n = tiny_set
    (root / "_SUCCESS").write_text("")
    (root / "_tmp").mkdir()
    pq.write_table(tiny_table(5, 0, 0), root / "_tmp" / "x.parquet")
    (root / "notes.txt").write_text("not parquet")
    src = ParquetSource(str(root))
    units = src.units()
    assert src.total_rows == n == sum(FILE_ROWS)
    assert len(units) == sum(-(-r // ROW_GROUP) for r in FILE_ROWS)
    assert [u.start for u in units] == [sum(x.num_rows for x in units[:i]) for i in range(len(units))]
    assert all(u.num_rows <= ROW_GROUP for u in units)
    assert units[-1].file.endswith("sub/part-002.parquet")


def test_single_file_and_file_url_and_memory(tiny_set):
    root, _ = tiny_set
    one = root / "part-000.parquet"
    plain = ParquetSource(str(one)).units()
    assert sum(u.num_rows for u in plain) == FILE_ROWS[0] and plain[0].file == str(one)
    via_url = ParquetSource(f"file://{root}").units()
    assert [(u.row_group, u.num_rows) for u in via_url] == [(u.row_group, u.num_rows) for u in ParquetSource(str(root)).units()]
    assert via_url[0].file.startswith("file://")
    mem = fsspec.filesystem("memory")
    mem.put(str(root), "/tinymem", recursive=True)
    try:
        m = ParquetSource("memory://tinymem").units()
        assert [(u.row_group, u.num_rows) for u in m] == [(u.row_group, u.num_rows) for u in via_url]
        assert m[0].file.startswith("memory://")
        t = ParquetSource("memory://tinymem").read(m[0], ["row_id"])
        assert t.column("row_id").to_pylist() == list(range(ROW_GROUP))
    finally:
        mem.rm("/tinymem", recursive=True)


def _partitioned(root: Path) -> None:
    for day in range(18, 22):
        for hour in (3, 10):
            d = root / f"date=2026-11-{day}" / f"hour={hour}"
            d.mkdir(parents=True)
            pq.write_table(tiny_table(4, 0, day), d / "part-0.parquet")


@pytest.mark.parametrize("flt, expect", [
    ({"date": "2026-11-20"}, {("2026-11-20", "3"), ("2026-11-20", "10")}),
    ({"date": ["2026-11-18", "2026-11-21"], "hour": 10}, {("2026-11-18", "10"), ("2026-11-21", "10")}),
    ({"date": {"min": "2026-11-19", "max": "2026-11-20"}, "hour": {"min": 4}}, {("2026-11-19", "10"), ("2026-11-20", "10")}),
    ({"hour": {"max": 9}}, {(f"2026-11-{d}", "3") for d in range(18, 22)}),
])
def test_hive_partition_filters(tmp_path, flt, expect):
    _partitioned(tmp_path)
    units = ParquetSource(str(tmp_path), partitions=flt).units()
    assert {tuple(v for _, v in u.partition) for u in units} == expect


def test_partition_numeric_compare():
    assert partition_matches({"hour": "10"}, {"hour": {"min": 9}})  # 10 >= 9 as numbers ("10" < "9" as strings)


def test_partition_errors(tmp_path):
    _partitioned(tmp_path)
    with pytest.raises(DataError, match=r"partition key\(s\) \['day'\] do not occur"):
        ParquetSource(str(tmp_path), partitions={"day": "1"}).units()
    with pytest.raises(DataPathNotFoundError, match="no file matches the partition filter"):
        ParquetSource(str(tmp_path), partitions={"date": "2030-01-01"}).units()


def test_storage_options_not_in_repr(tmp_path):
    src = ParquetSource(str(tmp_path), storage_options={"auto_mkdir": True})
    assert "auto_mkdir" not in repr(src)


def test_fingerprint_changes_with_listing(tiny_set):
    root, _ = tiny_set
    a = ParquetSource(str(root)).fingerprint()
    assert a == ParquetSource(str(root)).fingerprint()
    pq.write_table(tiny_table(3, 500, 1), root / "part-new.parquet")
    assert ParquetSource(str(root)).fingerprint() != a
