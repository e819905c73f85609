"""What the data layer skipped or repaired on purpose, for the end of a run: bad files / row groups skipped
under ``on_bad_file: skip`` and non-finite dense values replaced under ``on_non_finite: fill``.

A run's report is a plain, JSON-able dict (it travels from spawn / Ray workers back to the driver) built by
:func:`data_report` from one rank's loaders, merged over ranks by :func:`merge_reports` (an entry seen by several
ranks counts once) and printed by :func:`report_rows`.

>>> from dist_ctr.data.errors import BadFileReport
>>> bad = BadFileReport()
>>> bad.add("d/b.parquet", "d/b.parquet: not a Parquet file", rows=0)
>>> fill = FillReport()
>>> fill.add("d/a.parquet", 0, "I1", 2)
>>> r = merge_reports([data_report(bad, fill), data_report(bad, fill)])
>>> r["skipped_count"], r["filled"]
(1, {'I1': 2})
>>> [f"{k}: {v}" for k, v in report_rows(r)]  # doctest: +NORMALIZE_WHITESPACE
['skipped: 1 bad file(s) / row group(s), 0 rows (on_bad_file: skip)', ': - d/b.parquet: not a Parquet file',
 'filled: 2 non-finite dense value(s): I1 2 (on_non_finite: fill)']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

__all__ = ["FillReport", "data_report", "merge_reports", "report_rows"]

_MAX_LISTED = 10  # skipped entries listed one per line in a summary; the rest are counted


@dataclass
class FillReport:
    """Non-finite dense values replaced by ``fill_na``, per ``(file, row group, column)`` (a row group read twice,
    e.g. by two epochs, counts once)."""

    counts: dict[tuple[str, Optional[int], str], int] = field(default_factory=dict)

    def add(self, file: Optional[str], row_group: Optional[int], column: str, count: int) -> None:
        self.counts[(str(file) if file is not None else "?", row_group, str(column))] = int(count)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def entries(self) -> list[list[Any]]:
        return [[f, rg, c, n] for (f, rg, c), n in sorted(self.counts.items(), key=lambda kv: str(kv[0]))]

    def __bool__(self) -> bool:
        return bool(self.counts)


def data_report(bad_files: Any = None, filled: Optional[FillReport] = None) -> dict[str, Any]:
    """One loader's report as a plain dict (``bad_files``: a :class:`~dist_ctr.data.errors.BadFileReport`)."""
    skipped = [] if bad_files is None else [
        {"file": e.file, "row_group": e.row_group, "rows": e.rows, "reason": e.reason} for e in bad_files.entries]
    return _finish(skipped, [] if filled is None else filled.entries())


def _finish(skipped: list[dict[str, Any]], fill_entries: list[list[Any]]) -> dict[str, Any]:
    by_col: dict[str, int] = {}
    for _f, _rg, col, n in fill_entries:
        by_col[col] = by_col.get(col, 0) + int(n)
    return {"skipped": skipped, "skipped_count": len(skipped), "skipped_rows": sum(int(e["rows"]) for e in skipped),
            "filled": by_col, "filled_total": sum(by_col.values()), "filled_entries": fill_entries}


def merge_reports(reports: Iterable[Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Union of several reports (ranks, train and eval loaders); an entry reported more than once counts once."""
    skipped: dict[tuple[str, Any], dict[str, Any]] = {}
    fills: dict[tuple[str, Any, str], int] = {}
    for r in reports:
        for e in (r or {}).get("skipped", ()):
            skipped.setdefault((str(e["file"]), e.get("row_group")), dict(e))
        for f, rg, col, n in (r or {}).get("filled_entries", ()):
            fills[(str(f), rg, str(col))] = int(n)
    entries = [[f, rg, c, n] for (f, rg, c), n in sorted(fills.items(), key=lambda kv: str(kv[0]))]
    ordered = [skipped[k] for k in sorted(skipped, key=str)]
    return _finish(ordered, entries)


def report_rows(report: Optional[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(label, text)`` rows for an aligned run summary; none when nothing was skipped or filled."""
    if not report:
        return []
    rows: list[tuple[str, str]] = []
    skipped: Sequence[dict[str, Any]] = report.get("skipped") or ()
    if skipped:
        rows.append(("skipped", f"{len(skipped)} bad file(s) / row group(s), {int(report.get('skipped_rows', 0)):,} "
                                "rows (on_bad_file: skip)"))
        for e in skipped[:_MAX_LISTED]:
            rows.append(("", f"- {e['reason']}" + (f" ({int(e['rows']):,} rows)" if e.get("rows") else "")))
        if len(skipped) > _MAX_LISTED:
            rows.append(("", f"- ... and {len(skipped) - _MAX_LISTED} more"))
    filled = report.get("filled") or {}
    if filled:
        cols = ", ".join(f"{c} {n:,}" for c, n in sorted(filled.items()))
        rows.append(("filled", f"{int(report.get('filled_total', 0)):,} non-finite dense value(s): {cols} "
                               "(on_non_finite: fill)"))
    return rows
