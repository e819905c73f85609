"""``dist-ctr submit`` / ``dist-ctr jobs ...`` against a real Ray head with its job server on 127.0.0.1.

One head for the module (``ray start --head`` with a private ``--temp-dir``; torn down by killing only the
processes that name that directory). Three jobs run on it:

1. a tiny LogisticRegression job (1 epoch, 2 workers): SUCCEEDED, the eval line in its logs, a committed
   checkpoint under ``train.checkpoint.dir``;
2. a long job (many epochs), stopped with ``dist-ctr jobs stop``: STOPPED, and no process of that job (found by
   an env var marker given through ``--runtime-env-json``) survives;
3. a job whose storage URL only fails on the cluster: FAILED, with one ``dist-ctr: error:`` line and no traceback.

Plus the local failures: an unknown config key and an unreachable address, both exit 2 with one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with(needle: str, where: str = "cmdline") -> list[int]:
    """Live processes of this user whose ``/proc/<pid>/<where>`` (cmdline or environ) holds ``needle``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            data = (d / where).read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if needle in data and state != "Z":
            out.append(int(d.name))
    return out


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """A Ray head with its dashboard / job server; yields ``http://127.0.0.1:<port>``."""
    pytest.importorskip("ray.job_submission")
    temp = f"/tmp/rj_{uuid.uuid4().hex[:8]}"  # short: Ray's unix sockets live under it
    port, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    # RAY_AUTH_MODE: Ray turns on token auth by itself when ~/.ray/auth_token exists; this head runs without it
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
           "--num-cpus", "4", "--disable-usage-stats", "--temp-dir", temp]
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                 "--metrics-export-port", "--node-manager-port", "--object-manager-port"):
        cmd += [flag, str(_free_port())]  # Ray's fixed defaults clash with any other head on this machine
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 90
        while True:
            try:
                JobSubmissionClient(url).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield url
    finally:
        # `ray stop` would stop every Ray on this machine: kill only the processes that name our temp dir
        # (gcs_server, raylet, dashboard, workers) and those running in it (job drivers' working dirs).
        for _ in range(3):
            _kill(sorted(set(_pids_with(temp)) | set(_pids_with(temp, "environ"))))
            time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    from tests.distributed.equivalence_jobs import tiny_schema

    d = tmp_path_factory.mktemp("rayjobs")
    tiny_schema().save(str(d / "schema.yaml"))
    raw = {
        "name": "rj_tiny", "seed": 3,
        "schema": {"path": "schema.yaml"},  # relative to the job file: submit must ship it
        "data": {"synth": {"out": str(d / "data"), "rows": 1024, "eval_rows": 256, "shards": 2,
                           "row_group_rows": 256, "seed": 11},
                 "train": {"batch_size": 128}, "eval": {"batch_size": 256}},
        "model": {"name": "LogisticRegression"},
        "train": {"epochs": 1, "log_every": 4, "progress": False,
                  "checkpoint": {"dir": str(d / "ck"), "every_steps": 4, "keep": 2}},
        "distributed": {"ray": {"num_workers": 2, "max_failures": 0, "storage_path": str(d / "ray")}},
        "output_dir": str(d / "out"),
    }
    (d / "job.yaml").write_text(yaml.safe_dump(raw))
    return d


def _cli(*argv: str) -> tuple[int, str, str]:
    from dist_ctr.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _submit(head: str, job: Path, *extra: str) -> str:
    code, out, err = _cli("submit", str(job), "--address", head, *extra)
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    assert job_id, out
    return job_id


def test_submit_succeeds_with_metrics_and_checkpoint(head, job_dir):
    from dist_ctr.launch.ray_jobs import wait_for_job
    from dist_ctr.train.checkpoint import latest_checkpoint

    job_id = _submit(head, job_dir / "job.yaml", "--submission-id", f"rj_ok_{uuid.uuid4().hex[:6]}")
    # a storage URL only the cluster resolves: passes local validation, fails in the job's driver
    bad_id = _submit(head, job_dir / "job.yaml", "--set", "distributed.ray.storage_path=nosuch://bucket/x",
                     "--set", "name=rj_bad")
    status = wait_for_job(head, job_id, timeout_s=240)
    code, logs, _ = _cli("jobs", "logs", job_id, "--address", head)
    assert code == 0 and status == "SUCCEEDED", logs[-4000:]
    assert re.search(r"auc\W{1,3}\d\.\d+", logs), logs[-2000:]
    assert latest_checkpoint(str(job_dir / "ck")) is not None

    code, out, _ = _cli("jobs", "status", job_id, "--address", head)
    assert code == 0 and re.search(r"^status\s+SUCCEEDED$", out, re.M), out
    code, out, _ = _cli("jobs", "list", "--address", head)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["JOB", "ID", "STATUS"]
    assert any(line.split()[:2] == [job_id, "SUCCEEDED"] for line in out.splitlines()), out

    # the same submission id again: one line, exit 2
    code, _, err = _cli("submit", str(job_dir / "job.yaml"), "--address", head, "--submission-id", job_id)
    assert code == 2 and err.count("\n") == 1 and job_id in err and "Traceback" not in err, err

    assert wait_for_job(head, bad_id, timeout_s=120) == "FAILED"
    code, logs, _ = _cli("jobs", "logs", bad_id, "--address", head)
    errors = [line for line in logs.splitlines() if line.startswith("dist-ctr: error:")]
    assert len(errors) == 1 and "nosuch" in errors[0], logs[-2000:]
    assert "Traceback" not in logs, logs[-3000:]


def test_stop_leaves_no_processes(head, job_dir):
    from dist_ctr.launch.ray_jobs import job_status

    marker = f"rj_long_{uuid.uuid4().hex[:8]}"
    job_id = _submit(head, job_dir / "job.yaml", "--num-workers", "1", "--set", "train.epochs=1000",
                     "--set", "name=rj_long", "--set", f"train.checkpoint.dir={job_dir / 'ck_long'}",
                     "--runtime-env-json", json.dumps({"env_vars": {"RJ_MARKER": marker}}))
    deadline = time.monotonic() + 120  # until a Ray Train worker of this job runs
    while not any("RayTrainWorker" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                  for p in _pids_with(marker, "environ") if Path(f"/proc/{p}").exists()):
        assert job_status(head, job_id) in ("PENDING", "RUNNING"), _cli("jobs", "logs", job_id, "--address", head)
        assert time.monotonic() < deadline, "no worker of the long job started"
        time.sleep(1)
    code, out, err = _cli("jobs", "stop", job_id, "--address", head)
    assert code == 0 and out.split() == [job_id, "STOPPED"], (out, err)
    deadline = time.monotonic() + 60  # Ray Train's placement-group cleaner exits last; slower on a loaded machine
    while (left := _pids_with(marker, "environ")) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, [Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in left if Path(f"/proc/{p}").exists()]


def test_local_config_error_fails_before_submission(head, job_dir):
    code, out, err = _cli("submit", str(job_dir / "job.yaml"), "--address", head, "--set", "train.epochz=2")
    assert code == 2 and not out and err.count("\n") == 1 and "epochz" in err, err


def test_unreachable_address_and_unknown_job_are_one_line(head):
    dead = f"http://127.0.0.1:{_free_port()}"
    code, _, err = _cli("jobs", "list", "--address", dead)
    assert code == 2 and err.count("\n") == 1 and dead in err and "Traceback" not in err, err
    code, _, err = _cli("jobs", "status", "no_such_job", "--address", head)
    assert code == 2 and err.count("\n") == 1 and "no_such_job" in err, err
