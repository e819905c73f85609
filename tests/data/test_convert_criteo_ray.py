"""``dist-ctr data convert-criteo --ray`` writes exactly the rows of the single-process converter.

The real Criteo sample (10,000 Kaggle rows) is split into three part files, one gzipped; the single-process
converter writes them to a local directory, the Ray one (two workers, through the CLI) to the loopback S3 server
and, split into byte ranges, to a local directory. Both outputs are read back with pyarrow and compared row by
row after sorting on ``row_id`` (unique, and a value of the row itself: it must match too).
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dist_ctr.cli import main
from dist_ctr.data.criteo import convert_criteo
from tests.object_store import S3_ENV, new_bucket, s3_options

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "criteo" / "criteo_kaggle_head10k.txt.gz"
CUTS = (0, 3000, 7000, 10_000)  # part rows: 3000 (plain), 4000 (gzip), 3000 (plain)


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    """A local Ray of 2 CPUs in a private temp dir; the workers get moto's fake credentials."""
    ray = pytest.importorskip("ray")
    temp = f"/tmp/rcc_{uuid.uuid4().hex[:8]}"  # short: Ray's unix sockets live under it
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp,
             runtime_env={"env_vars": {**S3_ENV, "OMP_NUM_THREADS": "1"}})
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The real sample as three part files (the middle one gzipped)."""
    if not REAL.exists():
        pytest.skip(f"real Criteo sample not found at {REAL} (see /work/shared/data/criteo/README.md)")
    d = tmp_path_factory.mktemp("criteo_parts")
    with gzip.open(REAL, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    assert len(lines) == CUTS[-1]
    out = []
    for i, (a, b) in enumerate(zip(CUTS, CUTS[1:])):
        data = b"".join(lines[a:b])
        p = d / (f"day_{i}.gz" if i == 1 else f"day_{i}.tsv")
        p.write_bytes(gzip.compress(data) if i == 1 else data)
        out.append(str(p))
    return out


def _read(fs: Any, root: str) -> pa.Table:
    files = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(fs.open(p, "rb")) for p in files]).sort_by("row_id")


def _single(parts: list[str], out: Path, **kw: Any) -> pa.Table:
    import fsspec

    rep = convert_criteo(parts, str(out), rows_per_shard=2500, row_group_rows=1000, **kw)
    assert rep.rows == 10_000 and [r["rows"] for r in rep.per_input] == [3000, 4000, 3000]
    return _read(fsspec.filesystem("file"), str(out))


def _assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema and got.column_names[:3] == ["row_id", "label", "I1"]
    assert got.num_rows == want.num_rows == 10_000
    assert got.equals(want)


def test_ray_cli_to_s3_equals_single_process(ray_runtime, parts, tmp_path, s3_server, s3_env, capsys):
    import s3fs

    want = _single(parts, tmp_path / "single")
    fs = s3fs.S3FileSystem(**s3_options(s3_server))
    bucket = new_bucket()
    fs.mkdir(bucket)
    url = f"s3://{bucket}/criteo"
    argv = ["data", "convert-criteo", *parts, "--out", url, "--ray", "--num-workers", "2", "--split-mb", "0",
            "--rows-per-shard", "2500", "--row-group-rows", "1000", "--storage-option", f"endpoint_url={s3_server}"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "converted 10,000 rows from 3 input(s) into 6 file(s)" in out
    assert f"{parts[1]}: 4,000 rows, 0 bad line(s), 2 file(s): part-00001-0000-00000.parquet" in out
    _assert_same(_read(fs, url), want)
    info = json.loads(fs.cat(f"{url}/_convert.json"))
    assert [(r["input"], r["rows"], r["bad_lines"]) for r in info["per_input"]] == \
        [(parts[0], 3000, 0), (parts[1], 4000, 0), (parts[2], 3000, 0)]
    assert info["rows"] == 10_000 and len(info["files"]) == 6

    # a re-run overwrites the same shards: same files, no duplicated rows
    assert main(argv) == 2 and "is not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(url) if p.endswith(".parquet")) == sorted(info["files"])
    _assert_same(_read(fs, url), want)


def test_ray_byte_ranges_and_hashing_equal_single_process(ray_runtime, parts, tmp_path):
    import fsspec

    from dist_ctr.launch.ray_convert import convert_criteo_ray

    want = _single(parts, tmp_path / "single", hash_categoricals=True, vocab_sizes=[1000] * 26)
    (tmp_path / "ray").mkdir()
    stale = tmp_path / "ray" / "part-00009-0000-00000.parquet"  # left by an earlier run with another layout
    shutil.copy(next((tmp_path / "single").glob("*.parquet")), stale)
    rep = convert_criteo_ray(parts, str(tmp_path / "ray"), num_workers=2, rows_per_shard=2500, row_group_rows=1000,
                             hash_categoricals=True, vocab_sizes=[1000] * 26, split_bytes=200_000, overwrite=True)
    assert not stale.exists()
    _assert_same(_read(fsspec.filesystem("file"), str(tmp_path / "ray")), want)
    ranges = [r for r in rep.per_input if r["input"] == parts[0]]
    assert len(ranges) > 1 and sum(r["rows"] for r in ranges) == 3000  # plain file: split at line boundaries
    assert [r["byte_range"] for r in rep.per_input if r["input"] == parts[1]] == [None]  # gzip: one task
    assert rep.rows == 10_000 and rep.positive_rate == pytest.approx(0.2182) and rep.bad_lines == 0


def test_ray_errors_are_one_line(ray_runtime, parts, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    lines = Path(parts[0]).read_bytes().splitlines(keepends=True)[:20]
    lines[6] = b"1\t2\t3\n"
    bad.write_bytes(b"".join(lines))
    base = ["data", "convert-criteo", "--ray", "--num-workers", "2", "--split-mb", "0"]
    assert main([*base, parts[0], str(bad), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dist-ctr: error:") and "bad.tsv: line 7: expected 40" in err and len(err.splitlines()) == 1
    assert main([*base, str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "nope.tsv: input file not found" in err and len(err.splitlines()) == 1
    assert main([*base, parts[0], "--out", str(tmp_path / "o3"), "--num-workers", "0"]) == 2
    assert "num_workers must be >= 1" in capsys.readouterr().err
    assert main(["data", "convert-criteo", parts[0], "--out", str(tmp_path / "o4"), "--num-workers", "2"]) == 2
    assert "go with --ray" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")  # an output "directory" below a file cannot be created
    assert main([*base, parts[0], "--out", str(tmp_path / "a_file" / "out")]) == 2
    err = capsys.readouterr().err
    assert "a_file/out: cannot use the output directory" in err and len(err.splitlines()) == 1
    # skipped lines are counted per input, as the single-process converter counts them
    assert main([*base, parts[0], str(bad), "--out", str(tmp_path / "o5"), "--bad-lines", "skip"]) == 0
    assert f"{bad}: 19 rows, 1 bad line(s)" in capsys.readouterr().out
