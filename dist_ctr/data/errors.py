"""Errors of the data layer, each naming where the problem is, and the report of files skipped on purpose.

Every :class:`DataError` carries ``file`` (the URL as the user gave it, never with credentials), and where known
``row_group`` and ``column``; its message starts with that location so a log line alone says where to look.

>>> e = BadValueError("label must be 0 or 1, got 2.0", file="s3://b/part-0.parquet", row_group=3, column="label")
>>> str(e)
"s3://b/part-0.parquet, row group 3, column 'label': label must be 0 or 1, got 2.0"
>>> r = BadFileReport()
>>> r.add("a.parquet", "truncated", rows=10)
>>> r.count, r.rows_skipped
(1, 10)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dist_ctr.errors import DataErrorBase


def _where(file: Optional[str], row_group: Optional[int], column: Optional[str]) -> str:
    parts = []
    if file is not None:
        parts.append(str(file))
    if row_group is not None:
        parts.append(f"row group {row_group}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


class DataError(DataErrorBase):
    """A data set cannot be read as the schema says.

    Args:
        message (str): what is wrong.
        file (str | None): the file (or URL) concerned.
        row_group (int | None): the Parquet row group, when known.
        column (str | None): the column, when known.
    """

    def __init__(self, message: str, file: Optional[str] = None, row_group: Optional[int] = None,
                 column: Optional[str] = None) -> None:
        self.file = file
        self.row_group = row_group
        self.column = column
        self.reason = message
        where = _where(file, row_group, column)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):  # picklable across processes / Ray
        return (type(self), (self.reason, self.file, self.row_group, self.column))


class DataPathNotFoundError(DataError, FileNotFoundError):
    """The URL does not exist (or holds no Parquet file)."""


class StorageAccessError(DataError):
    """The storage refused or failed the request (credentials, endpoint, permissions, network)."""


class BadFileError(DataError):
    """A file is not readable Parquet (corrupt, truncated, empty) or a row group cannot be decoded."""


class SchemaMismatchError(DataError):
    """A column the schema needs is missing or has a type the schema cannot use."""


class BadValueError(DataError):
    """Values break the schema: null or non-0/1 labels, ids out of range or negative, bad list lengths."""


@dataclass
class BadFileEntry:
    """One skipped file or row group."""

    file: str
    reason: str
    row_group: Optional[int] = None
    rows: int = 0


@dataclass
class BadFileReport:
    """Files and row groups skipped under ``on_bad_file: skip``, for the run's summary.

    Files rejected while listing (unreadable footer, schema mismatch, empty) are skipped by every rank alike;
    row groups whose values fail while reading are replaced by pad rows (weight 0, ``row_ids == -1``) so that the
    number of steps every rank agreed on does not change.
    """

    entries: list[BadFileEntry] = field(default_factory=list)

    def add(self, file: str, reason: str, row_group: Optional[int] = None, rows: int = 0) -> None:
        self.entries.append(BadFileEntry(str(file), str(reason), row_group, int(rows)))

    def add_error(self, err: DataError, rows: int = 0) -> None:
        self.add(err.file or "?", str(err), err.row_group, rows)

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def rows_skipped(self) -> int:
        return sum(e.rows for e in self.entries)

    @property
    def files(self) -> list[str]:
        return sorted({e.file for e in self.entries})

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "rows_skipped": self.rows_skipped,
                "entries": [{"file": e.file, "row_group": e.row_group, "rows": e.rows, "reason": e.reason}
                            for e in self.entries]}

    def summary(self) -> str:
        """Human-readable lines for the end-of-run summary (empty string when nothing was skipped)."""
        if not self.entries:
            return ""
        lines = [f"skipped {self.count} bad file(s)/row group(s), {self.rows_skipped} rows:"]
        for e in self.entries:
            lines.append(f"  - {e.reason}" + (f" ({e.rows} rows)" if e.rows else ""))
        return "\n".join(lines)

    def __bool__(self) -> bool:  # an empty report is still a report; truthiness = anything skipped
        return bool(self.entries)
