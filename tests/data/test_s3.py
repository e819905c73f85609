"""Training data through ``s3://`` on a real S3-compatible server (moto, loopback): same code path as local."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dist_ctr.data.config import DataConfig
from dist_ctr.data.errors import StorageAccessError
from dist_ctr.data.loader import build_loader
from dist_ctr.data.source import ParquetSource
from tests.data.conftest import assert_same_batches, loader_batches
from tests.object_store import s3_options


def test_s3_batches_equal_local(schema, tiny_set, s3_bucket):
    url, endpoint, rows = s3_bucket
    root, _ = tiny_set
    opts = s3_options(endpoint)
    src = ParquetSource(url, opts)
    assert all(u.file.startswith("s3://") for u in src.units())
    assert src.total_rows == rows
    for rank in range(2):
        remote = loader_batches(schema, url, opts, world_size=2, rank=rank)
        local = loader_batches(schema, str(root), {}, world_size=2, rank=rank)
        assert_same_batches(remote, local)


def test_s3_resume_cursor_roundtrip(schema, s3_bucket):
    url, endpoint, rows = s3_bucket
    cfg = DataConfig(url=url, storage_options=s3_options(endpoint), batch_size=16, shuffle_buffer_rows=24)
    ld = build_loader(schema, cfg, seed=9)
    it = iter(ld)
    first = [next(it).row_ids for _ in range(3)]
    state = ld.state_dict()
    del it
    ld2 = build_loader(schema, cfg, seed=9)
    ld2.load_state_dict(state)
    ids = torch.cat(first + [b.row_ids for b in ld2]).numpy()
    assert np.array_equal(np.sort(ids[ids >= 0]), np.arange(rows))


def test_s3_missing_credentials_is_a_fast_clear_error(s3_server, s3_bucket, monkeypatch):
    url, endpoint, _ = s3_bucket
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    t0 = time.perf_counter()
    with pytest.raises(StorageAccessError) as ei:
        ParquetSource(url, s3_options(endpoint)).units()
    assert time.perf_counter() - t0 < 20
    msg = str(ei.value)
    assert url in msg and "credentials" in msg.lower()
    assert "testing" not in msg  # no secrets in messages


def test_s3_storage_options_never_in_messages(s3_bucket):
    url, endpoint, _ = s3_bucket
    opts = {**s3_options(endpoint), "key": "AKIDSECRETKEY", "secret": "hunter2"}
    src = ParquetSource(url + "-missing", opts)
    with pytest.raises(FileNotFoundError) as ei:
        src.units()
    assert "hunter2" not in str(ei.value) and "AKIDSECRETKEY" not in str(ei.value)
    assert "hunter2" not in repr(src) and "hunter2" not in repr(DataConfig(url=url, storage_options=opts))
