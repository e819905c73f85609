"""Retraining runs: partitions and windows, drifting daily data, and the issue's bars on a real registry (local
and the loopback S3 server), real processes and the real engine."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from dist_ctr.data.drift import Drift, generate_daily
from dist_ctr.errors import PipelineError
from dist_ctr.pipeline import registry as reg_mod
from dist_ctr.pipeline.partitions import choose_window, list_partitions
from tests.pipeline.retrain_helpers import DAYS, write_pipeline
from tests.pipeline.warm_start_jobs import tiny_schema


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    generate_daily(str(root / "daily"), tiny_schema(), DAYS, rows_per_day=3000, seed=3)
    return root / "daily"


def test_drift_grows_ids_shifts_a_feature_and_can_shuffle_labels(tmp_path):
    urls = generate_daily(str(tmp_path / "d"), tiny_schema(), DAYS[:3], rows_per_day=2000, seed=1,
                          drift=Drift(shuffle_labels=(DAYS[1],)))
    tabs = [pq.read_table(f"{u}/part-00000.parquet") for u in urls]
    assert all(t.num_rows == 2000 for t in tabs)
    top = [int(t.column("u").to_numpy().max()) for t in tabs]
    assert top[0] < top[1] < top[2] < 200  # the used id range of table u grows day by day
    clean = generate_daily(str(tmp_path / "c"), tiny_schema(), DAYS[:3], rows_per_day=2000, seed=1)
    plain = pq.read_table(f"{clean[1]}/part-00000.parquet")
    a, b = tabs[1].column("label").to_numpy(), plain.column("label").to_numpy()
    assert sorted(a) == sorted(b) and (a != b).any()  # same labels, permuted
    assert tabs[1].column("u").equals(plain.column("u"))  # the shuffled day keeps its features


def test_window_choice_and_bad_partitions(lake, tmp_path):
    parts = list_partitions(str(lake))
    assert [p.value for p in parts] == DAYS and all(p.complete for p in parts)
    w = choose_window(parts, "2026-11-04", after="2026-11-01")
    assert (w.train, w.eval) == (["2026-11-02", "2026-11-03"], "2026-11-04")
    w = choose_window(parts, "2026-11-05", after=None, mode="last_n", last_n=1)
    assert (w.train, w.eval) == (["2026-11-04"], "2026-11-05")
    with pytest.raises(PipelineError, match=r"evaluation partition date=2026-11-09 does not exist"):
        choose_window(parts, "2026-11-30", after=None, eval_partition="2026-11-09")
    with pytest.raises(PipelineError, match=r"empty training window: no complete partition after date=2026-11-04"):
        choose_window(parts, "2026-11-05", after="2026-11-04")
    (lake.parent / "inc").mkdir()
    generate_daily(str(lake.parent / "inc"), tiny_schema(), DAYS[:2], rows_per_day=500)
    (lake.parent / "inc" / "date=2026-11-02" / "_SUCCESS").unlink()
    with pytest.raises(PipelineError, match=r"date=2026-11-02 is incomplete \(no _SUCCESS marker\)"):
        choose_window(list_partitions(str(lake.parent / "inc")), "2026-11-02", None, eval_partition="2026-11-02")


@pytest.mark.slow
def test_chain_on_s3_beats_cold_day4_gate_rollback_and_rerun(lake, tmp_path, s3_server, s3_env, capsys):
    import boto3

    from dist_ctr.cli import main
    from tests.object_store import new_bucket, s3_options

    bucket = new_bucket("reg")
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    opts = s3_options(s3_server)
    pipe = write_pipeline(tmp_path, str(lake), f"s3://{bucket}/models", registry_options=opts)
    assert main(["retrain", str(pipe), "--as-of", "2026-11-05", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "date=2026-11-01 (1)" in out
    for day in DAYS[1:]:
        assert main(["retrain", str(pipe), "--as-of", day]) == 0
    reg = reg_mod.ModelRegistry(f"s3://{bucket}/models", storage_options=opts)
    vs = reg.versions("ctr")
    assert [v.metadata["window"] for v in vs] == [[d] for d in DAYS[:4]]  # each run read only its new day
    assert [v.metadata["warm_start"] for v in vs] == [False, True, True, True]
    chain_auc = vs[-1].metadata["metrics"]["auc"]
    (tmp_path / "cold").mkdir()
    cold = write_pipeline(tmp_path / "cold", str(lake), str(tmp_path / "cold_reg"),
                          {"retrain.warm_start": "none", "retrain.window": {"mode": "last_n", "last_n": 1}})
    assert main(["retrain", str(cold), "--as-of", "2026-11-05"]) == 0
    cold_v = reg_mod.ModelRegistry(str(tmp_path / "cold_reg")).versions("ctr")[-1]
    cold_auc = cold_v.metadata["metrics"]["auc"]
    print(f"day-5 AUC: warm-started chain {chain_auc:.4f}, cold on day 4 alone {cold_auc:.4f}")
    assert cold_v.metadata["window"] == ["2026-11-04"]
    assert chain_auc > cold_auc
    published = reg.published("ctr").version
    assert main(["retrain", str(pipe), "--as-of", "2026-11-05"]) == 0  # re-run: nothing new
    assert "nothing to do" in capsys.readouterr().out
    assert len(reg.versions("ctr")) == 4 and reg.published("ctr").version == published


def test_bad_inputs_are_one_line_and_exit_2(lake, tmp_path, capsys):
    from dist_ctr.cli import main
    from tests.object_store import free_port

    pipe = write_pipeline(tmp_path, str(lake), str(tmp_path / "reg"), {"train.max_steps": 2, "train.epochs": 1})
    inc = tmp_path / "inc"
    generate_daily(str(inc), tiny_schema(), DAYS[:2], rows_per_day=500)
    (inc / "date=2026-11-02" / "_SUCCESS").unlink()
    cases = [
        (["--as-of", "2026-11-30", "--set", "retrain.eval_partition=2026-11-09"], "date=2026-11-09 does not exist"),
        (["--as-of", "2026-11-02", "--set", f"retrain.data_root={inc}", "--set",
          "retrain.eval_partition=2026-11-02"], "is incomplete"),
        (["--as-of", "2026-11-01"], "empty training window"),
        (["--as-of", "2026-11-02", "--set", f"retrain.registry=s3://nobucket-x/reg", "--set",
          "retrain.registry_storage_options={endpoint_url: 'http://127.0.0.1:%d', config_kwargs: "
          "{connect_timeout: 1, retries: {max_attempts: 1}}}" % free_port()], "s3://nobucket-x/reg"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(["retrain", str(pipe), *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dist-ctr: error: ") and msg in err[0], (argv, err)
    assert main(["retrain", str(pipe), "--as-of", "2026-11-02"]) == 0  # v1 (cold start)
    capsys.readouterr()
    assert main(["retrain", str(pipe), "--as-of", "2026-11-03", "--set", "model.config.dnn_hidden_units=[32]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "parent checkpoint" in err[0] and "dnn_hidden_units" in err[0]


@pytest.mark.slow
def test_shuffled_day_is_trained_but_rejected_and_rollback(tmp_path, capsys):
    from dist_ctr.cli import main

    data = tmp_path / "daily"
    generate_daily(str(data), tiny_schema(), DAYS, rows_per_day=3000, seed=3,
                   drift=Drift(shuffle_labels=("2026-11-04",)))
    pipe = write_pipeline(tmp_path, str(data), str(tmp_path / "reg"), {"retrain.gate.max_auc_drop": 0.005})
    # v1: day 1 (eval day 2), v2: day 2 (eval day 3), v3: day 3 scored on the shuffled day 4 (min_auc fails),
    # v4: trained on the shuffled day 4, scored on day 5 against the published v2 (max_auc_drop fails)
    for day in DAYS[1:]:
        assert main(["retrain", str(pipe), "--as-of", day]) == 0
    out = capsys.readouterr().out
    reg = reg_mod.ModelRegistry(str(tmp_path / "reg"))
    vs = reg.versions("ctr")
    assert [v.metadata["window"] for v in vs] == [[d] for d in DAYS[:4]]
    assert [v.metadata["gate_passed"] for v in vs] == [True, True, False, False], [v.metadata["gate_failed"]
                                                                                  for v in vs]
    assert reg.published("ctr").version == vs[1].version and vs[3].metadata["parent"] == vs[1].version
    assert any("min_auc" in r for r in vs[2].metadata["gate_failed"])
    decision = [e for e in reg.events("ctr") if e.get("event") == "decision"][-1]
    assert decision["passed"] is False and any("max_auc_drop" in r for r in decision["failed"]), decision
    assert "REJECTED: max_auc_drop failed" in out and "kept unpublished; pointer unchanged" in out
    assert main(["predict", f"{tmp_path / 'reg'}/ctr@published", f"{data}/date=2026-11-05",
                 str(tmp_path / "p2.parquet")]) == 0
    assert f"ctr/{vs[1].version}/model.pt" in capsys.readouterr().out  # predict follows the pointer
    assert main(["registry", "rollback", str(tmp_path / "reg"), "ctr"]) == 0
    assert reg.published("ctr").version == vs[0].version
    assert main(["predict", f"{tmp_path / 'reg'}/ctr@published", f"{data}/date=2026-11-05",
                 str(tmp_path / "p1.parquet")]) == 0
    assert f"ctr/{vs[0].version}/model.pt" in capsys.readouterr().out
    p1, p2 = (pq.read_table(tmp_path / f"p{i}.parquet").column("pred").to_numpy() for i in (1, 2))
    assert len(p1) == 3000 and not np.allclose(p1, p2)  # another model answers
    assert main(["registry", "rollback", str(tmp_path / "reg"), "ctr"]) == 2  # v1 is the oldest published
    assert "no earlier one" in capsys.readouterr().err


@pytest.mark.slow
def test_two_concurrent_runs_publish_one_version(lake, tmp_path):
    import subprocess
    import sys

    pipe = write_pipeline(tmp_path, str(lake), str(tmp_path / "reg"), {"train.max_steps": 4, "train.epochs": 1})
    cmd = [sys.executable, "-m", "dist_ctr.cli", "retrain", str(pipe), "--as-of", "2026-11-02"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] in (0, 2), outs
    loser = outs[[p.returncode for p in procs].index(codes[1])] if codes[1] == 2 else None
    if loser is not None:  # refused while the other held the lease: one line naming it
        assert loser[1].strip().startswith("dist-ctr: error: registry lease on model 'ctr' is held by"), loser[1]
    else:  # it ran after the other finished: nothing left to do
        assert sum("nothing to do" in o for o, _ in outs) == 1, outs
    assert len(reg_mod.ModelRegistry(str(tmp_path / "reg")).versions("ctr")) == 1


@pytest.mark.slow
def test_spawned_two_process_chain_warm_starts_on_another_world_size(lake, tmp_path, capsys):
    """Day 1 on 2 spawned processes, day 2 warm-started on 1 process from the 2-process checkpoint, day 3 on 2."""
    from dist_ctr.cli import main

    spawn = {"distributed.launcher": "spawn", "distributed.world_size": 2}
    pipe = write_pipeline(tmp_path, str(lake), str(tmp_path / "reg"), {"train.epochs": 1, **spawn})
    assert main(["retrain", str(pipe), "--as-of", DAYS[1]]) == 0
    assert main(["retrain", str(pipe), "--as-of", DAYS[2], "--set", "distributed.launcher=local",
                 "--set", "distributed.world_size=1"]) == 0
    assert main(["retrain", str(pipe), "--as-of", DAYS[3]]) == 0
    reg = reg_mod.ModelRegistry(str(tmp_path / "reg"))
    vs = reg.versions("ctr")
    assert [v.metadata["warm_start"] for v in vs] == [False, True, True]
    assert [v.metadata["config"]["distributed"]["world_size"] for v in vs] == [2, 1, 2]
    assert reg.published("ctr").version == "v000003"
    assert vs[2].metadata["metrics"]["auc"] > 0.55
