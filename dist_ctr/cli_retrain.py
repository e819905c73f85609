"""``dist-ctr retrain PIPELINE.yaml [--as-of YYYY-MM-DD] [--dry-run] [--set key=value]``."""

from __future__ import annotations

import argparse
import datetime as _dt



def _as_of(text: str) -> str:
    try:
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _cmd_retrain(args: argparse.Namespace) -> int:
    from dist_ctr.cli import _parse_set
    from dist_ctr.pipeline.config import load_pipeline
    from dist_ctr.pipeline.run import run_retrain

    cfg = load_pipeline(args.pipeline, _parse_set(args.set or []))
    run_retrain(cfg, as_of=args.as_of, dry_run=args.dry_run)
    return 0


def add_retrain_command(sub: argparse._SubParsersAction) -> None:
    """Register ``retrain`` on the CLI's sub-parsers."""
    r = sub.add_parser("retrain", help="one scheduled retraining run: new partitions, warm start, gate, publish")
    r.add_argument("pipeline", help="a pipeline config (jobs/retrain_daily.yaml)")
    r.add_argument("--as-of", type=_as_of, default=None, metavar="YYYY-MM-DD",
                   help="the run's date (default: today, UTC); partitions after it are not considered")
    r.add_argument("--dry-run", action="store_true", help="print what would be trained, evaluated and compared")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key, e.g. retrain.registry=s3://b/m")
    r.set_defaults(fn=_cmd_retrain)


__all__ = ["add_retrain_command"]
