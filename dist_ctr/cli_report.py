"""``dist-ctr report RUN_DIR [--out DIR]``: plots and a summary of a run from its files (``dist_ctr/report.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_report(args: argparse.Namespace) -> int:
    """Render the report, print the files written and the summary text.

    Returns:
        int: 0 (user errors raise ``FileNotFoundError`` / ``ValueError``; ``cli.main`` prints them, exit 2).
    """
    from dist_ctr.report import render_report

    files = render_report(args.run_dir, args.out)
    for f in files:
        print(f"[report] wrote {f}")
    summary = next((f for f in files if f.endswith("summary.txt")), None)
    if summary:
        print(Path(summary).read_text(encoding="utf-8"), end="")
    return 0


def add_report_command(subparsers: Any) -> None:
    """Register ``report`` on the ``dist-ctr`` subparsers.

    Args:
        subparsers: the ``argparse`` subparsers action of ``cli.build_parser``.
    """
    r = subparsers.add_parser("report", help="plots (PNG) and a summary of a run from its metrics.jsonl")
    r.add_argument("run_dir", help="<output_dir>/<job name>, e.g. runs/demo")
    r.add_argument("--out", default=None, help="where to write (default: RUN_DIR)")
    r.set_defaults(fn=_cmd_report)
