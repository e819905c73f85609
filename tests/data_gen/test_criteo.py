"""Criteo TSV -> Parquet: round trip, hashing, .gz, bad lines, sharding, the real Kaggle sample."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from dist_ctr.data.criteo import CRITEO_COLUMNS, convert_criteo
from dist_ctr.data.errors import DataError
from dist_ctr.schema import FeatureSchema, stable_hash

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "criteo" / "criteo_kaggle_head10k.txt.gz"


def _row(i: int, rng: np.random.Generator) -> list[str]:
    label = str(i % 2)
    ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-1, 5000))) for _ in range(13)]
    cats = ["" if rng.random() < 0.15 else f"{int(rng.integers(0, 2**32)):08x}" for _ in range(26)]
    return [label, *ints, *cats]


def _rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [_row(i, rng) for i in range(n)]


def _write(path: Path, rows: list[list[str]], gz: bool = False, extra: dict[int, str] | None = None) -> Path:
    lines = ["\t".join(r) for r in rows]
    for at, line in (extra or {}).items():
        lines.insert(at, line)
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def _read(root: Path):
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in sorted(root.glob("part-*.parquet"))])


def _expected(rows: list[list[str]], name: str) -> list:
    j = CRITEO_COLUMNS.index(name)
    vals = [r[j] for r in rows]
    if name.startswith("C"):
        return [v or None for v in vals]
    return [int(v) if v else None for v in vals]


def test_round_trip_values_equal_the_tsv(tmp_path):
    rows = _rows(57)
    src = _write(tmp_path / "day_0", rows)
    rep = convert_criteo([str(src)], str(tmp_path / "out"), rows_per_shard=20, row_group_rows=8)
    t = _read(tmp_path / "out")
    assert t.column_names == ["row_id", *CRITEO_COLUMNS]
    assert t.column("row_id").to_pylist() == list(range(57))
    for name in ("label", "I1", "I2", "I13", "C1", "C7", "C26"):
        assert t.column(name).to_pylist() == _expected(rows, name), name
    assert rep.rows == 57 and rep.bad_lines == 0
    assert rep.positive_rate == pytest.approx(28 / 57)
    # 57 rows at 20 per shard -> 3 files; row groups of 8 (the last of each shard shorter)
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [20, 20, 17]
    assert [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in files[:1] for i in range(3)] == [8, 8, 4]
    assert rep.files == [f.name for f in files] and rep.bytes == sum(f.stat().st_size for f in files)
    s = FeatureSchema.load(tmp_path / "out" / "schema.yaml")
    assert s.feature("C1").use_hash and len(s.sparse_names) == 26


def test_hashed_ids_equal_stable_hash_of_the_hex(tmp_path):
    rows = _rows(40, seed=1)
    src = _write(tmp_path / "x.tsv", rows)
    vocab = [97 + k for k in range(26)]
    convert_criteo(str(src), str(tmp_path / "out"), hash_categoricals=True, vocab_sizes=vocab)
    t = _read(tmp_path / "out")
    for j, name in enumerate(f"C{i}" for i in range(1, 27)):
        hexes = [r[CRITEO_COLUMNS.index(name)] for r in rows]  # missing -> "" (as the loader hashes nulls)
        assert t.column(name).to_pylist() == stable_hash(hexes, vocab[j]).tolist(), name
        assert t.column(name).type.bit_width == 32
    assert t.column("I3").to_pylist() == _expected(rows, "I3")
    info = json.loads((tmp_path / "out" / "_convert.json").read_text())
    assert info["hash_categoricals"] is True and info["vocab_sizes"] == vocab


def test_gzip_equals_plain_and_row_ids_continue_across_inputs(tmp_path):
    a, b = _rows(30, seed=2), _rows(25, seed=3)
    pa_ = _write(tmp_path / "day_0", a)
    pb = _write(tmp_path / "day_1.gz", b, gz=True)
    _write(tmp_path / "day_1", b)
    convert_criteo([str(pa_), str(pb)], str(tmp_path / "gz"), row_id_start=1000)
    convert_criteo([str(pa_), str(tmp_path / "day_1")], str(tmp_path / "plain"), row_id_start=1000)
    tg, tp = _read(tmp_path / "gz"), _read(tmp_path / "plain")
    assert tg.equals(tp)
    assert tg.column("row_id").to_pylist() == list(range(1000, 1055))
    assert tg.column("C2").to_pylist() == _expected(a + b, "C2")


def test_bad_line_error_names_file_and_line(tmp_path):
    rows = _rows(6)
    src = _write(tmp_path / "bad.tsv", rows, extra={3: "1\t2\t3"})  # physical line 4 has 3 fields
    with pytest.raises(DataError, match=r"bad\.tsv: line 4: expected 40 tab-separated fields .* got 3"):
        convert_criteo(str(src), str(tmp_path / "o1"))
    rep = convert_criteo(str(src), str(tmp_path / "o2"), bad_lines="skip")
    assert rep.bad_lines == 1 and rep.rows == 6 and "line 4" in rep.bad_line_examples[0]
    assert _read(tmp_path / "o2").column("C5").to_pylist() == _expected(rows, "C5")


def test_bad_gzip_and_bad_values_and_missing_input_are_named(tmp_path):
    good = gzip.compress(("\t".join(_rows(1)[0]) + "\n").encode() * 2000)
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        convert_criteo(str(tmp_path / "cut.gz"), str(tmp_path / "o1"))
    r = _rows(2)
    r[1][3] = "abc"  # I3 is not an integer
    _write(tmp_path / "v.tsv", r)
    with pytest.raises(DataError, match=r"v\.tsv: not Criteo TSV"):
        convert_criteo(str(tmp_path / "v.tsv"), str(tmp_path / "o2"))
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        convert_criteo(str(tmp_path / "nope.tsv"), str(tmp_path / "o3"))


def test_kaggle_test_file_without_label_is_explained(tmp_path):
    src = _write(tmp_path / "test.txt", [r[1:] for r in _rows(3)])
    with pytest.raises(DataError, match="line 1: .* got 39.*test.txt has no label"):
        convert_criteo(str(src), str(tmp_path / "o"))


def test_refuses_non_empty_output_and_bad_options(tmp_path):
    src = _write(tmp_path / "a.tsv", _rows(3))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        convert_criteo(str(src), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="bad_lines"):
        convert_criteo(str(src), str(tmp_path / "o"), bad_lines="ignore")
    with pytest.raises(ValueError, match="26 positive sizes"):
        convert_criteo(str(src), str(tmp_path / "o"), hash_categoricals=True, vocab_sizes=[10])


def test_memory_input_and_output(tmp_path):
    rows = _rows(12)
    src = _write(tmp_path / "a.tsv.gz", rows, gz=True)
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe("/dist_ctr_criteo_test/in/day_0.gz", src.read_bytes())  # a non-local input: read through fsspec
        rep = convert_criteo("memory://dist_ctr_criteo_test/in/day_0.gz", "memory://dist_ctr_criteo_test/out",
                             rows_per_shard=5)
        parts = sorted(p for p in fs.find("/dist_ctr_criteo_test/out") if p.endswith(".parquet"))
        assert len(parts) == 3 == len(rep.files)
        import pyarrow as pa

        t = pa.concat_tables([pq.read_table(fs.open(p, "rb")) for p in parts])
        assert t.num_rows == 12 and t.column("C9").to_pylist() == _expected(rows, "C9")
    finally:
        fsspec.filesystem("memory").rm("/dist_ctr_criteo_test", recursive=True)


def test_cli_convert_prints_the_summary(tmp_path, capsys):
    from dist_ctr.cli import main

    src = _write(tmp_path / "a.tsv", _rows(9))
    rc = main(["data", "convert-criteo", str(src), "--out", str(tmp_path / "o"), "--hash", "--vocab-sizes",
               "criteo-kaggle", "--rows-per-shard", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "converted 9 rows from 1 input(s) into 3 file(s)" in out and "hashed to ids" in out
    bad = _write(tmp_path / "b.tsv", _rows(2), extra={1: "x"})
    assert main(["data", "convert-criteo", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "b.tsv: line 2" in capsys.readouterr().err


def test_real_kaggle_sample():
    if not REAL.exists():
        pytest.skip(f"real Criteo sample not found at {REAL} (see /work/shared/data/criteo/README.md)")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rep = convert_criteo(str(REAL), d, rows_per_shard=4000, row_group_rows=1000, hash_categoricals=True,
                             vocab_sizes=[1000] * 26)
        assert rep.rows == 10_000 and rep.bad_lines == 0 and len(rep.files) == 3
        assert rep.positive_rate == pytest.approx(0.2182)  # README: 2,182 positives
        t = _read(Path(d))
        with gzip.open(REAL, "rt") as fh:
            lines = [ln.rstrip("\n").split("\t") for ln in fh]
        assert {len(x) for x in lines} == {40}
        for name in ("label", "I2", "I12", "I13"):  # every value, parsed independently
            assert t.column(name).to_pylist() == _expected(lines, name), name
        for j in (0, 21, 25):  # C1, C22 (often missing), C26
            name = f"C{j + 1}"
            assert t.column(name).to_pylist() == stable_hash([x[14 + j] for x in lines], 1000).tolist(), name
        assert t.column("I12").null_count / t.num_rows > 0.5  # README: I12 is 77 % missing
