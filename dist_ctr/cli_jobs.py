"""``dist-ctr submit`` and ``dist-ctr jobs ...``: jobs on a Ray cluster through Ray's Jobs API.

    dist-ctr submit JOB.yaml --address http://HOST:8265 [--num-workers N] [--set k=v ...] [--submission-id ID]
                             [--runtime-env-json JSON] [--follow]
    dist-ctr jobs list   --address ADDR
    dist-ctr jobs status --address ADDR JOB_ID
    dist-ctr jobs logs   --address ADDR JOB_ID [--follow]
    dist-ctr jobs stop   --address ADDR JOB_ID

``--address`` defaults to ``$RAY_ADDRESS`` (or ``$RAY_API_SERVER_ADDRESS``). The work is in
:mod:`dist_ctr.launch.ray_jobs`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional, Sequence

from dist_ctr.strict import ConfigError

__all__ = ["add_jobs_commands", "format_table"]


def _default_address() -> Optional[str]:
    return os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_API_SERVER_ADDRESS") or None


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _runtime_env(text: Optional[str]) -> Optional[dict[str, Any]]:
    from dist_ctr.cli_registry import parse_json_object

    return parse_json_object(text, "--runtime-env-json")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart.

    Args:
        header (Sequence[str]): column names.
        rows (Sequence[Sequence[str]]): cells, one sequence per row.

    Returns:
        str: the table, one line per row after the header.

    >>> print(format_table(["ID", "STATUS"], [["a", "RUNNING"]]))
    ID  STATUS
    a   RUNNING
    """
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _duration(row: dict[str, Any]) -> str:
    if not row["start_time"]:
        return "-"
    s = (row["end_time"] or time.time()) - row["start_time"]
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}m"


def _cmd_submit(args: argparse.Namespace) -> int:
    from dist_ctr.launch.ray_jobs import submit_job, wait_for_job

    job_id = submit_job(args.job, args.address, num_workers=args.num_workers, overrides=_parse_set(args.set or []),
                        submission_id=args.submission_id, runtime_env=_runtime_env(args.runtime_env_json))
    print(job_id, flush=True)
    if not args.follow:
        return 0
    from dist_ctr.launch.ray_jobs import job_logs

    job_logs(args.address, job_id, follow=True)
    status = wait_for_job(args.address, job_id, timeout_s=60.0)
    print(f"[submit] {job_id}: {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


def _cmd_list(args: argparse.Namespace) -> int:
    from dist_ctr.launch.ray_jobs import list_jobs

    rows = list_jobs(args.address)
    if not rows:
        print(f"no jobs on {args.address}")
        return 0
    cells = [[r["job_id"], r["status"], _when(r["start_time"]), _duration(r), _short(r["entrypoint"], 60)]
             for r in rows]
    print(format_table(["JOB ID", "STATUS", "STARTED", "DURATION", "ENTRYPOINT"], cells))
    return 0


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _cmd_status(args: argparse.Namespace) -> int:
    from dist_ctr.launch.ray_jobs import job_info

    r = job_info(args.address, args.job_id)
    rows = [["job id", r["job_id"]], ["status", r["status"]], ["started", _when(r["start_time"])],
            ["ended", _when(r["end_time"])], ["duration", _duration(r)], ["entrypoint", r["entrypoint"]]]
    if r["message"]:
        rows.append(["message", _short(r["message"], 200)])
    print("\n".join(f"{k:<11} {v}" for k, v in rows))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from dist_ctr.launch.ray_jobs import job_logs

    text = job_logs(args.address, args.job_id, follow=args.follow)
    if not args.follow:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from dist_ctr.launch.ray_jobs import stop_job

    status = stop_job(args.address, args.job_id)
    print(f"{args.job_id}  {status}")
    return 0


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=_default_address(),
                   help="Ray job server, http://HOST:8265 (default: $RAY_ADDRESS or $RAY_API_SERVER_ADDRESS)")


def add_jobs_commands(sub: Any) -> None:
    """Register ``submit`` and ``jobs list|status|logs|stop`` on the top-level subparsers.

    Args:
        sub: the ``argparse`` subparsers action of ``dist-ctr``.
    """
    s = sub.add_parser("submit", help="submit a job config to a Ray cluster (Ray Jobs API)")
    s.add_argument("job", help="jobs/*.yaml (checked here before it is sent)")
    _address_arg(s)
    s.add_argument("--num-workers", type=int, default=None, help="Ray Train workers")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    s.add_argument("--submission-id", default=None, help="the job's id (Ray refuses one already used)")
    s.add_argument("--runtime-env-json", default=None, metavar="JSON",
                   help='extra runtime env, e.g. \'{"py_modules": ["/repo/dist_ctr"]}\' for a dev checkout')
    s.add_argument("--follow", action="store_true", help="tail the logs; exit 0 if the job SUCCEEDED, else 1")
    s.set_defaults(fn=_cmd_submit)

    j = sub.add_parser("jobs", help="list / status / logs / stop jobs on a Ray cluster")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    lp = jsub.add_parser("list", help="all jobs, oldest first")
    _address_arg(lp)
    lp.set_defaults(fn=_cmd_list)
    for name, fn, help_ in (("status", _cmd_status, "one job's state"), ("logs", _cmd_logs, "a job's driver log"),
                            ("stop", _cmd_stop, "stop a job and wait until it has stopped")):
        p = jsub.add_parser(name, help=help_)
        p.add_argument("job_id")
        _address_arg(p)
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="tail until the job ends")
        p.set_defaults(fn=fn)
