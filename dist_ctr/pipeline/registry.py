"""A model registry on any fsspec URL: versions, a published pointer, an append-only event log, a lease.

Layout under the registry root (``s3://bucket/models``, ``gs://...``, a local directory)::

    <model>/v000001/model.pt          the exported single-process model (weights-only; what ``dist-ctr predict`` reads)
    <model>/v000001/checkpoint/       the sharded DCP training checkpoint (what the next warm start reads)
    <model>/v000001/metadata.json     window, eval partition, parent, metrics, gate decision, config, code version
    <model>/v000001/COMPLETE          written last: a version without it does not exist (a crash mid-copy)
    <model>/PUBLISHED                 {"version", "time", "reason"}: replaced in one write (atomic on object stores,
                                      ``os.replace`` locally); names only complete versions
    <model>/events/<ns>-<uuid>.json   one object per event (run_started, decision, promoted, rolled_back, ...)
    <model>/LEASE                     see :mod:`dist_ctr.pipeline.lease`

>>> import tempfile, os
>>> root = tempfile.mkdtemp(); src = os.path.join(root, "m.pt"); open(src, "wb").write(b"w")
1
>>> reg = ModelRegistry(os.path.join(root, "reg"))
>>> v = reg.add_version("ctr", export_path=src, checkpoint_url=None, metadata={"run_key": "k1"})
>>> v.version, reg.published("ctr")
('v000001', None)
>>> reg.promote("ctr", "v000001", reason="first").version
'v000001'
>>> reg.add_version("ctr", export_path=src, checkpoint_url=None, metadata={"run_key": "k1"}).version  # same run key
'v000001'
>>> [e["event"] for e in reg.events("ctr")]
['version_added', 'promoted']
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from dist_ctr.errors import RegistryError
from dist_ctr.storage import storage_errors, url_to_fs

__all__ = ["ModelRegistry", "VersionInfo", "code_version", "resolve_model_ref", "split_model_ref"]

_VERSION = re.compile(r"^v(\d{6})$")
_REF = re.compile(r"^(?P<root>.+)/(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]{0,62})@(?P<tag>published|v\d{6})$")
COMPLETE = "COMPLETE"
POINTER = "PUBLISHED"


@dataclass
class VersionInfo:
    """One complete version: ``url`` is its directory; ``model_path`` / ``checkpoint_url`` what is inside."""

    model: str
    version: str
    url: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> str:
        return f"{self.url}/model.pt"

    @property
    def checkpoint_url(self) -> str:
        return f"{self.url}/checkpoint"


def code_version() -> str:
    """``dist_ctr <version>`` plus the git commit of the source tree when it is a checkout."""
    import subprocess

    from dist_ctr import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"dist_ctr {__version__}" + (f" ({sha})" if sha else "")


class ModelRegistry:
    """Versions, pointer, events and lease of the models under ``url`` (see the module docstring).

    Args:
        url: the registry root, any fsspec URL.
        storage_options: fsspec options of its store (endpoint, credentials); never written into the registry.
    """

    def __init__(self, url: str, storage_options: Optional[dict[str, Any]] = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = url_to_fs(self.url, self.storage_options, key="registry")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, (tuple, list))
                                else (self.fs.protocol,))

    # ---- paths -----------------------------------------------------------------------------------------------
    def _p(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _u(self, *parts: str) -> str:
        return "/".join([self.url, *parts])

    @contextlib.contextmanager
    def _io(self, what: str, *parts: str) -> Iterator[None]:
        with storage_errors(self._u(*parts), what):
            yield

    def _read_json(self, path: str, url: str) -> dict[str, Any]:
        try:
            data = json.loads(self.fs.cat_file(path))
        except ValueError as e:
            raise RegistryError(f"{url}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{url}: expected a JSON object")
        return data

    def _write_json(self, path: str, data: dict[str, Any]) -> None:
        """One write: on object stores a PUT replaces the object whole; locally a temp file then ``os.replace``."""
        body = json.dumps(data, indent=1, sort_keys=True, default=str).encode()
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, body)

    # ---- reading ---------------------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names in the registry (directories holding at least one complete version or a pointer)."""
        with self._io("list the registry"):
            if not self.fs.exists(self.root):
                return []
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and (self.versions(n) or self._pointer(n)))

    def versions(self, model: str) -> list[VersionInfo]:
        """The complete versions of ``model``, oldest first (directories without ``COMPLETE`` are left out)."""
        with self._io("list the model's versions", model):
            base = self._p(model)
            if not self.fs.exists(base):
                return []
            self.fs.invalidate_cache(base)
            entries = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
            out = []
            for name in sorted(e for e in entries if _VERSION.match(e)):
                if self.fs.exists(self._p(model, name, COMPLETE)):
                    out.append(self._info(model, name))
        return out

    def _info(self, model: str, version: str) -> VersionInfo:
        meta_url = self._u(model, version, "metadata.json")
        meta = self._read_json(self._p(model, version, "metadata.json"), meta_url)
        return VersionInfo(model, version, self._u(model, version), meta)

    def version(self, model: str, version: str) -> VersionInfo:
        """One complete version; :class:`RegistryError` naming what exists when there is no such version."""
        if not _VERSION.match(version):
            raise RegistryError(f"{self.url}/{model}: bad version {version!r} (expected v000001 form)")
        with self._io("read the version", model, version):
            if self.fs.exists(self._p(model, version, COMPLETE)):
                return self._info(model, version)
        have = [v.version for v in self.versions(model)]
        raise RegistryError(f"{self.url}/{model}: no complete version {version}"
                            f"{'; versions: ' + ', '.join(have) if have else '; the model has no versions'}")

    def _pointer(self, model: str) -> Optional[dict[str, Any]]:
        path = self._p(model, POINTER)
        with self._io("read the published pointer", model, POINTER):
            if not self.fs.exists(path):
                return None
            return self._read_json(path, self._u(model, POINTER))

    def published(self, model: str) -> Optional[VersionInfo]:
        """The version the pointer names, or None before the first promotion."""
        ptr = self._pointer(model)
        if ptr is None:
            return None
        return self.version(model, str(ptr.get("version")))

    def find(self, model: str, run_key: str) -> Optional[VersionInfo]:
        """The complete version a run with ``run_key`` added, if any (a retried run reuses it)."""
        return next((v for v in self.versions(model) if v.metadata.get("run_key") == run_key), None)

    def events(self, model: str) -> list[dict[str, Any]]:
        """Every event of ``model``, oldest first; each a dict with ``event`` and ``time``."""
        base = self._p(model, "events")
        with self._io("read the event log", model, "events"):
            if not self.fs.exists(base):
                return []
            self.fs.invalidate_cache(base)
            names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
            return [self._read_json(f"{base}/{n}", self._u(model, "events", n)) for n in names
                    if n.endswith(".json")]

    # ---- writing ---------------------------------------------------------------------------------------------
    def record(self, model: str, event: dict[str, Any]) -> None:
        """Append one event (its own object: concurrent writers never overwrite each other)."""
        if "event" not in event:
            raise ValueError("an event needs an 'event' key")
        now = time.time_ns()
        name = f"{now:020d}-{uuid.uuid4().hex[:8]}.json"
        with self._io("append to the event log", model, "events"):
            self._write_json(self._p(model, "events", name), {**event, "time": now / 1e9})

    def add_version(self, model: str, *, export_path: str, checkpoint_url: Optional[str],
                    metadata: dict[str, Any], storage_options: Optional[dict[str, Any]] = None) -> VersionInfo:
        """Copy an exported model (and its training checkpoint) into the next version; ``COMPLETE`` last.

        A version whose metadata carries the same ``run_key`` is returned as it is (the run was retried). A
        directory left by a crashed copy (no ``COMPLETE``) at the next number is cleared and reused. Call under
        :meth:`lease` so that two writers cannot pick the same number.

        Args:
            export_path: the exported model file (``dist-ctr export``), any fsspec URL.
            checkpoint_url: the committed DCP checkpoint directory, or None (no warm start from this version).
            metadata: JSON-able facts of the run; ``code_version`` and ``registered`` are added.
            storage_options: fsspec options of the source files' store (default: local / ambient credentials).
        """
        key = metadata.get("run_key")
        if key is not None:
            found = self.find(model, str(key))
            if found is not None:
                return found
        with self._io("add a version", model):
            n = max([int(v.version[1:]) for v in self.versions(model)], default=0) + 1
            version = f"v{n:06d}"
            target = self._p(model, version)
            if self.fs.exists(target):  # what a crashed copy left (no COMPLETE)
                self.fs.rm(target, recursive=True)
            self._copy_file(export_path, storage_options, f"{target}/model.pt")
            if checkpoint_url:
                self._copy_tree(checkpoint_url, storage_options, f"{target}/checkpoint")
            meta = {**metadata, "model": model, "version": version, "code_version": code_version(),
                    "registered": time.time()}
            self._write_json(f"{target}/metadata.json", meta)
            self._write_json(f"{target}/{COMPLETE}", {"version": version})
        self.record(model, {"event": "version_added", "version": version, "run_key": key})
        return self.version(model, version)

    def _copy_file(self, src: str, src_opts: Optional[dict[str, Any]], dst: str) -> None:
        sfs, spath = url_to_fs(src, src_opts, key="export_path")
        with storage_errors(src, "read the exported model"):
            if not sfs.exists(spath):
                raise RegistryError(f"exported model not found: {src}")
            with sfs.open(spath, "rb") as fin:
                data = fin.read()
        parent = dst.rsplit("/", 1)[0]
        if self.local:
            os.makedirs(parent, exist_ok=True)
        self.fs.pipe_file(dst, data)

    def _copy_tree(self, src: str, src_opts: Optional[dict[str, Any]], dst: str) -> None:
        sfs, spath = url_to_fs(src, src_opts, key="checkpoint_url")
        with storage_errors(src, "read the training checkpoint"):
            files = sfs.find(spath)
            if not files:
                raise RegistryError(f"training checkpoint not found or empty: {src}")
            for f in files:
                rel = f[len(spath.rstrip("/")) + 1:]
                with sfs.open(f, "rb") as fin:
                    data = fin.read()
                out = f"{dst}/{rel}"
                if self.local:
                    os.makedirs(out.rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(out, data)

    def promote(self, model: str, version: str, *, reason: str = "", event: str = "promoted") -> VersionInfo:
        """Point ``PUBLISHED`` at a complete ``version`` (one write) and record it."""
        info = self.version(model, version)
        before = self._pointer(model)
        with self._io("replace the published pointer", model, POINTER):
            self._write_json(self._p(model, POINTER), {"version": version, "time": time.time(), "reason": reason})
        self.record(model, {"event": event, "version": version, "previous": (before or {}).get("version"),
                            "reason": reason})
        return info

    def rollback(self, model: str, to: Optional[str] = None, *, reason: str = "") -> VersionInfo:
        """Point ``PUBLISHED`` back: at ``to``, or at the newest version older than the published one that was
        ever promoted (repeated rollbacks walk back through them)."""
        current = self.published(model)
        if current is None:
            raise RegistryError(f"{self.url}/{model}: nothing is published; nothing to roll back")
        if to is None:
            promoted = {e.get("version") for e in self.events(model) if e.get("event") == "promoted"}
            older = [v.version for v in self.versions(model) if v.version < current.version and v.version in promoted]
            if not older:
                raise RegistryError(f"{self.url}/{model}: {current.version} is the oldest published version; "
                                    f"no earlier one to roll back to")
            to = older[-1]
        return self.promote(model, to, reason=reason or f"rollback from {current.version}", event="rolled_back")

    @contextlib.contextmanager
    def lease(self, model: str, owner: str, ttl_s: float) -> Iterator[Any]:
        """Hold the model's lease for the block; yields the :class:`~dist_ctr.pipeline.lease.Lease`."""
        from dist_ctr.pipeline.lease import hold_lease

        with hold_lease(self.url, model, owner, ttl_s, self.storage_options) as held:
            yield held


def split_model_ref(ref: str) -> Optional[tuple[str, str, str]]:
    """``(registry_url, model, tag)`` of ``<registry>/<model>@published`` / ``@v000003``, else None.

    >>> split_model_ref("s3://b/models/ctr@published")
    ('s3://b/models', 'ctr', 'published')
    >>> split_model_ref("runs/model.pt") is None
    True
    """
    m = _REF.match(ref)
    return (m.group("root"), m.group("model"), m.group("tag")) if m else None


def resolve_model_ref(ref: str, storage_options: Optional[dict[str, Any]] = None) -> str:
    """The exported model file a registry reference names; any other path is returned as it is."""
    parts = split_model_ref(ref)
    if parts is None:
        return ref
    root, model, tag = parts
    reg = ModelRegistry(root, storage_options)
    if tag == "published":
        info = reg.published(model)
        if info is None:
            have = reg.versions(model)
            raise RegistryError(f"{root}/{model}: no published version"
                                f"{' (versions: ' + ', '.join(v.version for v in have) + ')' if have else ''}")
        return info.model_path
    return reg.version(model, tag).model_path
