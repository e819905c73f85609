"""Storage failures at the doors that read or write checkpoints, model files and outputs, as one
:class:`~dist_ctr.errors.StorageError` line naming the URL.

fsspec back ends raise their own exceptions (botocore's ``EndpointConnectionError`` / ``ClientError``, aiohttp's
connection errors, s3fs / gcsfs ``OSError`` subclasses); :func:`storage_errors` turns any of them into a
``StorageError`` that says what was being done and where. Errors of the project's own family pass unchanged.

>>> with storage_errors("s3://no-such-bucket/ck", "list checkpoints"):
...     raise PermissionError(13, "Access Denied")
Traceback (most recent call last):
...
dist_ctr.errors.StorageError: s3://no-such-bucket/ck: cannot list checkpoints: permission denied ([Errno 13] Access Denied)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from dist_ctr.errors import DistCtrError, StorageError

__all__ = ["is_storage_exception", "storage_errors", "check_writable", "url_to_fs"]

_STORAGE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "fsspec", "google", "urllib3",
                    "requests", "adlfs", "azure")


def is_storage_exception(e: BaseException) -> bool:
    """Whether ``e`` comes from a file system or an object-store client (not from the project's own code)."""
    if isinstance(e, DistCtrError):
        return False
    if isinstance(e, OSError):
        return True
    return any(type(c).__module__.split(".")[0] in _STORAGE_MODULES for c in (e, e.__cause__, e.__context__)
               if c is not None)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        return f"permission denied ({text})"
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"the bucket does not exist ({text})"
    if isinstance(e, FileNotFoundError):
        return f"not found ({text})"
    if isinstance(e, ConnectionError) or "connect" in text.lower() or "Endpoint" in type(e).__name__:
        return f"storage endpoint unreachable ({text})"
    return f"{type(e).__name__}: {text}"


@contextlib.contextmanager
def storage_errors(url: str, what: str = "access it") -> Iterator[None]:
    """Translate storage exceptions raised inside the block into ``StorageError("<url>: cannot <what>: ...")``."""
    try:
        yield
    except DistCtrError:
        raise
    except Exception as e:
        if not is_storage_exception(e):
            raise
        raise StorageError(f"{url}: cannot {what}: {_reason(e)}") from e


def url_to_fs(url: str, storage_options: Optional[dict[str, Any]] = None, *, key: str = "URL") -> tuple[Any, str]:
    """``fsspec.core.url_to_fs`` with an unknown scheme, a missing back-end package or bad options as one
    ``StorageError`` naming the config ``key`` and the URL.

    >>> url_to_fs("nosuch://bucket/x", key="distributed.ray.storage_path")
    Traceback (most recent call last):
    ...
    dist_ctr.errors.StorageError: distributed.ray.storage_path: 'nosuch://bucket/x': Protocol not known: nosuch
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ValueError, ImportError, TypeError) as e:
        raise StorageError(f"{key}: {url!r}: {e}") from e


def check_writable(url: str, storage_options: Optional[dict[str, Any]] = None) -> None:
    """Fail now, before any work, when ``url`` cannot be written: its parent is a plain file, its bucket does not
    exist, or the store refuses. Creates the parent directory (a no-op on object stores). Nothing is left at
    ``url`` itself.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    path = path.rstrip("/")
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    with storage_errors(url, "write the output"):
        if fs.isdir(path):
            raise StorageError(f"{url}: cannot write the output: it is a directory")
        node = parent
        while node and not fs.exists(node):  # the nearest existing ancestor must be a directory
            node = node.rsplit("/", 1)[0] if "/" in node.strip("/") else ""
        if node and not fs.isdir(node):
            raise StorageError(f"{url}: cannot write the output: {node} is a file, not a directory")
        _check_bucket(fs, path, url)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        probe = f"{path}.write-check"
        with fs.open(probe, "wb") as f:
            f.write(b"")
        fs.rm(probe)


def _check_bucket(fs: Any, path: str, url: str) -> None:
    """On object stores: the bucket (first path segment) must exist."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("s3", "s3a", "gs", "gcs", "az", "abfs"):
        return
    bucket = path.split("/", 1)[0]
    if not fs.exists(bucket):
        raise StorageError(f"{url}: cannot write the output: the bucket {bucket!r} does not exist")
