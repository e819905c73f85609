"""Fixtures shared by every test package: the loopback object-store servers of :mod:`tests.object_store`."""

from __future__ import annotations

from tests.object_store import gcs_server, s3_env, s3_server  # noqa: F401  (fixtures)
