"""The shipped pipeline (jobs/retrain_daily.yaml) loads strictly and builds; the retraining CronJob is a
well-formed batch/v1 CronJob whose command our own CLI parser accepts and whose pipeline loads with its
overrides."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRON = ROOT / "cluster" / "retrain_cronjob.yaml"


def test_retrain_daily_pipeline_loads_and_builds():
    from dist_ctr.config import load_schema
    from dist_ctr.models import build_model
    from dist_ctr.pipeline.config import load_pipeline
    from dist_ctr.pipeline.partitions import choose_window  # noqa: F401 (importable)

    cfg = load_pipeline(ROOT / "jobs" / "retrain_daily.yaml")
    assert cfg.retrain.model_name == "ctr_daily" and cfg.retrain.window.mode == "since_parent"
    assert cfg.retrain.synth is not None and cfg.retrain.synth.days == sorted(cfg.retrain.synth.days)
    assert cfg.retrain.eval_partition == "newest_complete" and cfg.retrain.gate.min_auc is not None
    schema = load_schema(cfg.schema)
    build_model(cfg.model.name, schema, cfg.model.config)
    cfg2 = load_pipeline(ROOT / "jobs" / "retrain_daily.yaml", {"retrain.registry": "s3://b/models"})
    assert cfg2.retrain.registry == "s3://b/models"


def test_retrain_pipeline_typos_are_named(tmp_path):
    from dist_ctr.pipeline.config import load_pipeline
    from dist_ctr.strict import ConfigError

    with pytest.raises(ConfigError, match=r"retrain.window: unknown key 'lastn'"):
        load_pipeline(ROOT / "jobs" / "retrain_daily.yaml", {"retrain.window.lastn": 3})
    with pytest.raises(ConfigError, match=r"retrain.catch_up: must be one of"):
        load_pipeline(ROOT / "jobs" / "retrain_daily.yaml", {"retrain.catch_up": "later"})


def _dist_ctr_argv(args_text: str) -> list[str]:
    """The `dist-ctr ...` command after `ray job submit ... --`, shell variables given sample values."""
    text = args_text.replace("$(date -u -d yesterday +%F)", "2026-11-05")
    for var, val in {"AS_OF": "2026-11-05", "REGISTRY": "s3://b/reg", "DATA_ROOT": "s3://lake/c",
                     "RAY_ADDRESS": "http://h:8265"}.items():
        text = text.replace(f"${var}", val)
    words = shlex.split(text)
    return words[words.index("--") + 1:]


def test_retrain_cronjob_structure_and_command():
    from dist_ctr.cli import _parse_set, build_parser
    from dist_ctr.pipeline.config import load_pipeline

    doc = yaml.safe_load(CRON.read_text())
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    env = {e["name"] for e in container["env"]}
    assert {"REGISTRY", "DATA_ROOT"} <= env
    script = " ".join(container["args"])
    assert re.search(r'--submission-id "retrain-ctr_daily-\$AS_OF"', script)
    argv = _dist_ctr_argv(script)
    assert argv[0] == "dist-ctr"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "retrain" and args.as_of == "2026-11-05"
    cfg = load_pipeline(ROOT / args.pipeline, _parse_set(args.set))
    assert cfg.retrain.registry == "s3://b/reg" and cfg.retrain.data_root == "s3://lake/c"
    assert cfg.distributed.launcher == "ray" and cfg.retrain.synth is None
