"""``ParquetSource``: a Parquet data set on any fsspec URL, listed into work units ``(file, row_group, num_rows)``.

A source is one file or a directory tree (searched recursively) on a local path, ``file://``, ``s3://``,
``gs://``, ``memory://`` or any other fsspec protocol; ``storage_options`` go to fsspec untouched and are never
logged. Hive-style partition directories (``date=2026-11-20/``) can be selected by value, list or range.

Listing reads every file's footer once (in parallel threads), checks it against the columns the schema needs
(``validate``) and yields the work units in a fixed order (sorted paths, then row groups); ``start`` is the
unit's first row's position in that order (the positional row id when the data has no row-id column).

>>> import tempfile, os, pyarrow as pa, pyarrow.parquet as pq
>>> d = tempfile.mkdtemp()
>>> os.makedirs(f"{d}/date=2026-11-20")
>>> pq.write_table(pa.table({"x": list(range(10))}), f"{d}/date=2026-11-20/a.parquet", row_group_size=4)
>>> src = ParquetSource(d, partitions={"date": {"min": "2026-11-01"}})
>>> [(u.row_group, u.num_rows, u.start) for u in src.units()]
[(0, 4, 0), (1, 4, 4), (2, 2, 8)]
>>> src.units()[0].partition
(('date', '2026-11-20'),)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from dist_ctr.data.errors import (
    BadFileError,
    BadFileReport,
    DataError,
    DataPathNotFoundError,
    StorageAccessError,
)

__all__ = ["ParquetSource", "WorkUnit", "partition_of", "partition_matches"]


@dataclass(frozen=True)
class WorkUnit:
    """One Parquet row group: the unit of assignment.

    Args:
        file (str): the file's URL (for messages and reports).
        path (str): the path on the source's filesystem.
        row_group (int): row group index in the file.
        num_rows (int): rows in the row group.
        start (int): position of its first row in the source's sorted listing.
        partition (tuple[tuple[str, str], ...]): Hive partition ``(key, value)`` pairs of the file's path.
    """

    file: str
    path: str
    row_group: int
    num_rows: int
    start: int = 0
    partition: tuple[tuple[str, str], ...] = ()


def partition_of(rel_path: str) -> tuple[tuple[str, str], ...]:
    """Hive ``key=value`` directory segments of a relative path.

    >>> partition_of("date=2026-11-20/hour=3/part-0.parquet")
    (('date', '2026-11-20'), ('hour', '3'))
    """
    out = []
    for seg in rel_path.split("/")[:-1]:
        if "=" in seg:
            k, v = seg.split("=", 1)
            out.append((k, v))
    return tuple(out)


def _num(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _cmp(a: Any, b: Any) -> int:
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    sa, sb = str(a), str(b)
    return (sa > sb) - (sa < sb)


def partition_matches(part: Mapping[str, str], filters: Mapping[str, Any]) -> bool:
    """Whether partition values satisfy the filter (value, list of values, or ``{min, max}`` inclusive).

    >>> partition_matches({"date": "2026-11-20"}, {"date": {"min": "2026-11-01", "max": "2026-11-20"}})
    True
    >>> partition_matches({"hour": "10"}, {"hour": {"max": 9}})
    False
    >>> partition_matches({"date": "2026-11-20"}, {"date": ["2026-11-19"]})
    False
    """
    for key, cond in filters.items():
        if key not in part:
            return False
        v = part[key]
        if isinstance(cond, Mapping):
            if "min" in cond and cond["min"] is not None and _cmp(v, cond["min"]) < 0:
                return False
            if "max" in cond and cond["max"] is not None and _cmp(v, cond["max"]) > 0:
                return False
        elif isinstance(cond, (list, tuple)):
            if not any(_cmp(v, c) == 0 for c in cond):
                return False
        elif _cmp(v, cond) != 0:
            return False
    return True


class ParquetSource:
    """A Parquet data set on an fsspec URL.

    Args:
        url (str): file or directory URL.
        storage_options (dict | None): fsspec options (credentials, endpoint, timeouts); never logged.
        partitions (dict | None): Hive partition filter (see :func:`partition_matches`).
        file_suffixes (Sequence[str]): endings that count as Parquet files in a directory.
        validate (Callable[[str, pa.Schema], None] | None): called with (file URL, Arrow schema) of every file;
            raises :class:`~dist_ctr.data.errors.SchemaMismatchError` for a file the schema cannot use.
        on_bad_file (str): "error" raises; "skip" leaves the file out and records it in ``report``.
        report (BadFileReport | None): where skipped files are listed.
        list_threads (int): threads reading footers while listing.
    """

    def __init__(
        self,
        url: str,
        storage_options: Optional[Mapping[str, Any]] = None,
        partitions: Optional[Mapping[str, Any]] = None,
        file_suffixes: Sequence[str] = (".parquet", ".parq", ".pq"),
        validate: Optional[Callable[[str, pa.Schema], None]] = None,
        on_bad_file: str = "error",
        report: Optional[BadFileReport] = None,
        list_threads: int = 16,
    ) -> None:
        self.url = url
        self._storage_options = dict(storage_options or {})
        self.partitions = dict(partitions or {})
        self.file_suffixes = tuple(file_suffixes)
        self.validate = validate
        self.on_bad_file = on_bad_file
        self.report = report if report is not None else BadFileReport()
        self.list_threads = list_threads
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url, **self._storage_options)
        except (ImportError, ValueError) as e:
            raise StorageAccessError(f"cannot open a filesystem for this URL: {type(e).__name__}: {e}", file=url) from None
        self._local = "file" in _protocols(self.fs) or "local" in _protocols(self.fs)
        self._plain = "://" not in url
        self._units: Optional[list[WorkUnit]] = None
        self._meta: dict[str, pq.FileMetaData] = {}
        self._tls = threading.local()

    def __repr__(self) -> str:  # storage options (credentials) deliberately left out
        return f"ParquetSource(url={self.url!r}, partitions={self.partitions!r})"

    # ---- naming -------------------------------------------------------------------------------------------
    def display(self, path: str) -> str:
        """The URL of ``path`` as users write it (local paths stay plain paths)."""
        if self._local and self._plain:
            return path
        return self.fs.unstrip_protocol(path)

    # ---- listing ------------------------------------------------------------------------------------------
    def files(self) -> list[str]:
        """Paths of the Parquet files selected by the URL and the partition filter, sorted."""
        try:
            info = self.fs.info(self.root)
        except FileNotFoundError:
            raise DataPathNotFoundError("no such file or directory", file=self.url) from None
        except Exception as e:  # credentials, endpoint, permissions, network
            raise StorageAccessError(f"cannot access the data set ({type(e).__name__}: {e}); check the "
                                     "credentials / endpoint in storage_options", file=self.url) from None
        if info.get("type") == "file":
            paths = [self.root]
            rels = [self.root.rsplit("/", 1)[-1]]
        else:
            try:
                found = sorted(self.fs.find(self.root))
            except Exception as e:
                raise StorageAccessError(f"cannot list the data set ({type(e).__name__}: {e})", file=self.url) from None
            base = self.root.rstrip("/") + "/"
            paths, rels = [], []
            for p in found:
                rel = p[len(base):] if p.startswith(base) else p.rsplit("/", 1)[-1]
                if any(seg.startswith(("_", ".")) for seg in rel.split("/")):
                    continue
                if not rel.endswith(self.file_suffixes):
                    continue
                paths.append(p)
                rels.append(rel)
            if not paths:
                raise DataPathNotFoundError(f"no Parquet files (ending in {list(self.file_suffixes)}) under this "
                                            "directory", file=self.url)
        if self.partitions:
            keys = {k for rel in rels for k, _ in partition_of(rel)}
            missing = sorted(set(self.partitions) - keys)
            if missing:
                raise DataError(f"partition key(s) {missing} do not occur in any path (keys found: {sorted(keys)})",
                                file=self.url)
            keep = [partition_matches(dict(partition_of(r)), self.partitions) for r in rels]
            paths = [p for p, k in zip(paths, keep) if k]
            rels = [r for r, k in zip(rels, keep) if k]
            if not paths:
                raise DataPathNotFoundError(f"no file matches the partition filter {self.partitions}", file=self.url)
        self._rels = dict(zip(paths, rels))
        return paths

    def _footer(self, path: str) -> pq.FileMetaData | DataError:
        name = self.display(path)
        try:
            if self._local:
                pf = pq.ParquetFile(path)
            else:
                with self.fs.open(path, "rb") as f:
                    pf = pq.ParquetFile(f)
                    pf.metadata  # noqa: B018  (read the footer while the file is open)
            md = pf.metadata
            schema = pf.schema_arrow
        except FileNotFoundError:
            return DataPathNotFoundError("file disappeared while listing", file=name)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError) as e:
            msg = str(e)
            if "size is 0 bytes" in msg:
                return BadFileError("empty file (0 bytes), not Parquet", file=name)
            return BadFileError(f"not a readable Parquet file (corrupt or truncated): {msg}", file=name)
        except Exception as e:
            return StorageAccessError(f"cannot read the file ({type(e).__name__}: {e})", file=name)
        if self.validate is not None:
            try:
                self.validate(name, schema)
            except DataError as e:
                return e
        return md

    def units(self) -> list[WorkUnit]:
        """Work units of the data set: sorted files, then row groups. Cached after the first call."""
        if self._units is not None:
            return self._units
        paths = self.files()
        workers = max(1, min(self.list_threads, len(paths)))
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                footers = list(ex.map(self._footer, paths))
        else:
            footers = [self._footer(p) for p in paths]
        units: list[WorkUnit] = []
        start = 0
        for path, md in zip(paths, footers):
            if isinstance(md, DataError):
                if self.on_bad_file == "skip" and not isinstance(md, StorageAccessError):
                    self.report.add_error(md)
                    continue
                raise md
            self._meta[path] = md
            name = self.display(path)
            part = partition_of(self._rels.get(path, path))
            for rg in range(md.num_row_groups):
                n = md.row_group(rg).num_rows
                if n == 0:
                    continue
                units.append(WorkUnit(name, path, rg, n, start, part))
                start += n
        if not units:
            raise DataError("the data set has no rows" + (" left after skipping bad files" if self.report else ""),
                            file=self.url)
        self._units = units
        return units

    @property
    def total_rows(self) -> int:
        return sum(u.num_rows for u in self.units())

    def fingerprint(self) -> str:
        """Short digest of the listing (files, row groups, rows): a cursor only resumes on the same listing."""
        key = [(u.file, u.row_group, u.num_rows) for u in self.units()]
        return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]

    # ---- reading ------------------------------------------------------------------------------------------
    def _open(self, path: str) -> pq.ParquetFile:
        cache: OrderedDict = getattr(self._tls, "cache", None)
        if cache is None:
            cache = self._tls.cache = OrderedDict()
        pf = cache.get(path)
        if pf is not None:
            cache.move_to_end(path)
            return pf
        md = self._meta.get(path)
        if self._local:
            pf = pq.ParquetFile(path, metadata=md)
        else:
            pf = pq.ParquetFile(self.fs.open(path, "rb"), metadata=md, pre_buffer=True)
        cache[path] = pf
        while len(cache) > 4:
            _, old = cache.popitem(last=False)
            _close(old)
        return pf

    def read(self, unit: WorkUnit, columns: Sequence[str]) -> pa.Table:
        """Read ``columns`` of one row group. Errors name the file and row group."""
        try:
            pf = self._open(unit.path)
            return pf.read_row_group(unit.row_group, columns=list(columns), use_threads=False)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataPathNotFoundError("file disappeared after listing", file=unit.file, row_group=unit.row_group) from None
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, EOFError, pa.ArrowException) as e:
            self._drop(unit.path)
            raise BadFileError(f"cannot decode the row group (corrupt data): {e}", file=unit.file,
                               row_group=unit.row_group) from None

    def _drop(self, path: str) -> None:
        cache = getattr(self._tls, "cache", None)
        if cache and path in cache:
            _close(cache.pop(path))

    def close(self) -> None:
        cache = getattr(self._tls, "cache", None)
        while cache:
            _close(cache.popitem()[1])


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _close(pf: pq.ParquetFile) -> None:
    try:
        pf.close()
    except Exception:  # closing is best effort
        pass
