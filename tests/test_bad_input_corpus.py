"""The bad-input corpus: every door of ``dist-ctr`` given something wrong answers with one line naming the offending
thing (exit 2, no traceback), or, under a skip / fill policy, trains and reports what it skipped or filled.

Doors: job config (train, optimizers, checkpoint, Ray), model configs, schema, data, checkpoints (resume, export,
``load_weights``), model files (predict), outputs, storage (loopback S3: unreachable endpoint, missing bucket, a
bucket deleted mid-epoch). One tiny job is trained once per module (two committed checkpoints, steps 4 and 8)
and exported once; each case copies what it corrupts into its own ``tmp_path``.

A planted pickle (its payload would create a canary file) is given to every loading command: the canary never
appears and the refusal is one line.
"""

from __future__ import annotations

import copy
import json
import pickle
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from dist_ctr.cli import main
from dist_ctr.errors import DistCtrError
from tests.object_store import free_port, new_bucket, s3_options

ROWS, EVAL_ROWS, BATCH = 256, 64, 32  # 8 steps per epoch; checkpoints at steps 4 and 8


# ---- shared fixtures (once per module) -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    """A tiny trained DeepFM job: schema, data, checkpoint root (steps 4, 8), exported model, the raw job dict."""
    from tests.distributed.equivalence_jobs import tiny_schema

    d = tmp_path_factory.mktemp("corpus")
    tiny_schema().save(str(d / "schema.yaml"))
    raw = {"name": "corpus", "seed": 1, "schema": {"path": str(d / "schema.yaml")},
           "data": {"synth": {"out": str(d / "data"), "rows": ROWS, "eval_rows": EVAL_ROWS, "shards": 2,
                              "row_group_rows": 64, "seed": 5},
                    "train": {"batch_size": BATCH}, "eval": {"batch_size": 64}},
           "model": {"name": "DeepFM", "config": {"dnn_hidden_units": [16]}},
           "optim": {"sparse": {"lr": 0.1}, "dense": {"lr": 0.01}},
           "train": {"epochs": 1, "log_every": 2, "progress": False,
                     "checkpoint": {"dir": str(d / "ck"), "every_steps": 4, "keep": 3}},
           "output_dir": str(d / "out")}
    (d / "job.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(d / "job.yaml")]) == 0
    assert sorted(p.name for p in (d / "ck").iterdir()) == ["step_00000004", "step_00000008"]
    assert main(["export", str(d / "ck"), str(d / "model.pt")]) == 0
    return {"dir": d, "raw": raw, "ck": d / "ck", "model": d / "model.pt", "train": d / "data" / "train",
            "eval": d / "data" / "eval"}


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *head, last = dotted.split(".")
    for k in head:
        node = node.setdefault(k, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value


_DELETE = object()


def job_file(base: dict[str, Any], tmp: Path, changes: dict[str, Any] | None = None, fresh_ck: bool = True) -> str:
    """The base job with ``changes`` (dotted keys), its outputs (and, by default, a copy of the checkpoints)
    under ``tmp``."""
    raw = copy.deepcopy(base["raw"])
    raw["output_dir"] = str(tmp / "out")
    if fresh_ck:
        shutil.copytree(base["ck"], tmp / "ck")
    raw["train"]["checkpoint"]["dir"] = str(tmp / "ck")
    for k, v in (changes or {}).items():
        _set(raw, k, v)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    """``dist-ctr ARGS`` in this process: (exit status, stdout, stderr); never a traceback."""
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return rc, out, err


def refused(capsys, args: list[str], *needles: str) -> str:
    """Exit 2 with one ``dist-ctr: error:`` line holding every needle; returns that line."""
    rc, out, err = run_cli(capsys, args)
    lines = [ln for ln in err.splitlines() if ln.startswith("dist-ctr: error:")]
    assert rc == 2 and len(lines) == 1, (rc, out, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


class _Canary:
    """Unpickling this object creates the file at ``path`` (what a planted payload would do, harmlessly)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _planted_pickle(canary: Path) -> bytes:
    return pickle.dumps({"state": _Canary(canary)})


# ---- job config: every number range- and type-checked with its key path ----------------------------------------
CONFIG_CASES = [
    ("train.epochs", -1, "must be >= 1"),
    ("train.epochs", 0, "must be >= 1"),
    ("train.epochs", "two", "expected an integer"),
    ("train.epochs", 1.5, "expected an integer"),
    ("train.max_steps", -1, "must be >= 0"),
    ("train.log_every", -5, "must be >= 0"),
    ("train.eval_every_steps", -1, "must be >= 0"),
    ("train.checkpoint.every_steps", -1, "must be >= 0"),
    ("train.checkpoint.keep", -2, "must be >= 0"),
    ("train.checkpoint.resume", "yes", "expected true/false"),
    ("optim.dense.lr", 0, "must be > 0"),
    ("optim.dense.lr", float("inf"), "finite"),
    ("optim.dense.weight_decay", -0.1, "must be >= 0"),
    ("optim.sparse.lr", -0.1, "must be > 0"),
    ("optim.sparse.eps", 0, "must be > 0"),
    ("optim.sparse.weight_decay", -1, "must be >= 0"),
    ("optim.sparse.name", "lamb", "must be one of"),
    ("distributed.ray.num_workers", 0, "must be >= 1"),
    ("distributed.world_size", 0, "must be >= 1"),
    ("distributed.launcher", "slurm", "must be one of"),
    ("data.synth.rows", 0, "must be >= 1"),
    ("seed", -3, "must be >= 0"),
]


@pytest.mark.parametrize("key,value,what", CONFIG_CASES, ids=[f"{k}={v}" for k, v, _ in CONFIG_CASES])
def test_job_config_numbers(base, tmp_path, capsys, key, value, what):
    job = job_file(base, tmp_path, {key: value}, fresh_ck=False)
    refused(capsys, ["train", job], f"{key}:", what)


@pytest.mark.parametrize("key,value,needle", [
    ("data.train.batch_size", 0, "batch_size"),
    ("data.train.on_non_finite", "ignore", "on_non_finite"),
    ("data.train.dense", {"fill_na": float("nan")}, "fill_na"),
    ("train.epoch", 2, "unknown key 'epoch'"),
])
def test_job_config_sections(base, tmp_path, capsys, key, value, needle):
    job = job_file(base, tmp_path, {key: value}, fresh_ck=False)
    refused(capsys, ["train", job], needle)


def test_job_file_missing_broken_and_bad_set(base, tmp_path, capsys):
    refused(capsys, ["train", str(tmp_path / "nope.yaml")], "job file not found", "nope.yaml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    refused(capsys, ["train", str(tmp_path / "broken.yaml")], "broken.yaml", "cannot parse YAML")
    job = job_file(base, tmp_path, fresh_ck=False)
    refused(capsys, ["train", job, "--set", "train.epochs"], "--set expects key=value")


# ---- model configs (strict loader, key path model.config.<key>) ---------------------------------------------
def test_model_unknown_name_and_key(base, tmp_path, capsys):
    job = job_file(base, tmp_path, {"model.name": "NoSuchModel"}, fresh_ck=False)
    refused(capsys, ["train", job], "NoSuchModel")
    job = job_file(base, tmp_path, {"model.config.bogus_key": 1}, fresh_ck=False)
    refused(capsys, ["train", job], "bogus_key")


MODEL_CONFIG_CASES = [
    ("dnn_hidden_units", ["a", "b"]),
    ("dnn_hidden_units", "wide"),
    ("dnn_dropout", "high"),
    ("l2_reg_embedding", [1, 2]),
]


@pytest.mark.parametrize("key,value", MODEL_CONFIG_CASES, ids=[f"{k}={v}" for k, v in MODEL_CONFIG_CASES])
def test_model_config_values(base, tmp_path, capsys, key, value):
    job = job_file(base, tmp_path, {f"model.config.{key}": value}, fresh_ck=False)
    refused(capsys, ["train", job], f"model.config.{key}")


def test_model_config_refused_by_the_layers(base, tmp_path, capsys):
    job = job_file(base, tmp_path, {"model.config.dnn_activation": "swishy"}, fresh_ck=False)
    refused(capsys, ["train", job], "model 'DeepFM'", "unknown activation 'swishy'")


# ---- schema --------------------------------------------------------------------------------------------------
def test_schema_file_errors(base, tmp_path, capsys):
    job = job_file(base, tmp_path, {"schema.path": str(tmp_path / "missing.yaml")}, fresh_ck=False)
    refused(capsys, ["train", job], "schema file not found", "missing.yaml")
    (tmp_path / "broken.yaml").write_text("features: [\n")
    job = job_file(base, tmp_path, {"schema.path": str(tmp_path / "broken.yaml")}, fresh_ck=False)
    refused(capsys, ["train", job], "broken.yaml", "cannot parse")
    job = job_file(base, tmp_path, {"schema.path": _DELETE, "schema.preset": "no-such-preset"}, fresh_ck=False)
    refused(capsys, ["train", job], "no-such-preset")


def test_schema_bad_feature(base, tmp_path, capsys):
    raw = yaml.safe_load(Path(base["raw"]["schema"]["path"]).read_text())
    raw["features"][0]["vocabulary_size"] = 0
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    job = job_file(base, tmp_path, {"schema.path": str(tmp_path / "s.yaml")}, fresh_ck=False)
    refused(capsys, ["train", job], "vocabulary_size")


# ---- data ------------------------------------------------------------------------------------------------------
def _copy_data(base: dict[str, Any], dst: Path, edit: Callable[[pa.Table], pa.Table] | None = None,
               every_file: bool = False) -> Path:
    """The base training files (2 files of 2 row groups of 64 rows) under ``dst``; ``edit`` rewrites the first
    file (every file with ``every_file``)."""
    dst.mkdir(parents=True)
    files = sorted(base["train"].glob("*.parquet"))
    for i, f in enumerate(files):
        if (i == 0 or every_file) and edit is not None:
            pq.write_table(edit(pq.read_table(f)), dst / f.name, row_group_size=64)
        else:
            shutil.copy(f, dst / f.name)
    return dst / files[0].name


def _with_column(t: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, pa.array(values))


def _inf_x(t: pa.Table) -> pa.Table:
    x = t.column("x").to_numpy().astype(np.float32).copy()
    x[[70, 71, 100]] = [np.inf, -np.inf, np.inf]  # row group 1
    return _with_column(t, "x", x)


def _data_job(base, tmp, data: Path, **more: Any) -> str:
    changes = {"data.train.url": str(data), "train.checkpoint.dir": _DELETE, **more}
    raw_job = job_file(base, tmp, changes, fresh_ck=False)
    return raw_job


def test_inf_in_dense_column_names_file_row_group_column(base, tmp_path, capsys):
    f = _copy_data(base, tmp_path / "d", _inf_x)
    refused(capsys, ["train", _data_job(base, tmp_path, tmp_path / "d")], f.name, "row group 1", "column 'x'",
            "non-finite", "on_non_finite: fill")


def test_inf_fill_policy_counts_and_reports(base, tmp_path, capsys):
    _copy_data(base, tmp_path / "d", _inf_x)
    rc, out, _ = run_cli(capsys, ["train", _data_job(base, tmp_path, tmp_path / "d",
                                                    **{"data.train.on_non_finite": "fill"})])
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("filled"))
    assert "3 non-finite dense value(s): x 3" in line


@pytest.mark.parametrize("name,edit,needles", [
    ("label", lambda t: _with_column(t, "label", np.where(np.arange(t.num_rows) == 5, 2, 0).astype(np.int64)),
     ["column 'label'", "0 or 1"]),
    ("id", lambda t: _with_column(t, "u", np.full(t.num_rows, 999, np.int64)), ["column 'u'", "999"]),
    ("missing", lambda t: t.drop_columns(["c"]), ["column 'c'", "missing column"]),
])
def test_bad_values_name_file_and_column(base, tmp_path, capsys, name, edit, needles):
    f = _copy_data(base, tmp_path / "d", edit)
    refused(capsys, ["train", _data_job(base, tmp_path, tmp_path / "d")], f.name, *needles)


def test_corrupt_file_error_and_skip_report(base, tmp_path, capsys):
    f = _copy_data(base, tmp_path / "d")
    f.write_bytes(f.read_bytes()[: 300])
    job = _data_job(base, tmp_path, tmp_path / "d")
    refused(capsys, ["train", job], f.name)
    job = _data_job(base, tmp_path, tmp_path / "d", **{"data.train.on_bad_file": "skip"})
    rc, out, _ = run_cli(capsys, ["train", job])
    assert rc == 0
    assert "skipped     1 bad file(s) / row group(s)" in out and f.name in out


def test_bad_row_group_skip_report_counts_rows(base, tmp_path, capsys):
    def bad_rg(t: pa.Table) -> pa.Table:
        y = t.column("label").to_numpy().astype(np.int64).copy()
        y[64 + 3] = 7  # row group 1 only
        return _with_column(t, "label", y)

    f = _copy_data(base, tmp_path / "d", bad_rg)
    job = _data_job(base, tmp_path, tmp_path / "d", **{"data.train.on_bad_file": "skip"})
    rc, out, _ = run_cli(capsys, ["train", job])
    assert rc == 0
    assert "1 bad file(s) / row group(s), 64 rows" in out
    assert f"{f}, row group 1, column 'label'" in out


def test_data_url_missing(base, tmp_path, capsys):
    refused(capsys, ["train", _data_job(base, tmp_path, tmp_path / "nowhere")], "nowhere")


# ---- checkpoints: resume ---------------------------------------------------------------------------------------
def _newest(ck: Path) -> Path:
    return ck / "step_00000008"


def _truncate(p: Path, keep: float = 0.5) -> None:
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])


def _resume(base, tmp, capsys, changes: dict[str, Any] | None = None, corrupt: Callable[[Path], None] | None = None):
    job = job_file(base, tmp, {"train.epochs": 2, **(changes or {})})
    if corrupt is not None:
        corrupt(tmp / "ck")
    return job


@pytest.mark.parametrize("name,corrupt,why", [
    ("truncated shard", lambda ck: _truncate(_newest(ck) / "__0_0.distcp"), "shard __0_0.distcp is truncated"),
    ("missing shard", lambda ck: (_newest(ck) / "__0_0.distcp").unlink(), "shard __0_0.distcp is missing"),
    ("corrupt index", lambda ck: _truncate(_newest(ck) / ".metadata"), "corrupt shard index"),
    ("corrupt marker", lambda ck: (_newest(ck) / "COMMITTED").write_text('{"step": 8, "sch'), "corrupt commit marker"),
    ("uncommitted", lambda ck: (_newest(ck) / "COMMITTED").unlink(), "not committed"),
])
def test_resume_skips_a_torn_newest_checkpoint_and_says_why(base, tmp_path, capsys, name, corrupt, why):
    job = _resume(base, tmp_path, capsys, corrupt=corrupt)
    rc, out, _ = run_cli(capsys, ["train", job])
    assert rc == 0
    skipped = [ln for ln in out.splitlines() if ln.startswith("[train] resume: skipped")]
    assert len(skipped) == 1 and "step_00000008" in skipped[0] and why in skipped[0], out
    assert "resumed from " + str(tmp_path / "ck" / "step_00000004") in out


def test_corrupt_marker_names_marker_file_and_step(base, tmp_path, capsys):
    _resume(base, tmp_path, capsys, corrupt=lambda ck: (_newest(ck) / "COMMITTED").write_text('{"step": 8, "sch'))
    line = refused(capsys, ["export", str(_newest(tmp_path / "ck")), str(tmp_path / "m.pt")])
    assert "step_00000008/COMMITTED (step 8)" in line and "corrupt commit marker" in line


def test_resume_after_vocabulary_grew_names_the_table(base, tmp_path, capsys):
    raw = yaml.safe_load(Path(base["raw"]["schema"]["path"]).read_text())
    raw["features"][-3]["vocabulary_size"] = 50  # 'c': 25 -> 50
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    job = _resume(base, tmp_path, capsys, {"schema.path": str(tmp_path / "s.yaml")})
    refused(capsys, ["train", job], "step_00000008", "table 'c': checkpoint has 25 rows, job has 50",
            "vocabulary grew")


def test_resume_after_embedding_dim_changed(base, tmp_path, capsys):
    raw = yaml.safe_load(Path(base["raw"]["schema"]["path"]).read_text())
    raw["features"][0]["embedding_dim"] = 4
    for f in raw["features"]:
        if f["type"] != "dense":
            f["embedding_dim"] = 4
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    job = _resume(base, tmp_path, capsys, {"schema.path": str(tmp_path / "s.yaml")})
    refused(capsys, ["train", job], "table 'u': checkpoint has embedding_dim 8, job has 4")


@pytest.mark.parametrize("model,config", [("WDL", {"dnn_hidden_units": [16]}), ("DCN", {})])
def test_resume_into_another_model(base, tmp_path, capsys, model, config):
    job = _resume(base, tmp_path, capsys, {"model.name": model, "model.config": config})
    refused(capsys, ["train", job], "step_00000008", "checkpoint holds model 'DeepFM'", f"trains {model!r}")


def test_resume_with_another_model_config(base, tmp_path, capsys):
    job = _resume(base, tmp_path, capsys, {"model.config.dnn_hidden_units": [32, 8]})
    refused(capsys, ["train", job], "dnn_hidden_units: checkpoint [16], job [32, 8]")


def test_resume_planted_metadata_pickle_never_runs(base, tmp_path, capsys):
    canary = tmp_path / "canary"
    _resume(base, tmp_path, capsys)
    for step in ("step_00000004", "step_00000008"):
        (tmp_path / "ck" / step / ".metadata").write_bytes(_planted_pickle(canary))
    job = str(tmp_path / "job.yaml")
    rc, out, _ = run_cli(capsys, ["train", job])
    assert not canary.exists()
    assert rc == 0 and out.count("[train] resume: skipped") == 2 and "is not allowed" in out
    assert "resumed from" not in out  # nothing good left: trained from scratch, and said why


# ---- checkpoints: export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,corrupt,needle", [
    ("truncated shard", lambda c: _truncate(c / "__0_0.distcp"), "shard __0_0.distcp is truncated"),
    ("truncated shard tail", lambda c: _truncate(c / "__0_0.distcp", 0.99), "truncated"),
    ("corrupt index", lambda c: _truncate(c / ".metadata"), "corrupt shard index"),
    ("no marker", lambda c: (c / "COMMITTED").unlink(), "not a committed checkpoint"),
])
def test_export_of_a_corrupt_checkpoint(base, tmp_path, capsys, name, corrupt, needle):
    shutil.copytree(_newest(base["ck"]), tmp_path / "step_00000008")
    corrupt(tmp_path / "step_00000008")
    refused(capsys, ["export", str(tmp_path / "step_00000008"), str(tmp_path / "m.pt")], "step_00000008", needle)
    assert not (tmp_path / "m.pt").exists()


def test_export_of_a_corrupted_shard_payload(base, tmp_path, capsys):
    """Same size, garbage bytes: the index cannot see it, DCP's read fails, one line names the checkpoint."""
    shutil.copytree(_newest(base["ck"]), tmp_path / "step_00000008")
    shard = tmp_path / "step_00000008" / "__0_0.distcp"
    shard.write_bytes(b"\x00" * shard.stat().st_size)
    refused(capsys, ["export", str(tmp_path / "step_00000008"), str(tmp_path / "m.pt")], "step_00000008",
            "cannot load the checkpoint")


def test_export_planted_metadata_pickle_never_runs(base, tmp_path, capsys):
    canary = tmp_path / "canary"
    shutil.copytree(_newest(base["ck"]), tmp_path / "step_00000008")
    (tmp_path / "step_00000008" / ".metadata").write_bytes(_planted_pickle(canary))
    refused(capsys, ["export", str(tmp_path / "step_00000008"), str(tmp_path / "m.pt")], "refused",
            "is not allowed")
    assert not canary.exists()


def test_export_missing_root_and_bad_output(base, tmp_path, capsys):
    refused(capsys, ["export", str(tmp_path / "none"), str(tmp_path / "m.pt")], "none", "committed checkpoint")
    (tmp_path / "plain").write_text("x")
    refused(capsys, ["export", str(base["ck"]), str(tmp_path / "plain" / "m.pt")], "plain", "is a file")


# ---- model files: predict --------------------------------------------------------------------------------------
def _predict(base, model: Path | str, out: Path | str) -> list[str]:
    return ["predict", str(model), str(base["eval"]), str(out)]


def test_predict_planted_pickle_never_runs(base, tmp_path, capsys):
    canary = tmp_path / "canary"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "dist_ctr.export/1", "meta_json": "{}", "state_dict": _Canary(canary)}, bad)
    refused(capsys, _predict(base, bad, tmp_path / "p.parquet"), "evil.pt", "refused: not a weights-only file")
    bad.write_bytes(_planted_pickle(canary))  # a bare pickle, not even a torch zip
    refused(capsys, _predict(base, bad, tmp_path / "p.parquet"), "evil.pt")
    assert not canary.exists() and not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("name,make,needle", [
    ("truncated", lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), "truncated or corrupt"),
    ("empty", lambda src, dst: dst.write_bytes(b""), "truncated or corrupt"),
    ("text", lambda src, dst: dst.write_text("hello, I am not a model\n"), "truncated or corrupt"),
    ("foreign", lambda src, dst: torch.save({"hello": torch.zeros(2)}, dst), "not a dist_ctr exported model"),
    ("bad meta", lambda src, dst: torch.save({"format": "dist_ctr.export/1", "meta_json": "{", "state_dict": {}}, dst),
     "corrupt model meta"),
    ("missing", lambda src, dst: None, "exported model not found"),
])
def test_predict_bad_model_file(base, tmp_path, capsys, name, make, needle):
    dst = tmp_path / "model.pt"
    make(base["model"], dst)
    refused(capsys, _predict(base, dst, tmp_path / "p.parquet"), "model.pt", needle)


def test_predict_output_checked_before_any_prediction(base, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    # the model file is missing too: the output is checked first, before the model is even loaded
    refused(capsys, _predict(base, tmp_path / "missing.pt", tmp_path / "plain" / "sub" / "p.parquet"),
            str(tmp_path / "plain"), "is a file")
    (tmp_path / "adir").mkdir()
    refused(capsys, _predict(base, base["model"], tmp_path / "adir"), "adir", "is a directory")


def test_predict_data_url_missing(base, tmp_path, capsys):
    refused(capsys, ["predict", str(base["model"]), str(tmp_path / "nodata"), str(tmp_path / "p.parquet")], "nodata")


def test_predict_uses_the_training_policies_and_reports(base, tmp_path, capsys):
    """A model trained with ``on_non_finite: fill`` / ``on_bad_file: skip`` predicts under the same policies and
    reports what it filled and skipped."""
    job = job_file(base, tmp_path, {"data.train.on_non_finite": "fill", "data.train.on_bad_file": "skip",
                                    "train.checkpoint.dir": str(tmp_path / "ck2")}, fresh_ck=False)
    assert run_cli(capsys, ["train", job])[0] == 0
    assert run_cli(capsys, ["export", str(tmp_path / "ck2"), str(tmp_path / "m.pt")])[0] == 0
    _copy_data(base, tmp_path / "d", _inf_x)
    bad = sorted((tmp_path / "d").glob("*.parquet"))[1]
    bad.write_bytes(bad.read_bytes()[:200])
    rc, out, _ = run_cli(capsys, ["predict", str(tmp_path / "m.pt"), str(tmp_path / "d"), str(tmp_path / "p.parquet")])
    assert rc == 0 and pq.read_table(tmp_path / "p.parquet").num_rows == 128  # the truncated file is skipped
    assert "3 non-finite dense value(s): x 3" in out and "1 bad file(s) / row group(s)" in out and bad.name in out


# ---- load_weights (compat facade) ------------------------------------------------------------------------------
def test_load_weights_planted_pickle_never_runs_and_tables_are_checked(tmp_path):
    from dist_ctr.compat.inputs import DenseFeat, SparseFeat
    from dist_ctr.compat.models import DeepFM
    from dist_ctr.errors import CheckpointError

    def model(vocab: int):
        cols = [SparseFeat("a", vocab, 4), DenseFeat("x1", 1)]
        m = DeepFM(cols, cols, dnn_hidden_units=(8,), seed=1)
        m.compile("adam", "binary_crossentropy")
        return m

    rng = np.random.default_rng(0)
    x = {"a": rng.integers(0, 10, 64), "x1": rng.normal(size=64).astype(np.float32)}
    m = model(10)
    m.fit(x, (rng.random(64) < 0.5).astype(np.float32), batch_size=32, epochs=1, verbose=0)
    url = m.save_weights(str(tmp_path / "w"))
    with pytest.raises(CheckpointError, match="table 'a': checkpoint has 10 rows, job has 20"):
        model(20).load_weights(str(tmp_path / "w"))
    canary = tmp_path / "canary"
    Path(url, ".metadata").write_bytes(_planted_pickle(canary))
    with pytest.raises(CheckpointError, match="is not allowed"):
        model(10).load_weights(url)
    assert not canary.exists()


# ---- outputs and storage ---------------------------------------------------------------------------------------
def test_train_outputs_under_a_plain_file(base, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    job = job_file(base, tmp_path, {"output_dir": str(tmp_path / "plain" / "runs")}, fresh_ck=False)
    refused(capsys, ["train", job], str(tmp_path / "plain"), "is a file")
    job = job_file(base, tmp_path, {"train.checkpoint.dir": str(tmp_path / "plain" / "ck")}, fresh_ck=False)
    refused(capsys, ["train", job], str(tmp_path / "plain"), "is a file")


def _s3fs(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(**s3_options(endpoint))


@pytest.fixture
def s3_data(base, s3_server, s3_env) -> dict[str, Any]:
    """The base training files in a fresh bucket of the loopback S3 server."""
    fs = _s3fs(s3_server)
    bucket = new_bucket("corpus")
    fs.mkdir(bucket)
    for f in sorted(base["train"].glob("*.parquet")):
        fs.put(str(f), f"{bucket}/train/{f.name}")
    return {"fs": fs, "bucket": bucket, "url": f"s3://{bucket}/train", "endpoint": s3_server}


def test_s3_unreachable_endpoint(base, tmp_path, capsys, s3_env):
    opts = s3_options(f"http://127.0.0.1:{free_port()}")
    job = _data_job(base, tmp_path, Path("unused"), **{"data.train.url": "s3://corpus-bucket/train",
                                                      "data.train.storage_options": opts})
    refused(capsys, ["train", job], "s3://corpus-bucket/train")


def test_s3_missing_bucket_for_data_checkpoints_and_predictions(base, tmp_path, capsys, s3_server, s3_env):
    opts = s3_options(s3_server)
    missing = new_bucket("gone")
    job = _data_job(base, tmp_path, Path("unused"), **{"data.train.url": f"s3://{missing}/train",
                                                      "data.train.storage_options": opts})
    refused(capsys, ["train", job], f"s3://{missing}/train")
    job = job_file(base, tmp_path, {"train.checkpoint.dir": f"s3://{missing}/ck",
                                    "train.checkpoint.storage_options": opts}, fresh_ck=False)
    refused(capsys, ["train", job], f"s3://{missing}/ck", "does not exist")
    from dist_ctr.train.export import predict_parquet

    with pytest.raises(DistCtrError, match=f"s3://{missing}/p.parquet.*bucket '{missing}' does not exist"):
        predict_parquet(str(base["model"]), str(base["eval"]), f"s3://{missing}/p.parquet", storage_options=opts)


def test_s3_bucket_deleted_mid_epoch(base, tmp_path, s3_data):
    """The bucket disappears after step 2 of an epoch: the run stops with one family error naming the bucket."""
    from dist_ctr.cli import _one_line
    from dist_ctr.config import load_job
    from dist_ctr.distributed.env import DistEnv, init_process_group
    from dist_ctr.train.job import run_job

    deleted = []

    class DeleteBucket:
        def on_batch_end(self, trainer, step, logs):
            if step == 2:
                s3_data["fs"].rm(s3_data["bucket"], recursive=True)
                deleted.append(step)

    job = load_job(_data_job(base, tmp_path, Path("unused"), **{
        "data.train.url": s3_data["url"], "data.train.storage_options": s3_options(s3_data["endpoint"]),
        "data.train.shuffle_buffer_rows": 64, "data.train.prefetch": 0, "data.eval": _DELETE,
        "train.log_every": 1}))
    env = DistEnv.from_environ()
    init_process_group(env)
    with pytest.raises(DistCtrError) as ei:
        run_job(job, env, callbacks=(DeleteBucket(),), verbose=False)
    line = _one_line(ei.value)
    print(line)
    assert s3_data["bucket"] in line and "\n" not in line
    assert deleted, "the run failed before the bucket was deleted"


def test_predict_corrupt_data_file(base, tmp_path, capsys):
    """Prediction reads through the same loader (the exported data config's policies): a corrupt file is named and
    nothing is written."""
    _copy_data(base, tmp_path / "d")
    f = sorted((tmp_path / "d").glob("*.parquet"))[1]
    f.write_bytes(f.read_bytes()[:200])
    refused(capsys, ["predict", str(base["model"]), str(tmp_path / "d"), str(tmp_path / "p.parquet")], f.name)
    assert not (tmp_path / "p.parquet").exists()


def test_keyboard_interrupt_is_one_line(monkeypatch, capsys):
    import dist_ctr.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_models", interrupted)
    rc, _, err = run_cli(capsys, ["models"])
    assert rc == 130 and err.strip() == "dist-ctr: interrupted"


def test_a_project_bug_keeps_its_traceback(monkeypatch):
    import dist_ctr.cli as cli

    def buggy(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "_cmd_models", buggy)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


# ---- reports on every launcher ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_spawn_merges_the_reports_of_every_rank(base, tmp_path, capfd):
    """2 spawned ranks, each reading 2 of the 4 row groups: every row group has an inf (filled), row group 1 of
    each file a bad label (skipped); rank 0's summary counts all of them (gathered over ranks)."""
    def edit(t: pa.Table) -> pa.Table:
        y = t.column("label").to_numpy().astype(np.int64).copy()
        y[64 + 3] = 7  # row group 1: skipped
        x = t.column("x").to_numpy().astype(np.float32).copy()
        x[[3, 64 + 5]] = np.inf  # one per row group: filled (dense columns are read before labels)
        return _with_column(_with_column(t, "label", y), "x", x)

    f = _copy_data(base, tmp_path / "d", edit, every_file=True)
    g = sorted((tmp_path / "d").glob("*.parquet"))[1]
    job = _data_job(base, tmp_path, tmp_path / "d", **{"data.train.on_bad_file": "skip",
                                                      "data.train.on_non_finite": "fill", "data.eval": _DELETE})
    capfd.readouterr()
    assert main(["train", job, "--spawn", "2"]) == 0
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert "2 bad file(s) / row group(s), 128 rows" in out
    assert f"{f}, row group 1, column 'label'" in out and f"{g}, row group 1, column 'label'" in out
    assert "4 non-finite dense value(s): x 4" in out


def test_ray_driver_prints_the_workers_report():
    """The Ray driver's end-of-run block shows the merged report that travels back in the summary dict."""
    from types import SimpleNamespace

    from dist_ctr.cli import _ray_summary_lines
    from dist_ctr.data.errors import BadFileReport
    from dist_ctr.data.reports import FillReport, data_report, merge_reports

    bad = BadFileReport()
    bad.add("s3://b/d/part-1.parquet", "s3://b/d/part-1.parquet: not a Parquet file", rows=0)
    fill = FillReport()
    fill.add("s3://b/d/part-0.parquet", 3, "I1", 4)
    summary = json.loads(json.dumps({"steps": 8, "data_report": merge_reports([data_report(bad), data_report(None, fill)])}))
    job = SimpleNamespace(name="j", output_dir="runs", distributed=SimpleNamespace(ray=SimpleNamespace(num_workers=2)))
    text = "\n".join(_ray_summary_lines(job, summary))
    assert "skipped     1 bad file(s) / row group(s)" in text and "part-1.parquet: not a Parquet file" in text
    assert "filled      4 non-finite dense value(s): I1 4" in text
