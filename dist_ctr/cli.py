"""``dist-ctr``: the command line. Parsing only; the work happens in the rooms it calls.

    dist-ctr train JOB.yaml [--set key=value ...] [--ray --num-workers N] [--spawn N]
    dist-ctr plan JOB.yaml --world-size 16 --device cuda --hbm-gb 80
    dist-ctr data synth ... | dist-ctr data convert-criteo ...
    dist-ctr export CHECKPOINT OUT
    dist-ctr predict MODEL DATA_URL OUT_URL
    dist-ctr models
    dist-ctr report RUN_DIR [--out DIR]      (plots + summary from <output_dir>/<job name>/metrics.jsonl)
    dist-ctr submit JOB.yaml --address http://HOST:8265 [--num-workers N] [--set k=v] [--follow]
    dist-ctr jobs list|status|logs|stop [JOB_ID] --address http://HOST:8265 [--follow]

A user's mistake (bad config key, missing file, bad data, a checkpoint or model file that does not fit, storage
that refuses) is a ``DistCtrError`` (``dist_ctr/errors.py``): one clear line, exit status 2. Anything else is a
bug and keeps its traceback. Ctrl-C prints one line and exits 130. Set DIST_CTR_DEBUG=1 to see the full
traceback of a user error too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import yaml

from dist_ctr.cli_report import add_report_command
from dist_ctr.errors import DistCtrError
from dist_ctr.strict import ConfigError


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from dist_ctr.config import load_job

    overrides = _parse_set(args.set or [])
    if args.num_workers is not None:
        overrides["distributed.ray.num_workers"] = args.num_workers
    job = load_job(args.job, overrides)
    _check_train_outputs(job, ray=args.ray or job.distributed.launcher == "ray")
    if args.ray or job.distributed.launcher == "ray":
        from dist_ctr.launch.ray_train import run_ray_job

        result = run_ray_job(job)
        print("\n".join(_ray_summary_lines(job, result)), flush=True)
        return 0
    world = args.spawn or (job.distributed.world_size if job.distributed.launcher == "spawn" else 1)
    if world > 1:
        from dist_ctr.launch.spawn import spawn
        from dist_ctr.train.job import run_job_summary

        spawn(run_job_summary, world, job)
        return 0
    from dist_ctr.distributed.env import DistEnv, init_process_group
    from dist_ctr.train.job import run_job

    env = DistEnv.from_environ()
    init_process_group(env)
    run_job(job, env)
    return 0


def _check_train_outputs(job: Any, ray: bool) -> None:
    """Before any work: the run directory (and, off Ray, the checkpoint dir) can be written."""
    from dist_ctr.storage import check_writable

    check_writable(f"{job.output_dir.rstrip('/')}/{job.name}/.dist_ctr")
    ck = job.train.checkpoint
    if ck.dir and not ray:  # under Ray the checkpoint dir may be a path only the workers see
        check_writable(f"{ck.dir.rstrip('/')}/.dist_ctr", ck.storage_options)


def _ray_summary_lines(job: Any, result: dict[str, Any]) -> list[str]:
    """The end of a ``--ray`` run on the driver: a short aligned block (the full summary is in the JSON file)."""
    def metrics(d: dict[str, Any]) -> str:
        first = ("auc", "logloss", "mse", "mae")
        parts = [f"{k} {float(d[k]):.4f}" for k in first if k in d]
        parts += [f"{k} {float(v):.4f}" for k, v in d.items() if k not in first and not k.endswith("rows")
                  and isinstance(v, (int, float))][:4]
        rows = next((v for k, v in d.items() if k.endswith("rows")), None)
        return "   ".join(parts) + (f"   rows {int(rows):,}" if rows else "")

    rows = [("workers", f"{(result.get('world_size') or job.distributed.ray.num_workers)} Ray Train workers, "
                        f"{int(result.get('steps', 0)):,} steps")]
    if result.get("samples_per_s"):
        rows.append(("samples/s", f"{float(result['samples_per_s']):,.0f} (training, all workers)"))
    for key, label in (("eval", "eval"), ("train", "train"), ("baseline_eval", "baseline")):
        if result.get(key):
            rows.append((label, metrics(result[key])))
    rows += [("checkpoint", result.get("checkpoint") or "none"),
             ("ray ckpt", result.get("ray_checkpoint") or "none"),
             ("summary", f"{job.output_dir.rstrip('/')}/{job.name}/ray_summary.json")]
    from dist_ctr.data.reports import report_rows

    rows += report_rows(result.get("data_report"))  # skipped / filled, merged over the workers
    return [f"[ray] {job.name}: finished"] + [f"  {k:<11} {v}" for k, v in rows]


def _cmd_plan(args: argparse.Namespace) -> int:
    from dist_ctr.config import load_job, load_schema
    from dist_ctr.data.config import DEFAULT_BATCH_SIZE
    from dist_ctr.distributed.planner import run_plan_command
    from dist_ctr.distributed.sharding_config import ShardingConfig

    job = load_job(args.job)
    schema = load_schema(job.schema)
    sharding = ShardingConfig.from_dict(job.distributed.sharding) if job.distributed.sharding else None
    batch = args.batch_size or int(job.data.train.get("batch_size", DEFAULT_BATCH_SIZE))
    code, text = run_plan_command(schema, world_size=args.world_size, device=args.device, hbm_gb=args.hbm_gb,
                                  ddr_gb=args.ddr_gb, batch_size=batch, optimizer=job.optim.sparse.name,
                                  sharding=sharding, local_world_size=args.local_world_size)
    print(text)
    if args.throughput and code == 0:
        from dist_ctr.distributed.throughput_cli import print_throughput

        print_throughput(job, schema, sharding, batch, args.profile, args.hbm_gb)
    return code


def _cmd_models(args: argparse.Namespace) -> int:
    import dataclasses

    from dist_ctr.models import MODEL_REGISTRY

    for name in sorted(MODEL_REGISTRY):
        e = MODEL_REGISTRY[name]
        keys = ", ".join(f.name for f in dataclasses.fields(e.config_cls))
        print(f"{name:20s} {keys}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from dist_ctr.train.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"[export] wrote {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dist_ctr.cli_registry import parse_storage_options
    from dist_ctr.pipeline.registry import resolve_model_ref
    from dist_ctr.train.export import predict_parquet

    opts = parse_storage_options(args.storage_options)
    model = resolve_model_ref(args.model, opts)  # <registry>/<model>@published | @v000003 -> its model.pt
    if model != args.model:
        print(f"[predict] {args.model} -> {model}")
    report: dict[str, Any] = {}
    n = predict_parquet(model, args.data, args.out, batch_size=args.batch_size, storage_options=opts, report=report)
    print(f"[predict] wrote {n:,} predictions to {args.out}")
    from dist_ctr.data.reports import report_rows

    for k, v in report_rows(report):
        print(f"  {k:<8} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dist-ctr", description="CTR / ranking models on TorchRec, local to Ray cluster.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a job config")
    t.add_argument("job", help="jobs/*.yaml")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=2")
    t.add_argument("--ray", action="store_true", help="run as Ray Train workers")
    t.add_argument("--num-workers", type=int, default=None, help="Ray workers (with --ray)")
    t.add_argument("--spawn", type=int, default=0, metavar="N", help="run N local processes (gloo / nccl)")
    t.set_defaults(fn=_cmd_train)

    pl = sub.add_parser("plan", help="print a sharding plan and per-device memory for a hypothetical cluster")
    pl.add_argument("job")
    pl.add_argument("--world-size", type=int, required=True)
    pl.add_argument("--local-world-size", type=int, default=None)
    pl.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    pl.add_argument("--hbm-gb", type=float, default=None)
    pl.add_argument("--ddr-gb", type=float, default=None)
    pl.add_argument("--batch-size", type=int, default=None)
    pl.add_argument("--throughput", action="store_true", help="predicted samples/s on 8..128 devices (a model)")
    pl.add_argument("--profile", default="h200", help="device profile of --throughput: h200, h100, b200, a100, cpu")
    pl.set_defaults(fn=_cmd_plan)

    d = sub.add_parser("data", help="synthetic data and Criteo conversion")
    from dist_ctr.cli_data import add_data_commands

    add_data_commands(d.add_subparsers(dest="data_command", required=True))

    m = sub.add_parser("models", help="list registered models and their config keys")
    m.set_defaults(fn=_cmd_models)
    from dist_ctr.cli_jobs import add_jobs_commands

    add_jobs_commands(sub)  # submit, jobs list|status|logs|stop (Ray Jobs API)

    e = sub.add_parser("export", help="gather a sharded checkpoint into a single-process model file")
    e.add_argument("checkpoint")
    e.add_argument("out")
    e.set_defaults(fn=_cmd_export)

    pr = sub.add_parser("predict", help="batch inference on Parquet with an exported model")
    pr.add_argument("model", help="an exported model file, or REGISTRY/MODEL@published / @v000003")
    pr.add_argument("data")
    pr.add_argument("out")
    pr.add_argument("--batch-size", type=int, default=8192)
    pr.add_argument("--storage-options", default=None, metavar="JSON",
                    help="fsspec options (endpoint, credentials) for the model, data and output stores")
    pr.set_defaults(fn=_cmd_predict)
    from dist_ctr.cli_registry import add_registry_command

    add_registry_command(sub)  # dist-ctr registry list|show|events|promote|rollback
    add_report_command(sub)
    from dist_ctr.cli_retrain import add_retrain_command

    add_retrain_command(sub)  # dist-ctr retrain PIPELINE.yaml (scheduled retraining)
    return p


USER_ERRORS: tuple[type[BaseException], ...] = (DistCtrError,)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not hasattr(args, "fn"):
        build_parser().print_help()
        return 2
    try:
        if os.environ.get("DIST_CTR_DEBUG"):
            return int(args.fn(args) or 0)
        try:
            return int(args.fn(args) or 0)
        except USER_ERRORS as e:
            print(f"dist-ctr: error: {_one_line(e)}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        print("\ndist-ctr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dist-ctr models | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _one_line(e: BaseException) -> str:
    """The error's message on one line (the lines of a multi-line message joined by ``; ``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    return "; ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
