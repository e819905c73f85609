"""Run logs: a tiny job through ``dist-ctr train`` writes TensorBoard scalars and ``metrics.jsonl`` that agree,
prints the aligned summary, and ``dist-ctr report`` turns the files into PNGs and a summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dist_ctr.cli import main

ROWS, EVAL_ROWS, BATCH, LOG_EVERY = 1024, 256, 64, 2
STEPS = ROWS // BATCH  # one epoch
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train the tiny job once through the CLI; returns (run dir, captured stdout)."""
    for mod in ("dist_ctr.data.loader", "dist_ctr.data.synthetic", "dist_ctr.data.config"):
        pytest.importorskip(mod)
    from tests.distributed.equivalence_jobs import tiny_schema

    d = tmp_path_factory.mktemp("obs")
    tiny_schema().save(str(d / "schema.yaml"))
    raw = {
        "name": "obs", "seed": 1,
        "schema": {"path": str(d / "schema.yaml")},
        "data": {"synth": {"out": str(d / "data"), "rows": ROWS, "eval_rows": EVAL_ROWS, "shards": 2,
                           "row_group_rows": 256, "seed": 5},
                 "train": {"batch_size": BATCH}, "eval": {"batch_size": 256}},
        "model": {"name": "LogisticRegression"},
        "optim": {"sparse": {"lr": 0.1}, "dense": {"lr": 0.01}},
        "train": {"epochs": 1, "log_every": LOG_EVERY, "progress": False, "eval_train": True},
        "output_dir": str(d / "out"),
    }
    (d / "job.yaml").write_text(yaml.safe_dump(raw))
    return d, raw


@pytest.fixture(scope="module")
def trained(run):
    import contextlib
    import io

    d, raw = run
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", str(d / "job.yaml")]) == 0
    return d / "out" / "obs", buf.getvalue(), raw


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_match_the_metrics_jsonl(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _out, raw = trained
    recs = _records(run_dir)
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert [r["kind"] for r in recs].count("epoch") == 1
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["split"] for r in evals] == ["eval", "train"] and all(r["step"] == STEPS for r in evals)
    assert evals[0]["eval_rows"] == EVAL_ROWS and 0.0 < evals[0]["auc"] < 1.0

    ea = EventAccumulator(str(run_dir / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    expected = {"train/loss", "train/samples_per_s", "train/epoch", "lr/dense", "lr/sparse", "epoch/loss",
                "eval/label/auc", "eval/label/logloss", "eval/rows", "eval_train/label/auc"}
    assert expected <= tags, sorted(tags)
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-6)  # float32 in TB
    assert [e.value for e in ea.Scalars("lr/sparse")] == pytest.approx([raw["optim"]["sparse"]["lr"]] * len(train))
    assert [e.value for e in ea.Scalars("lr/dense")] == pytest.approx([raw["optim"]["dense"]["lr"]] * len(train))
    auc = ea.Scalars("eval/label/auc")
    assert [e.step for e in auc] == [STEPS] and auc[0].value == pytest.approx(evals[0]["auc"], rel=1e-6)


def test_aligned_summary_is_printed(trained):
    run_dir, out, _raw = trained
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("[result] obs:"))
    assert f"{STEPS} steps in" in lines[head]
    block = lines[head + 1:]
    labels = {ln.split()[0]: ln for ln in block if ln.startswith("  ")}
    assert {"samples/s", "eval", "train", "tensorboard", "metrics"} <= set(labels)
    assert "auc 0." in labels["eval"] and "rows 256" in labels["eval"]
    assert str(run_dir / "tb") in labels["tensorboard"]
    starts = {len(ln) - len(ln[2:].split(None, 1)[1]) for ln in labels.values()}  # value column
    assert len(starts) == 1, labels


def test_report_writes_pngs_and_a_summary(trained, tmp_path, capsys):
    run_dir, _out, _raw = trained
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    pngs = sorted((tmp_path / "rep").glob("*.png"))
    assert {p.name for p in pngs} == {"loss.png", "samples_per_s.png", "eval_auc.png"}
    for p in pngs:
        data = p.read_bytes()
        assert len(data) > 0 and data.startswith(PNG), p
        assert f"[report] wrote {p}" in printed
    summary = (tmp_path / "rep" / "summary.txt").read_text()
    assert re.search(rf"^steps +{STEPS}$", summary, re.M) and re.search(r"^eval +auc 0\.\d{4}", summary, re.M)
    assert summary.strip() in printed


@pytest.mark.parametrize("make", ["missing", "empty_dir", "empty_file"])
def test_report_on_a_bad_run_dir_is_one_line(tmp_path, capsys, make):
    d = tmp_path / "run"
    if make != "missing":
        d.mkdir()
    if make == "empty_file":
        (d / "metrics.jsonl").write_text("")
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dist-ctr: error:") and str(d) in err[0], err


def test_remote_run_dir_is_written_locally_and_copied_at_close():
    import fsspec

    from dist_ctr.train.observability import RunLogger

    url = "memory://obs_remote/job"
    log = RunLogger(url, sparse_lr=0.1)
    log.task_names = ("click",)
    log.log_eval(7, {"eval_rows": 8.0, "auc": 0.75, "logloss": 0.5})
    log.close()
    log.close()  # idempotent
    fs = fsspec.filesystem("memory")
    rec = json.loads(fs.cat(f"{url}/metrics.jsonl").decode())
    assert rec == {"step": 7, "kind": "eval", "split": "eval", "eval_rows": 8.0, "auc": 0.75, "logloss": 0.5}
    assert any("tfevents" in p for p in fs.ls(f"{url}/tb", detail=False))
    assert RunLogger(url, enabled=False).log_eval(1, {"auc": 0.5}) is None  # other ranks: no-op, no files
