"""Fixtures of the data tests: a tiny schema, a tiny Parquet set under ``tmp_path``, a bucket holding it on the
loopback S3 server (the servers themselves are in :mod:`tests.object_store`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat
from tests.object_store import new_bucket, s3_options


def tiny_schema(labels: tuple[LabelSpec, ...] = (LabelSpec("label"),)) -> FeatureSchema:
    """Two single-valued features (ids, hashed hex strings), one list feature, two dense, one binary label."""
    return FeatureSchema(
        features=(
            SparseFeat("C1", vocabulary_size=50, embedding_dim=4),
            SparseFeat("C2", vocabulary_size=1000, embedding_dim=4, use_hash=True, dtype="string"),
            VarLenSparseFeat(SparseFeat("hist", vocabulary_size=20, embedding_dim=4), maxlen=3),
            DenseFeat("I1"),
            DenseFeat("I2"),
        ),
        labels=labels,
    )


def tiny_table(n: int, start: int, seed: int) -> pa.Table:
    """``n`` rows with row ids ``start .. start + n - 1``; ``I2`` has nulls, ``hist`` has null and long lists."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 6, n)
    hist = [rng.integers(0, 20, k).tolist() for k in lens]
    hist[0] = None
    i2 = rng.normal(size=n)
    return pa.table({
        "row_id": pa.array(np.arange(start, start + n), pa.int64()),
        "C1": pa.array(rng.integers(0, 50, n), pa.int64()),
        "C2": pa.array([f"{v:08x}" for v in rng.integers(0, 2**32, n)], pa.string()),
        "hist": pa.array(hist, pa.list_(pa.int64())),
        "I1": pa.array(rng.integers(0, 100, n).astype(np.float64)),
        "I2": pa.array(i2, mask=rng.random(n) < 0.2),
        "label": pa.array(rng.integers(0, 2, n), pa.int64()),
    })


FILE_ROWS = (37, 29, 50)
ROW_GROUP = 8


def write_tiny_set(root: Path, file_rows: tuple[int, ...] = FILE_ROWS, row_group_size: int = ROW_GROUP,
                   seed: int = 0) -> int:
    """Write ``len(file_rows)`` Parquet files (one in a sub-directory) under ``root``; returns the total rows."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(file_rows):
        sub = root / "sub" if i == len(file_rows) - 1 else root
        sub.mkdir(parents=True, exist_ok=True)
        pq.write_table(tiny_table(n, start, seed + i), sub / f"part-{i:03d}.parquet", row_group_size=row_group_size)
        start += n
    return start


def loader_batches(schema: FeatureSchema, url: str, storage_options: dict[str, Any], world_size: int = 1,
                   rank: int = 0) -> list[Any]:
    """Every batch of one epoch of ``build_loader`` on ``url`` for one rank (fixed seed, 2 reader workers)."""
    from dist_ctr.data.config import DataConfig
    from dist_ctr.data.loader import build_loader

    cfg = DataConfig(url=url, storage_options=storage_options, batch_size=16, shuffle_buffer_rows=24, num_workers=2)
    return list(build_loader(schema, cfg, rank=rank, world_size=world_size, seed=4, epoch=1))


def assert_same_batches(remote: list[Any], local: list[Any]) -> None:
    """Two loader runs gave the same batches: row ids, dense, labels, sparse values and lengths, bit for bit."""
    import torch

    assert len(remote) == len(local) > 0
    for a, b in zip(remote, local):
        assert torch.equal(a.row_ids, b.row_ids)
        assert torch.equal(a.dense, b.dense)
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.sparse.values(), b.sparse.values())
        assert torch.equal(a.sparse.lengths(), b.sparse.lengths())


@pytest.fixture
def schema() -> FeatureSchema:
    return tiny_schema()


@pytest.fixture
def tiny_set(tmp_path: Path) -> tuple[Path, int]:
    root = tmp_path / "tiny"
    return root, write_tiny_set(root)


@pytest.fixture
def s3_bucket(s3_server: str, s3_env: None, tiny_set: tuple[Path, int]) -> tuple[str, str, int]:
    """A fresh bucket holding the tiny set, uploaded with s3fs. Returns (s3 URL, endpoint, rows)."""
    import s3fs

    root, rows = tiny_set
    fs = s3fs.S3FileSystem(**s3_options(s3_server))
    bucket = new_bucket()
    fs.mkdir(bucket)
    fs.put(str(root), f"{bucket}/tiny", recursive=True)
    return f"s3://{bucket}/tiny", s3_server, rows
