"""The model registry, its lease and its CLI on real stores (a local directory and the loopback S3 server), and
runs killed at each step of a retraining run (real processes ended with ``os._exit``: no ``finally`` runs)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dist_ctr.cli import main
from dist_ctr.errors import RegistryError
from dist_ctr.pipeline.lease import hold_lease
from dist_ctr.pipeline.registry import ModelRegistry, resolve_model_ref
from tests.object_store import new_bucket, s3_options
from tests.pipeline.retrain_helpers import DAYS, write_pipeline


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """(registry URL, storage options) on a local directory or a fresh bucket of the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "reg"), None
    import boto3

    endpoint = request.getfixturevalue("s3_server")
    request.getfixturevalue("s3_env")
    bucket = new_bucket("reg")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models", s3_options(endpoint)


def _files(tmp_path: Path) -> tuple[str, str]:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    ck = tmp_path / "ck"
    (ck / "sub").mkdir(parents=True)
    (ck / "COMMITTED").write_text("{}")
    (ck / "sub" / "0.distcp").write_bytes(b"shard")
    return str(model), str(ck)


def test_versions_pointer_events_rollback_and_refs(store, tmp_path, capsys):
    url, opts = store
    reg = ModelRegistry(url, opts)
    model, ck = _files(tmp_path)
    assert reg.versions("ctr") == [] and reg.published("ctr") is None
    v1 = reg.add_version("ctr", export_path=model, checkpoint_url=ck, metadata={"run_key": "a", "eval_partition": "d1"})
    assert (v1.version, v1.model_path) == ("v000001", f"{url}/ctr/v000001/model.pt")
    assert reg.fs.cat_file(f"{reg.root}/ctr/v000001/checkpoint/sub/0.distcp") == b"shard"
    assert v1.metadata["code_version"].startswith("dist_ctr ") and v1.metadata["eval_partition"] == "d1"
    # a torn copy (no COMPLETE) is not a version, and its number is reused
    reg.fs.makedirs(f"{reg.root}/ctr/v000002", exist_ok=True)
    reg.fs.pipe_file(f"{reg.root}/ctr/v000002/model.pt", b"half")
    assert [v.version for v in reg.versions("ctr")] == ["v000001"]
    v2 = reg.add_version("ctr", export_path=model, checkpoint_url=None, metadata={"run_key": "b"})
    assert v2.version == "v000002" and not reg.fs.exists(f"{reg.root}/ctr/v000002/checkpoint")
    assert reg.add_version("ctr", export_path=model, checkpoint_url=None, metadata={"run_key": "b"}).version == \
        "v000002"  # same run key: the same version, no third one
    assert reg.find("ctr", "a").version == "v000001" and reg.find("ctr", "zz") is None
    reg.promote("ctr", "v000001", reason="first")
    reg.promote("ctr", "v000002", reason="second")
    assert json.loads(reg.fs.cat_file(f"{reg.root}/ctr/PUBLISHED"))["version"] == "v000002"
    assert resolve_model_ref(f"{url}/ctr@published", opts) == f"{url}/ctr/v000002/model.pt"
    assert resolve_model_ref(f"{url}/ctr@v000001", opts) == f"{url}/ctr/v000001/model.pt"
    assert resolve_model_ref("runs/model.pt") == "runs/model.pt"
    assert reg.rollback("ctr").version == "v000001"
    events = reg.events("ctr")
    assert [e["event"] for e in events] == ["version_added", "version_added", "promoted", "promoted", "rolled_back"]
    assert events[-1]["previous"] == "v000002" and events[0]["time"] <= events[-1]["time"]
    with pytest.raises(RegistryError, match=r"no complete version v000009; versions: v000001, v000002"):
        reg.version("ctr", "v000009")
    with pytest.raises(RegistryError, match=r"no earlier one to roll back to"):
        reg.rollback("ctr")
    with pytest.raises(RegistryError, match=r"no published version"):
        resolve_model_ref(f"{url}/other@published", opts)

    so = ["--storage-options", json.dumps(opts)] if opts else []
    capsys.readouterr()
    assert main(["registry", "list", url, *so]) == 0
    assert capsys.readouterr().out.split()[:6] == ["MODEL", "VERSIONS", "PUBLISHED", "ctr", "2", "v000001"]
    assert main(["registry", "list", url, "ctr", *so]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("v000001 *") and lines[2].startswith("v000002 ") and lines[-1] == "* published"
    assert main(["registry", "promote", url, "ctr", "v000002", *so]) == 0
    assert main(["registry", "show", url, "ctr@published", *so]) == 0
    out = capsys.readouterr().out
    assert "v000002 (published)" in out and f"{url}/ctr/v000002/model.pt" in out
    assert main(["registry", "events", url, "ctr", "--last", "1", *so]) == 0
    assert "promoted" in capsys.readouterr().out
    for argv, msg in ((["promote", url, "ctr", "v000007"], "no complete version v000007"),
                      (["show", url, "ctr@v7"], "bad version 'v7'"),
                      (["list", url, "--storage-options", "{bad"], "--storage-options is not valid JSON")):
        assert main(["registry", *argv, *(so if "--storage-options" not in argv else [])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_lease_is_exclusive_expires_and_one_taker_wins(store):
    url, opts = store
    with hold_lease(url, "m", "run-a", ttl_s=60, storage_options=opts):
        with pytest.raises(RegistryError, match=r"held by 'run-a' until \d{4}-\d\d-\d\d"):
            with hold_lease(url, "m", "run-b", ttl_s=60, storage_options=opts):
                pass
    with hold_lease(url, "m", "run-b", ttl_s=60, storage_options=opts):  # released on exit
        pass
    reg = ModelRegistry(url, opts)
    lease = f"{reg.root}/m/LEASE"
    reg.fs.pipe_file(lease, json.dumps({"owner": "crashed", "acquired": 0, "expires": time.time() - 1}).encode())
    won, lost = [], []
    go = threading.Barrier(6)

    def take(i: int) -> None:
        go.wait()
        try:
            with hold_lease(url, "m", f"taker-{i}", ttl_s=60, storage_options=opts):
                won.append(i)
                time.sleep(1.0)
        except RegistryError:
            lost.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5, (won, lost)  # the expired lease is taken over by exactly one


_KILL = """
import os, sys
from dist_ctr.pipeline import registry, run
point = sys.argv[1]
if point == "training":
    run.RetrainRun._train = lambda self, p, work: os._exit(9)
elif point == "copy":  # model and checkpoint copied, COMPLETE not yet written
    write = registry.ModelRegistry._write_json
    def _write(self, path, data):
        if path.endswith("/COMPLETE"):
            os._exit(9)
        return write(self, path, data)
    registry.ModelRegistry._write_json = _write
elif point == "promote":  # the version is complete, the pointer not yet moved
    registry.ModelRegistry.promote = lambda self, *a, **k: os._exit(9)
from dist_ctr.cli import main
sys.exit(main(["retrain", sys.argv[2], "--as-of", sys.argv[3]]))
"""


@pytest.mark.slow
def test_runs_killed_at_each_step_leave_the_pointer_complete_and_the_next_run_finishes(tmp_path, capsys):
    from dist_ctr.data.drift import generate_daily
    from tests.pipeline.warm_start_jobs import tiny_schema

    data = tmp_path / "daily"
    generate_daily(str(data), tiny_schema(), DAYS, rows_per_day=1500, seed=5)
    reg_url = str(tmp_path / "reg")
    pipe = write_pipeline(tmp_path, str(data), reg_url, {"train.max_steps": 4, "train.epochs": 1,
                                                         "retrain.lease_ttl_s": 1, "retrain.gate": {}})
    assert main(["retrain", str(pipe), "--as-of", DAYS[1]]) == 0  # v1 published
    reg = ModelRegistry(reg_url)
    for i, point in enumerate(["training", "copy", "promote"]):
        as_of = DAYS[2 + i]  # v(2+i): trained on DAYS[1+i], scored on DAYS[2+i]
        killed = subprocess.run([sys.executable, "-c", _KILL, point, str(pipe), as_of], capture_output=True,
                                text=True, timeout=600)
        assert killed.returncode == 9, (point, killed.stderr[-2000:])
        before = reg.published("ctr")
        assert before is not None and before.version == f"v{1 + i:06d}", point  # pointer still on a complete one
        assert main(["predict", f"{reg_url}/ctr@published", f"{data}/date={DAYS[1]}", str(tmp_path / "p.parquet")]) \
            == 0
        time.sleep(1.2)  # the killed run's lease (ttl 1 s) expires; the next run takes it over
        capsys.readouterr()
        assert main(["retrain", str(pipe), "--as-of", as_of]) == 0, point
        out = capsys.readouterr().out
        if point == "promote":
            assert "already holds this window" in out  # the complete version is reused, not trained again
        assert [v.version for v in reg.versions("ctr")] == [f"v{n:06d}" for n in range(1, 3 + i)], point
        assert reg.published("ctr").version == f"v{2 + i:06d}", point
    finished = [e for e in reg.events("ctr") if e["event"] == "run_finished"]
    assert [e["version"] for e in finished] == ["v000001", "v000002", "v000003", "v000004"]


def test_a_held_lease_is_renewed_and_a_lost_one_is_said(store):
    url, opts = store
    reg = ModelRegistry(url, opts)
    with hold_lease(url, "m", "slow-run", ttl_s=0.6, storage_options=opts) as lease:
        time.sleep(1.5)  # longer than the TTL: the heartbeat kept it
        with pytest.raises(RegistryError, match="held by 'slow-run'"):
            with hold_lease(url, "m", "other", ttl_s=5, storage_options=opts):
                pass
        lease.check()
        reg.fs.pipe_file(f"{reg.root}/m/LEASE", json.dumps({"owner": "thief", "acquired": 0,
                                                            "expires": time.time() + 60}).encode())
        time.sleep(0.6)
        with pytest.raises(RegistryError, match="lost the registry lease on model 'm'"):
            lease.check()
    assert json.loads(reg.fs.cat_file(f"{reg.root}/m/LEASE"))["owner"] == "thief"  # not released: not ours
