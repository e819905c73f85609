"""Fixtures of the data tests: a tiny schema, a tiny Parquet set under ``tmp_path``, a loopback S3 server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat


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


@pytest.fixture
def schema() -> FeatureSchema:
    return tiny_schema()


@pytest.fixture
def tiny_set(tmp_path: Path) -> tuple[Path, int]:
    root = tmp_path / "tiny"
    return root, write_tiny_set(root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_server() -> Any:
    """moto's S3 server on 127.0.0.1 (one per session). Yields ``endpoint_url``; credentials are set only while a
    test uses :func:`s3_env`."""
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options for the loopback server: short timeouts, one attempt (errors must not hang)."""
    return {"endpoint_url": endpoint, "config_kwargs": {"connect_timeout": 2, "read_timeout": 5,
                                                        "retries": {"max_attempts": 1}},
            "skip_instance_cache": True}


@pytest.fixture
def s3_bucket(s3_server: str, s3_env: None, tiny_set: tuple[Path, int]) -> tuple[str, str, int]:
    """A fresh bucket holding the tiny set, uploaded with s3fs. Returns (s3 URL, endpoint, rows)."""
    import uuid

    import s3fs

    root, rows = tiny_set
    fs = s3fs.S3FileSystem(**s3_options(s3_server))
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.put(str(root), f"{bucket}/tiny", recursive=True)
    return f"s3://{bucket}/tiny", s3_server, rows
