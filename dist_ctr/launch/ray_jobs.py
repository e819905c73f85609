"""Jobs on a running Ray cluster through Ray's Jobs API (``ray.job_submission.JobSubmissionClient``).

:func:`submit_job` checks the job config here first (``dist_ctr.config.load_job``: a bad key fails before anything
is sent), then packs a working directory holding the job YAML (and the schema file, when ``schema.path`` is a local
file; the copy's ``schema.path`` becomes the bare file name) and submits the entrypoint::

    dist-ctr train job.yaml --ray [--num-workers N] [--set key=value ...]

with ``runtime_env={"working_dir": <that directory>, ...}``. The job's driver runs on the head node and starts
the Ray Train workers, as ``dist-ctr train --ray`` does on a laptop.

The ``dist_ctr`` package itself comes from the cluster image (``dist-ctr`` on the head node's ``PATH``). From a
dev checkout, ship the package with the job::

    dist-ctr submit JOB.yaml --address http://HOST:8265 \\
        --runtime-env-json '{"py_modules": ["/path/to/repo/dist_ctr"]}'

or, when the checkout is on a path every node sees, ``'{"env_vars": {"PYTHONPATH": "/path/to/repo"}}'``.
Other paths in the job (data, checkpoints, ``output_dir``) are read on the cluster: give URLs or absolute paths
the cluster sees.

Every user mistake (an unreachable address, an unknown job id, a submission id already in use) raises
:class:`JobsError`, a ``ValueError`` whose one-line message names the address or the job, which the CLI prints as
``dist-ctr: error: ...`` (exit status 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

import yaml

from dist_ctr.errors import LaunchError

__all__ = ["JobsError", "TERMINAL", "job_info", "job_logs", "job_status", "list_jobs", "stop_job", "submit_job",
           "wait_for_job"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_FILE = "job.yaml"


class JobsError(LaunchError):
    """A job-server request failed for a reason the user can act on; the message is one line."""


def _url(address: Optional[str]) -> str:
    """``HOST:PORT`` or ``http(s)://HOST:PORT`` -> the job server's URL."""
    if not address:
        raise JobsError("no Ray job server address: pass --address http://HOST:8265 or set RAY_ADDRESS")
    return address if "://" in address else f"http://{address}"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


@contextlib.contextmanager
def _requests(address: str, job_id: Optional[str] = None) -> Iterator[None]:
    """Translate the SDK's connection and HTTP errors into :class:`JobsError`."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "authentication failed"
        raise JobsError(f"Ray job server at {address} refused the request: {first} (set RAY_AUTH_TOKEN or "
                        "~/.ray/auth_token)") from None
    except (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise JobsError(f"cannot reach the Ray job server at {address}: {_one_line(e)}") from None
    except RuntimeError as e:
        text = _one_line(e)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise JobsError(f"no job {job_id!r} on the Ray job server at {address}") from None
        if "already exists" in text:
            raise JobsError(f"submission id {job_id!r} is already used on {address}; choose another "
                            "--submission-id") from None
        raise JobsError(f"Ray job server at {address}: {text}") from None


def _client(address: Optional[str]) -> tuple[Any, str]:
    """``(JobSubmissionClient, url)``; an unreachable server is a :class:`JobsError`."""
    from ray.job_submission import JobSubmissionClient

    url = _url(address)
    with _requests(url):
        return JobSubmissionClient(url), url


def _pack_working_dir(job_path: Path, out: Path) -> None:
    """Write ``out/job.yaml`` (and the schema file, when ``schema.path`` is a local file) for the job's upload.

    Args:
        job_path (Path): the job file as given by the user.
        out (Path): an empty directory.
    """
    raw = yaml.safe_load(job_path.read_text()) or {}
    schema = raw.get("schema") if isinstance(raw, dict) else None
    spath = schema.get("path") if isinstance(schema, dict) else None
    if isinstance(spath, str) and "://" not in spath:
        local = Path(spath)
        if not local.is_absolute() and not local.exists():
            local = job_path.parent / local  # relative to the job file, as load_job reads it
        if local.is_file():
            shutil.copyfile(local, out / local.name)
            schema["path"] = local.name
    (out / JOB_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))


def _entrypoint(num_workers: Optional[int], overrides: Optional[dict[str, Any]]) -> str:
    """``dist-ctr train job.yaml --ray ...``; each override value is written as JSON (a YAML subset)."""
    parts = ["dist-ctr", "train", JOB_FILE, "--ray"]
    if num_workers is not None:
        parts += ["--num-workers", str(int(num_workers))]
    for key, value in (overrides or {}).items():
        parts += ["--set", f"{key}={json.dumps(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def submit_job(job_path: str | Path, address: Optional[str], num_workers: Optional[int] = None,
               overrides: Optional[dict[str, Any]] = None, submission_id: Optional[str] = None,
               runtime_env: Optional[dict[str, Any]] = None, follow: bool = False,
               stream: Optional[TextIO] = None) -> str:
    """Validate ``job_path`` here, then submit it to the Ray cluster at ``address`` as a Ray job.

    Args:
        job_path (str | Path): a ``jobs/*.yaml`` file.
        address (str | None): the job server, ``http://HOST:8265`` (``HOST:PORT`` is taken as ``http://``).
        num_workers (int | None): Ray Train workers (``distributed.ray.num_workers``); ``None`` keeps the job's.
        overrides (dict | None): ``{"train.epochs": 2}``, checked here and passed as ``--set`` to the entrypoint.
        submission_id (str | None): the job's id; Ray refuses one that is already used.
        runtime_env (dict | None): extra runtime env (``py_modules``, ``env_vars``, ``pip``, ...);
            ``working_dir`` is dist-ctr's own.
        follow (bool): stream the job's logs to ``stream`` until it ends.
        stream (TextIO | None): where ``follow`` writes (default stdout).

    Returns:
        str: the job's submission id.

    Raises:
        ConfigError: the job config is wrong (nothing was submitted).
        JobsError: the server is unreachable, or the submission id is taken.
    """
    from dist_ctr.config import load_job

    path = Path(job_path)
    sets = dict(overrides or {})
    if num_workers is not None:
        sets["distributed.ray.num_workers"] = int(num_workers)
    load_job(path, sets)  # raises ConfigError before anything leaves this machine
    env = dict(runtime_env or {})
    if "working_dir" in env:
        raise JobsError("runtime_env.working_dir is set by dist-ctr submit (it holds the job file); "
                        "ship code with py_modules instead")
    env_vars = dict(env.get("env_vars") or {})
    env_vars.setdefault("PYTHONUNBUFFERED", "1")  # the driver's lines reach the job log as they are printed
    env["env_vars"] = env_vars
    client, url = _client(address)
    with tempfile.TemporaryDirectory(prefix="dist_ctr_job_") as tmp:
        _pack_working_dir(path, Path(tmp))
        env["working_dir"] = tmp
        job_id = _submit_retrying(client, url, submission_id, entrypoint=_entrypoint(num_workers, overrides),
                                  runtime_env=env, submission_id=submission_id)  # uploads the directory now
    if follow:
        job_logs(url, job_id, follow=True, stream=stream)
    return str(job_id)


def _submit_retrying(client: Any, url: str, sid: Optional[str], wait_s: float = 60.0,
                     **kwargs: Any) -> str:
    """``client.submit_job(**kwargs)``, retried while a just-started head has no job agent up yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with _requests(url, sid):
                return str(client.submit_job(**kwargs))
        except JobsError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def list_jobs(address: Optional[str]) -> list[dict[str, Any]]:
    """All jobs the server knows, oldest first.

    Args:
        address (str | None): the job server.

    Returns:
        list[dict]: ``job_id`` (the submission id), ``status``, ``start_time`` / ``end_time`` (seconds since the
        epoch, or ``None``), ``entrypoint``, ``message``.
    """
    client, url = _client(address)
    with _requests(url):
        jobs = client.list_jobs()
    rows = [_row(j) for j in jobs]
    return sorted(rows, key=lambda r: r["start_time"] or 0.0)


def _row(details: Any) -> dict[str, Any]:
    def seconds(ms: Optional[int]) -> Optional[float]:
        return ms / 1000.0 if ms else None

    status = details.status
    return {"job_id": details.submission_id or details.job_id, "status": getattr(status, "value", str(status)),
            "start_time": seconds(details.start_time), "end_time": seconds(details.end_time),
            "entrypoint": details.entrypoint, "message": details.message or ""}


def job_info(address: Optional[str], job_id: str) -> dict[str, Any]:
    """One job's row, as in :func:`list_jobs`; an unknown id is a :class:`JobsError`."""
    client, url = _client(address)
    with _requests(url, job_id):
        return _row(client.get_job_info(job_id))


def job_status(address: Optional[str], job_id: str) -> str:
    """``PENDING`` / ``RUNNING`` / ``STOPPED`` / ``SUCCEEDED`` / ``FAILED``; an unknown id is a :class:`JobsError`."""
    return str(job_info(address, job_id)["status"])


def job_logs(address: Optional[str], job_id: str, follow: bool = False, stream: Optional[TextIO] = None) -> str:
    """The job's driver log; with ``follow``, write it to ``stream`` as it grows until the job ends.

    Args:
        address (str | None): the job server.
        job_id (str): the submission id.
        follow (bool): tail the log (``tail_job_logs``) until the job reaches a terminal state.
        stream (TextIO | None): where ``follow`` writes (default stdout).

    Returns:
        str: the log (with ``follow``: everything that was streamed).
    """
    client, url = _client(address)
    if not follow:
        with _requests(url, job_id):
            return str(client.get_job_logs(job_id))
    out = stream or sys.stdout
    with _requests(url, job_id):
        client.get_job_info(job_id)  # an unknown id fails here, not as a websocket error
    chunks: list[str] = []

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            chunks.append(chunk)
            out.write(chunk)
            out.flush()

    with _requests(url, job_id):
        asyncio.run(_tail())
    return "".join(chunks)


def wait_for_job(address: Optional[str], job_id: str, timeout_s: float = 600.0, poll_s: float = 0.5) -> str:
    """Poll until the job is terminal (:data:`TERMINAL`) and return its status; a :class:`JobsError` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = job_status(address, job_id)
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise JobsError(f"job {job_id!r} is still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def stop_job(address: Optional[str], job_id: str, timeout_s: float = 60.0) -> str:
    """Ask the server to stop the job, wait until it is terminal, and return its final status.

    Args:
        address (str | None): the job server.
        job_id (str): the submission id.
        timeout_s (float): how long to wait for a terminal state.

    Returns:
        str: ``STOPPED`` (or the state it had already reached: ``SUCCEEDED`` / ``FAILED``).
    """
    client, url = _client(address)
    with _requests(url, job_id):
        client.stop_job(job_id)
    return wait_for_job(url, job_id, timeout_s=timeout_s)
