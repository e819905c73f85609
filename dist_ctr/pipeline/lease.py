"""A lease on one registry model: at most one retraining run trains and publishes it at a time.

The lease is one object, ``<registry>/<model>/LEASE``: JSON ``{"owner", "acquired", "expires"}``. Taking it is a
compare-and-set on the store, never a read followed by a write:

- ``s3://`` (and S3-compatible stores): ``PutObject`` with ``If-None-Match: *`` creates it only when absent; an
  expired lease is taken over with ``If-Match: <its ETag>``, so of two runs that both saw it expire one wins.
- local paths: ``open(..., "x")`` (``O_EXCL``) creates it; a takeover happens under an ``flock`` on a side file.
- other fsspec stores (``gs://``, ``abfs://``, ...): create-if-absent by existence check and a read-back of the
  owner -- a narrow race remains there; schedule one run per model (a CronJob with ``concurrencyPolicy: Forbid``
  does).

A lease held by another owner and not expired is a :class:`~dist_ctr.errors.RegistryError` naming the owner and
its expiry. The holder renews it every ``ttl_s / 3`` seconds, so only a holder that died (or stalled past the TTL)
loses it; an expired lease is taken over. The holder deletes its lease on exit (only if it still owns it).

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> with hold_lease(root, "m", "run-a", ttl_s=60):
...     hold_lease(root, "m", "run-b", ttl_s=60).__enter__()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dist_ctr.errors.RegistryError: registry lease on model 'm' is held by 'run-a' until ...
>>> with hold_lease(root, "m", "run-b", ttl_s=60):  # released: free again
...     pass
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
from typing import Any, Iterator, Optional

from dist_ctr.errors import RegistryError
from dist_ctr.storage import storage_errors, url_to_fs

__all__ = ["Lease", "hold_lease"]


def _body(owner: str, ttl_s: float) -> bytes:
    now = time.time()
    return json.dumps({"owner": owner, "acquired": now, "expires": now + ttl_s}).encode()


def _held(raw: bytes, url: str) -> dict[str, Any]:
    try:
        info = json.loads(raw)
        float(info["expires"]), str(info["owner"])  # noqa: B018 (the keys a lease needs)
    except (ValueError, KeyError, TypeError):
        return {"owner": "<unreadable lease>", "expires": 0.0}  # a torn lease counts as expired
    return info


def _refuse(model: str, info: dict[str, Any]) -> RegistryError:
    until = _dt.datetime.fromtimestamp(float(info["expires"]), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return RegistryError(f"registry lease on model {model!r} is held by {info['owner']!r} until {until}: another "
                         f"run of this model is in progress (or crashed; its lease expires then)")


def _is_s3(fs: Any) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


def _is_local(fs: Any) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,))


def _acquire_s3(fs: Any, path: str, model: str, owner: str, ttl_s: float) -> None:
    try:
        fs.pipe_file(path, _body(owner, ttl_s), IfNoneMatch="*")
        return
    except FileExistsError:
        pass
    except OSError as e:
        if "pre-condition" not in str(e) and "Precondition" not in str(e):
            raise
    etag = fs.info(path, refresh=True).get("ETag")
    info = _held(fs.cat_file(path), path)
    if float(info["expires"]) > time.time():
        raise _refuse(model, info)
    try:  # expired: take it over only if nobody replaced it since we read it
        fs.pipe_file(path, _body(owner, ttl_s), IfMatch=etag)
    except (FileExistsError, OSError) as e:
        if isinstance(e, FileExistsError) or "pre-condition" in str(e) or "Precondition" in str(e):
            raise _refuse(model, _held(fs.cat_file(path), path)) from None
        raise


def _acquire_local(path: str, model: str, owner: str, ttl_s: float) -> None:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(f"{path}.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            with open(path, "xb") as f:
                f.write(_body(owner, ttl_s))
            return
        except FileExistsError:
            with open(path, "rb") as f:
                info = _held(f.read(), path)
            if float(info["expires"]) > time.time():
                raise _refuse(model, info) from None
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(_body(owner, ttl_s))
            os.replace(tmp, path)  # under the flock: no other taker in between


def _acquire_other(fs: Any, path: str, model: str, owner: str, ttl_s: float) -> None:
    if fs.exists(path):
        info = _held(fs.cat_file(path), path)
        if float(info["expires"]) > time.time():
            raise _refuse(model, info)
    fs.pipe_file(path, _body(owner, ttl_s))
    time.sleep(0.2)
    info = _held(fs.cat_file(path), path)
    if info["owner"] != owner:
        raise _refuse(model, info)


def _renew(fs: Any, path: str, owner: str, ttl_s: float) -> bool:
    """Push the expiry of our lease forward; False when somebody else holds it now (ours expired and was taken)."""
    if _is_local(fs):
        import fcntl

        with open(f"{path}.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                with open(path, "rb") as f:
                    if _held(f.read(), path)["owner"] != owner:
                        return False
            except FileNotFoundError:
                return False
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(_body(owner, ttl_s))
            os.replace(tmp, path)
            return True
    try:
        etag = fs.info(path, refresh=True).get("ETag") if _is_s3(fs) else None
        if _held(fs.cat_file(path), path)["owner"] != owner:
            return False
        if etag is not None:
            fs.pipe_file(path, _body(owner, ttl_s), IfMatch=etag)
        else:
            fs.pipe_file(path, _body(owner, ttl_s))
        return True
    except (FileNotFoundError, FileExistsError):
        return False
    except OSError as e:
        if "pre-condition" in str(e) or "Precondition" in str(e):
            return False
        raise


def _release(fs: Any, path: str, owner: str) -> None:
    try:
        if _held(fs.cat_file(path), path)["owner"] == owner:
            fs.rm_file(path)
    except FileNotFoundError:
        pass


class Lease:
    """A held lease. A daemon thread renews it every ``ttl_s / 3`` seconds, so a long run keeps it; when a renewal
    finds another owner (this process stalled past the TTL and a second run took over), :meth:`check` raises
    before anything is published."""

    def __init__(self, fs: Any, path: str, url: str, model: str, owner: str, ttl_s: float) -> None:
        self.fs, self.path, self.url, self.model, self.owner, self.ttl_s = fs, path, url, model, owner, ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{model}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.ttl_s / 3.0, 0.1)):
            try:
                if not _renew(self.fs, self.path, self.owner, self.ttl_s):
                    self.lost = True
                    return
            except Exception:  # a failed renewal is retried at the next beat; the expiry still covers it
                continue

    def check(self) -> None:
        """Raise :class:`RegistryError` when the lease was lost (call before writing to the registry)."""
        if self.lost:
            raise RegistryError(f"{self.url}: lost the registry lease on model {self.model!r} (it expired and "
                                f"another run took it); nothing was published by {self.owner!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextlib.contextmanager
def hold_lease(registry_url: str, model: str, owner: str, ttl_s: float,
               storage_options: Optional[dict[str, Any]] = None) -> Iterator[Lease]:
    """Hold the lease on ``model`` in the registry at ``registry_url`` for the block (see the module docstring).

    Args:
        registry_url: the registry root (any fsspec URL).
        model: the model name (a path segment).
        owner: who holds it (printed to a refused contender): e.g. ``retrain-ctr-2026-11-05-<ns>``.
        ttl_s: seconds after which a lease that stopped being renewed (its holder crashed) may be taken over.
        storage_options: fsspec options of the registry's store.

    Yields:
        Lease: call ``check()`` before each registry write.

    Raises:
        RegistryError: another owner holds an unexpired lease.
        StorageError: the store cannot be reached or refuses.
    """
    url = f"{registry_url.rstrip('/')}/{model}/LEASE"
    fs, path = url_to_fs(url, storage_options, key="retrain.registry")
    with storage_errors(url, "take the registry lease"):
        if _is_s3(fs):
            _acquire_s3(fs, path, model, owner, ttl_s)
        elif _is_local(fs):
            _acquire_local(path, model, owner, ttl_s)
        else:
            _acquire_other(fs, path, model, owner, ttl_s)
    lease = Lease(fs, path, url, model, owner, ttl_s)
    try:
        yield lease
    finally:
        lease.stop()
        with storage_errors(url, "release the registry lease"):
            _release(fs, path, owner)
