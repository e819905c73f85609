"""``dist-ctr registry ...``: read and steer a model registry (:mod:`dist_ctr.pipeline.registry`).

    dist-ctr registry list     REGISTRY_URL [MODEL]
    dist-ctr registry show     REGISTRY_URL MODEL[@published|@v000003] [--json]
    dist-ctr registry events   REGISTRY_URL MODEL [--last N]
    dist-ctr registry promote  REGISTRY_URL MODEL VERSION [--reason TEXT]
    dist-ctr registry rollback REGISTRY_URL MODEL [--to VERSION] [--reason TEXT]

Every command takes ``--storage-options JSON`` (fsspec options of the registry's store: endpoint, credentials).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from typing import Any, Optional

from dist_ctr.strict import ConfigError

__all__ = ["add_registry_command", "parse_json_object", "parse_storage_options"]


def parse_json_object(text: Optional[str], flag: str = "--storage-options") -> Optional[dict[str, Any]]:
    """A JSON object given on the command line as ``flag``, or None; anything else is a ``ConfigError``."""
    if not text:
        return None
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag} is not valid JSON: {e}") from None
    if not isinstance(opts, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {type(opts).__name__}")
    return opts


parse_storage_options = parse_json_object  # ``--storage-options JSON``


def _registry(args: argparse.Namespace):
    from dist_ctr.pipeline.registry import ModelRegistry

    return ModelRegistry(args.registry, parse_storage_options(args.storage_options))


def _when(ts: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "-"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def _cmd_list(args: argparse.Namespace) -> int:
    from dist_ctr.cli_jobs import format_table

    reg = _registry(args)
    if not args.model:
        rows = []
        for m in reg.models():
            pub = reg.published(m)
            rows.append([m, str(len(reg.versions(m))), pub.version if pub else "-"])
        print(format_table(["MODEL", "VERSIONS", "PUBLISHED"], rows) if rows else f"no models under {reg.url}")
        return 0
    pub = reg.published(args.model)
    rows = []
    for v in reg.versions(args.model):
        md = v.metadata
        gate = {True: "passed", False: "rejected"}.get(md.get("gate_passed"), "-")
        rows.append([v.version + (" *" if pub and pub.version == v.version else ""),
                     str(md.get("eval_partition", "-")), str(md.get("window_text") or md.get("window") or "-"),
                     _num((md.get("metrics") or {}).get("auc")), _num((md.get("metrics") or {}).get("logloss")),
                     gate, str(md.get("parent") or "-"), _when(md.get("registered"))])
    if not rows:
        print(f"{reg.url}/{args.model}: no versions")
        return 0
    print(format_table(["VERSION", "EVAL", "WINDOW", "AUC", "LOGLOSS", "GATE", "PARENT", "REGISTERED"], rows))
    print("* published")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    model, _, tag = args.ref.partition("@")
    tag = tag or "published"
    if tag == "published":
        info = reg.published(model)
        if info is None:
            from dist_ctr.errors import RegistryError

            raise RegistryError(f"{reg.url}/{model}: no published version")
    else:
        info = reg.version(model, tag)
    if args.json:
        print(json.dumps(info.metadata, indent=2, sort_keys=True, default=str))
        return 0
    md = info.metadata
    pub = reg.published(model)
    rows = [("version", info.version + (" (published)" if pub and pub.version == info.version else "")),
            ("model file", info.model_path), ("checkpoint", info.checkpoint_url),
            ("window", md.get("window_text") or md.get("window")), ("eval partition", md.get("eval_partition")),
            ("parent", md.get("parent") or "-"), ("warm start", md.get("warm_start")),
            ("gate", {True: "passed", False: "rejected"}.get(md.get("gate_passed"), "-")),
            ("code", md.get("code_version")), ("registered", _when(md.get("registered")))]
    for k, v in rows:
        print(f"{k:<16}{v}")
    for r in md.get("gate_failed") or []:
        print(f"{'failed rule':<16}{r}")
    for label, metrics in (("candidate", md.get("metrics")), ("published then", md.get("published_metrics"))):
        if metrics:
            multi = sum(k.endswith("/auc") for k in metrics) > 1  # multi-task: per-task keys; else unprefixed
            text = "  ".join(f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in sorted(metrics.items())
                             if ("/" in k) == multi or k == "rows")
            print(f"{label:<16}{text}")
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    events = _registry(args).events(args.model)
    for e in events[-args.last:] if args.last else events:
        rest = {k: v for k, v in e.items() if k not in ("event", "time", "candidate", "published")}
        print(f"{_when(e.get('time'))}  {e.get('event', '?'):<13} {json.dumps(rest, sort_keys=True, default=str)}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    info = _registry(args).promote(args.model, args.version, reason=args.reason or "promoted by hand")
    print(f"[registry] published {args.model}@{info.version}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    info = _registry(args).rollback(args.model, to=args.to, reason=args.reason or "")
    print(f"[registry] rolled back: published {args.model}@{info.version}")
    return 0


def add_registry_command(sub: argparse._SubParsersAction) -> None:
    """Register ``registry list|show|events|promote|rollback`` on the CLI's sub-parsers."""
    r = sub.add_parser("registry", help="list, show, promote and roll back registry versions")
    rs = r.add_subparsers(dest="registry_command", required=True)

    def cmd(name: str, help_: str, fn) -> argparse.ArgumentParser:
        p = rs.add_parser(name, help=help_)
        p.add_argument("registry", help="the registry URL (s3://bucket/models, a local directory, ...)")
        p.add_argument("--storage-options", default=None, metavar="JSON", help="fsspec options of the store")
        p.set_defaults(fn=fn)
        return p

    cmd("list", "models, or the versions of one model", _cmd_list).add_argument("model", nargs="?")
    cmd("show", "one version's metadata", _cmd_show).add_argument("ref", help="MODEL, MODEL@published, MODEL@v000003")
    rs.choices["show"].add_argument("--json", action="store_true", help="the whole metadata as JSON")
    ev = cmd("events", "the model's event log", _cmd_events)
    ev.add_argument("model")
    ev.add_argument("--last", type=int, default=0, help="only the last N events")
    pr = cmd("promote", "publish a complete version", _cmd_promote)
    pr.add_argument("model")
    pr.add_argument("version")
    pr.add_argument("--reason", default=None)
    rb = cmd("rollback", "publish the previously published version (or --to VERSION)", _cmd_rollback)
    rb.add_argument("model")
    rb.add_argument("--to", default=None, metavar="VERSION")
    rb.add_argument("--reason", default=None)
