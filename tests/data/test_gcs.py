"""Training data and checkpoints through ``gs://`` on a GCS emulator (gcp-storage-emulator, loopback): the same
code path as local paths and ``s3://`` (fsspec + gcsfs), the same rows, the same errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dist_ctr.data.errors import DataPathNotFoundError
from dist_ctr.data.source import ParquetSource
from tests.data.conftest import assert_same_batches, loader_batches, tiny_table
from tests.object_store import gcs_options, new_bucket

DATES = ("2026-11-19", "2026-11-20", "2026-11-21")
DATE_ROWS = (21, 34, 17)


def _gcsfs(endpoint: str):
    import gcsfs

    return gcsfs.GCSFileSystem(**gcs_options(endpoint))


def _upload(endpoint: str, local: Path, name: str) -> str:
    """Upload the directory ``local`` into a fresh bucket; returns its ``gs://bucket/name`` URL."""
    fs = _gcsfs(endpoint)
    bucket = new_bucket()
    fs.mkdir(bucket)
    fs.put(str(local), f"{bucket}/{name}", recursive=True)
    return f"gs://{bucket}/{name}"


@pytest.fixture
def gcs_bucket(gcs_server: str, tiny_set: tuple[Path, int]) -> tuple[str, str, int]:
    """A fresh bucket holding the tiny set, uploaded with gcsfs. Returns (gs URL, endpoint, rows)."""
    root, rows = tiny_set
    return _upload(gcs_server, root, "tiny"), gcs_server, rows


def _write_partitioned(root: Path) -> dict[str, np.ndarray]:
    """One file per ``date=...`` directory; returns each date's row ids."""
    ids, start = {}, 0
    for i, (date, n) in enumerate(zip(DATES, DATE_ROWS)):
        (root / f"date={date}").mkdir(parents=True)
        pq.write_table(tiny_table(n, start, seed=20 + i), root / f"date={date}" / "part-0.parquet", row_group_size=8)
        ids[date] = np.arange(start, start + n)
        start += n
    return ids


def _all_row_ids(batches: list) -> np.ndarray:
    ids = torch.cat([b.row_ids for b in batches]).numpy()
    return np.sort(ids[ids >= 0])  # pad rows have row id -1


def test_gcs_batches_equal_local(schema, tiny_set, gcs_bucket):
    url, endpoint, rows = gcs_bucket
    root, _ = tiny_set
    opts = gcs_options(endpoint)
    src = ParquetSource(url, opts)
    assert all(u.file.startswith(f"{url}/") for u in src.units())
    local_src = ParquetSource(str(root))
    assert [(u.row_group, u.num_rows, u.start) for u in src.units()] == \
           [(u.row_group, u.num_rows, u.start) for u in local_src.units()]
    seen = []
    for rank in range(2):
        remote = loader_batches(schema, url, opts, world_size=2, rank=rank)
        assert_same_batches(remote, loader_batches(schema, str(root), {}, world_size=2, rank=rank))
        seen.append(_all_row_ids(remote))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(rows))  # every row of the set, once


def test_gcs_hive_partition_filter(schema, tmp_path, gcs_server):
    local = tmp_path / "parts"
    ids = _write_partitioned(local)
    url = _upload(gcs_server, local, "parts")
    opts = gcs_options(gcs_server)
    flt = {"date": {"min": "2026-11-20"}}
    src = ParquetSource(url, opts, partitions=flt)
    assert {u.partition for u in src.units()} == {(("date", "2026-11-20"),), (("date", "2026-11-21"),)}
    assert src.total_rows == DATE_ROWS[1] + DATE_ROWS[2]
    assert ParquetSource(url, opts, partitions={"date": ["2026-11-19"]}).total_rows == DATE_ROWS[0]

    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader

    def rows(u: str, o: dict) -> np.ndarray:
        cfg = DataConfig(url=u, storage_options=o, partitions=flt, batch_size=16, shuffle_buffer_rows=24)
        return _all_row_ids(list(build_loader(schema, cfg, seed=4, epoch=1)))

    remote = rows(url, opts)
    assert np.array_equal(remote, np.concatenate([ids["2026-11-20"], ids["2026-11-21"]]))
    assert np.array_equal(remote, rows(str(local), {}))


def test_gcs_missing_bucket_or_object_is_a_clear_error(gcs_bucket):
    url, endpoint, _ = gcs_bucket
    opts = gcs_options(endpoint)
    bucket = url.split("/")[2]
    for missing in (f"gs://{new_bucket('absent')}/tiny", f"{url}/no-such-part.parquet", f"gs://{bucket}/absent/"):
        with pytest.raises(DataPathNotFoundError) as ei:
            ParquetSource(missing, opts).units()
        assert missing in str(ei.value) and "no such file or directory" in str(ei.value)


@pytest.fixture(scope="module")
def env():
    from dist_ctr.distributed.env import DistEnv, init_process_group

    e = DistEnv()
    init_process_group(e)
    return e


def test_gcs_checkpoint_roundtrip_resumes_exactly(env, gcs_server):
    """Trainer checkpoints (DCP shards, loader cursors, COMMITTED marker) on gs://: save, list, load, continue."""
    from dist_ctr.models import build_model
    from dist_ctr.train import checkpoint as ckpt
    from dist_ctr.train.engine import Trainer
    from tests.distributed.equivalence_jobs import global_batches, tiny_schema

    def trainer(seed: int) -> Trainer:
        torch.manual_seed(seed)
        return Trainer(build_model("LogisticRegression", tiny_schema(), None), env, seed=seed)

    def losses(h) -> list[float]:
        return [s["loss"] for s in h.steps if "loss" in s]

    opts = gcs_options(gcs_server)
    root = f"gs://{new_bucket()}/ck"
    _gcsfs(gcs_server).mkdir(root.split("/")[2])
    data = global_batches(tiny_schema(), 4, 16)
    ref = losses(trainer(0).fit(data, epochs=2, progress=False, log_every=1))
    trainer(0).fit(data, epochs=1, progress=False, log_every=1, checkpoint_root=root, checkpoint_every=2,
                   checkpoint_keep=1, storage_options=opts)
    cps = ckpt.list_checkpoints(root, opts)
    assert [c.step for c in cps] == [4] and cps[0].url == f"{root}/step_00000004"  # keep=1 removed step 2
    names = {p.rsplit("/", 1)[-1] for p in _gcsfs(gcs_server).find(cps[0].url[len("gs://"):])}
    assert {ckpt.MARKER, ".metadata"} <= names and any(n.endswith(".distcp") for n in names)
    b = trainer(12345)  # another init: the load must overwrite it
    meta = b.load(cps[0].url, storage_options=opts)
    assert meta["step"] == 4 and b.global_step == 4 and b.epoch == 1
    assert losses(b.fit(data, epochs=2, progress=False, log_every=1)) == pytest.approx(ref[4:], abs=1e-6)
