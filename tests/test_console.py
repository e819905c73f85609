"""What a person sees: ``dist-ctr train`` / ``export`` / ``predict`` print no Python (or torch logging) warnings,
and nothing in dist_ctr filters warnings process-wide to get there.

The commands run as subprocesses: pytest's own ``filterwarnings`` (pyproject) would hide warnings in-process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# ``...py:NN: UserWarning: ...`` (Python warnings) and ``W1204 12:00:00.0 pid torch/...py:NN] ...`` (torch logging)
NOISE = re.compile(r"(\w*Warning: )|(^W\d{4} \d\d:\d\d)|(\bwarn)", re.IGNORECASE)


def _cli(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "dist_ctr.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def _noise(out: str) -> list[str]:
    return [line for line in out.splitlines() if NOISE.search(line)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny single-process ``dist-ctr train`` (4 steps, a checkpoint) and its console."""
    from tests.distributed.equivalence_jobs import tiny_schema

    d = tmp_path_factory.mktemp("console")
    tiny_schema().save(str(d / "schema.yaml"))
    raw = {
        "name": "console", "seed": 1, "schema": {"path": str(d / "schema.yaml")},
        "data": {"synth": {"out": str(d / "data"), "rows": 256, "eval_rows": 128, "shards": 2, "row_group_rows": 64,
                           "seed": 5},
                 "train": {"batch_size": 64}, "eval": {"batch_size": 128}},
        "model": {"name": "DeepFM"},
        "train": {"epochs": 1, "log_every": 2, "checkpoint": {"dir": str(d / "ck"), "keep": 1, "resume": False}},
        "output_dir": str(d / "runs"),
    }
    (d / "job.yaml").write_text(yaml.safe_dump(raw))
    out = _cli("train", str(d / "job.yaml"), cwd=d)
    return d, out


def test_train_console_is_clean(trained):
    _d, out = trained
    assert "[result] console" in out, out
    assert _noise(out) == [], out


def test_export_and_predict_consoles_are_clean(trained):
    d, _ = trained
    out = _cli("export", str(d / "ck"), str(d / "model.pt"), cwd=d)
    assert "[export] wrote" in out and _noise(out) == [], out
    out = _cli("predict", str(d / "model.pt"), str(d / "data" / "eval"), str(d / "pred.parquet"), cwd=d)
    assert "[predict] wrote 128 predictions" in out and _noise(out) == [], out


def test_quiet_torchrec_filters_no_warnings_process_wide():
    from dist_ctr.distributed.model_parallel import quiet_torchrec

    before = list(warnings.filters)
    quiet_torchrec()
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.warn("still shown", UserWarning)
    assert [str(w.message) for w in caught] == ["still shown"]


def test_ray_driver_summary_is_an_aligned_block():
    from types import SimpleNamespace

    from dist_ctr.cli import _ray_summary_lines

    job = SimpleNamespace(name="demo", output_dir="/runs",
                          distributed=SimpleNamespace(ray=SimpleNamespace(num_workers=2)))
    result = {"eval": {"auc": 0.81234, "logloss": 0.44, "eval_rows": 5000.0}, "train": {}, "baseline_eval": {},
              "samples_per_s": 12345.6, "steps": 40, "checkpoint": "/ck/step_00000040", "world_size": 2,
              "ray_checkpoint": "/ray/demo/pointer_step_00000040", "step_losses": [[1, 0.7]]}
    lines = _ray_summary_lines(job, result)
    assert lines[0] == "[ray] demo: finished"
    text = "\n".join(lines)
    assert "eval        auc 0.8123   logloss 0.4400   rows 5,000" in text
    assert "samples/s   12,346" in text and "/runs/demo/ray_summary.json" in text
    assert "{" not in text  # no raw dict
