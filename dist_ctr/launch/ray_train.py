"""Ray Train launch: a job config runs as ``num_workers`` TorchTrainer workers, each calling the engine.

This is the only module that imports ``ray.train``. TorchRec and the model zoo are imported inside the worker
function only, so a CPU-only Ray driver (a laptop, a KubeRay submitter pod) needs neither.

Driver (:func:`run_ray_job`)::

    TorchTrainer(_train_worker,
                 ScalingConfig(num_workers, use_gpu, resources_per_worker),
                 RunConfig(storage_path, name=job.name, FailureConfig(max_failures), CheckpointConfig(num_to_keep)))

Worker (:func:`_train_worker`): ``DistEnv`` from ``ray.train.get_context()`` (world rank / size, local world
size; device from CUDA availability). Ray's ``TorchTrainer`` has already created the process group (gloo on CPU,
nccl on GPUs); :func:`~dist_ctr.distributed.env.init_process_group` sees it and creates none. Then
:func:`dist_ctr.train.job.run_job` builds data + model + Trainer from the job config and trains: nothing else.

Checkpoints: our own DCP checkpoints under ``job.train.checkpoint.dir`` (any fsspec URL the workers share; by
default ``<storage_path>/<name>/checkpoints``) are the source of truth. Every (re)started worker group loads the
latest committed one through ``run_job`` (``checkpoint.resume`` is forced on when Ray restarts a group, even if
the job said ``resume: false`` for its first start). Ray itself gets a small pointer checkpoint (a directory with
``dist_ctr_checkpoint.json``: the DCP URL and step) at the first report after each new committed checkpoint, so
``result.checkpoint`` and the Ray dashboard show where the model is; it holds no weights.

Storage: ``distributed.ray.storage_path`` is any fsspec URL (:func:`resolve_storage`). When the job gives
``train.checkpoint.storage_options`` (an endpoint, keys) and the checkpoints live on the same store (the default
``<storage_path>/<name>/checkpoints``, or a ``checkpoint.dir`` with the same scheme), Ray's run directory is reached
with those same options (``PyFileSystem(FSSpecHandler(fsspec filesystem))`` as ``RunConfig.storage_filesystem``),
so an S3-compatible endpoint, explicit keys or a ``gs://`` emulator work for Ray's files as they do for the data
and the checkpoints; without options an ``s3://`` / ``gs://`` URL goes to Ray as it is. The options are never
logged.

Metrics: at logging steps at least ``distributed.ray.report_every`` steps apart every worker calls
``ray.train.report`` (a barrier in Ray Train v2) with ``step``, ``epoch``, ``loss`` (this rank's recent step
loss), ``samples_per_s``; once per epoch the epoch logs; once at the end the eval metrics (``eval/auc``,
``eval/logloss``, ...) and the run summary. Rank 0's metrics are what Ray keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from dist_ctr.config import JobConfig

__all__ = ["POINTER_FILE", "RayReportCallback", "resolve_storage", "run_ray_job"]

POINTER_FILE = "dist_ctr_checkpoint.json"
_LOCAL_SCHEMES = ("", "file", "local")
_PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs")  # URLs pyarrow resolves by itself


def resolve_storage(url: Optional[str], default_dir: str,
                    storage_options: Optional[dict[str, Any]] = None) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig`` from any fsspec URL.

    Local paths become absolute. ``s3://`` / ``gs://`` / ``hdfs://`` / ``abfs://`` without ``storage_options`` go to
    Ray (pyarrow) as they are: pyarrow finds the credentials itself (environment, instance profile). With
    ``storage_options`` (an endpoint, keys), and for any other fsspec scheme, the fsspec filesystem built from the URL
    and those options is wrapped in a ``pyarrow.fs.PyFileSystem(FSSpecHandler(...))`` and the path is stripped of
    its scheme: Ray then reads and writes its run directory exactly as the data and checkpoint code reach the same
    store (same options, same library). The options are never logged; the filesystem object carries them to the
    Ray controller and workers.

    Args:
        url (str | None): ``distributed.ray.storage_path``; None uses ``default_dir``.
        default_dir (str): where Ray's run directory goes without a URL.
        storage_options (dict | None): fsspec options for the store of ``url``.

    Returns:
        tuple[str, pyarrow.fs.FileSystem | None]: the path (a URL when the filesystem is None) and the filesystem.

    >>> resolve_storage("s3://bucket/ray", "runs")
    ('s3://bucket/ray', None)
    >>> resolve_storage(None, "/tmp/x")
    ('/tmp/x', None)
    >>> path, fs = resolve_storage("s3://bucket/ray", "runs", {"endpoint_url": "http://127.0.0.1:9000",
    ...                                                        "key": "AKID", "secret": "..."})
    >>> path, fs.type_name
    ('bucket/ray', "py::fsspec+('s3', 's3a')")
    """
    raw = url or default_dir
    scheme = _scheme(raw)
    if scheme in _LOCAL_SCHEMES:
        path = raw.split("://", 1)[1] if "://" in raw else raw
        return str(Path(path).expanduser().resolve()), None
    if scheme in _PYARROW_SCHEMES and not storage_options:
        return raw, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    from dist_ctr.storage import url_to_fs

    fs, path = url_to_fs(raw, storage_options, key="distributed.ray.storage_path")
    return path, PyFileSystem(FSSpecHandler(fs))


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


class RayReportCallback:
    """Engine callback (``on_batch_end`` / ``on_epoch_end``) that reports metrics to Ray Train.

    Every rank calls ``ray.train.report`` at the same steps (the engine calls ``on_batch_end`` at the same logging
    steps on every rank), as Ray Train v2 requires. Rank 0 attaches a pointer checkpoint when a newer committed
    DCP checkpoint exists under ``checkpoint_root``.

    Args:
        every (int): report at logging steps at least this many steps apart.
        checkpoint_root (str | None): the job's DCP checkpoint root.
        storage_options (dict | None): fsspec options for ``checkpoint_root``.
    """

    def __init__(self, every: int, checkpoint_root: Optional[str] = None,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.every = max(1, int(every))
        self.checkpoint_root = checkpoint_root
        self.storage_options = storage_options
        self.last_step = -(10**18)
        self.pointed_step = -1

    def on_train_begin(self, trainer: Any) -> None:
        self.last_step = trainer.global_step  # no report right at a resume step

    def on_batch_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        if step - self.last_step < self.every:
            return
        self.last_step = step
        report({"step": step, "epoch": trainer.epoch, "loss": float(logs.get("loss", float("nan"))),
                "samples_per_s": float(logs.get("samples_per_s", 0.0))}, self._pointer(trainer))

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        report({"step": trainer.global_step, "epoch": epoch, **{f"epoch_{k}": float(v) for k, v in logs.items()}},
               self._pointer(trainer))

    def _pointer(self, trainer: Any) -> Optional[dict[str, Any]]:
        """Rank 0: the newest committed checkpoint not yet pointed at (else None)."""
        if not self.checkpoint_root or trainer.env.rank != 0:
            return None
        from dist_ctr.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(self.checkpoint_root, self.storage_options)
        if latest is None or latest.step <= self.pointed_step:
            return None
        self.pointed_step = latest.step
        return {"url": latest.url, "step": latest.step, "epoch": latest.epoch, "world_size": latest.world_size}


def report(metrics: dict[str, Any], pointer: Optional[dict[str, Any]] = None) -> None:
    """``ray.train.report`` with an optional pointer checkpoint (a temporary directory Ray copies to storage)."""
    import ray.train

    if pointer is None:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="dist_ctr_ptr_")
    try:
        Path(tmp, POINTER_FILE).write_text(json.dumps(pointer))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"pointer_step_{int(pointer['step']):08d}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _default_checkpoint_dir(storage_url: str, name: str) -> Optional[str]:
    """``<storage>/<name>/checkpoints``: the workers reach it by URL with ``train.checkpoint.storage_options``.
    None for ``memory://`` (one process's memory, not shared by the workers)."""
    if _scheme(storage_url) == "memory":
        return None
    return f"{storage_url.rstrip('/')}/{name}/checkpoints"


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: DistEnv from the Ray context, then the engine (``run_job``)."""
    _quiet_worker_logging()  # before torch / TorchRec imports: FBGEMM logs its library loads at INFO
    import ray.train
    import torch

    from dist_ctr.distributed.env import DistEnv, init_process_group
    from dist_ctr.strict import from_dict
    from dist_ctr.train.job import run_job

    ctx = ray.train.get_context()
    if torch.cuda.is_available():
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    env = DistEnv(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                  local_world_size=ctx.get_local_world_size(), device=device)
    init_process_group(env)  # Ray's TorchTrainer already made the group: this only checks
    job: JobConfig = from_dict(JobConfig, config["job"])
    ck = job.train.checkpoint
    if ck.dir and ray.train.get_checkpoint() is not None:
        ck.resume = True  # a restarted group (or a restored run) continues from the last committed checkpoint
    callbacks: list[Any] = [RayReportCallback(config["report_every"], ck.dir, ck.storage_options)]
    factory = config.get("callbacks_factory")
    if factory is not None:
        callbacks.extend(factory())
    result = run_job(job, env, callbacks=tuple(callbacks), verbose=env.is_main, print_result=False)
    summary = result.summary()
    summary["step_losses"] = [[int(s["step"]), float(s["loss"])] for s in (result.history.steps if result.history
                                                                             else []) if "loss" in s]
    summary["world_size"] = env.world_size
    final = {"step": result.steps, "final": 1, "summary_json": json.dumps(summary, default=float)}
    final.update({f"eval/{k}": float(v) for k, v in result.metrics.items()})
    final.update({f"train/{k}": float(v) for k, v in result.train_metrics.items()})
    pointer = None
    if ck.dir and env.is_main:
        from dist_ctr.train.checkpoint import latest_checkpoint

        latest = latest_checkpoint(ck.dir, ck.storage_options)
        if latest is not None:
            pointer = {"url": latest.url, "step": latest.step, "epoch": latest.epoch, "world_size": latest.world_size}
    report(final, pointer)


# Console: what a person sees on the driver of a Ray run (Ray forwards every worker's stdout with a prefix).
# - Ray Train v2 patches ``print`` in the workers to log through the root logger AND (stdout being Ray's stream,
#   not ``sys.__stdout__``) print as well, so every line of rank 0 showed up twice: the patch is turned off
#   (``RAY_TRAIN_ENABLE_PRINT_PATCH=0``, which Ray Train propagates from the driver to the controller and workers).
# - Ray Train sets the workers' root logger to INFO, so FBGEMM's INFO chatter (library loads, TBE arguments)
#   reached the console: the worker puts the root logger back to WARNING, as in a plain Python process.
# - Ray Train's own INFO lines ("Reporting training result ...", "Checkpoint successfully created ...") are off
#   (``RunConfig(logging_config=LoggingConfig(log_level="WARNING"))``); its warnings and errors (worker failures,
#   restarts, timeouts) still show.
# - ``PlacementGroupCleaner`` (a detached Ray Train actor) asks the State API once a second whether the controller
#   is alive; the State API is served by the dashboard, which a local runtime started here does not run
#   (``include_dashboard=False``), so every check logged "Failed to query Ray Train Controller actor state".
#   That one message is dropped in the worker processes of runtimes started here (``worker_process_setup_hook``).
_PRINT_PATCH_ENV = "RAY_TRAIN_ENABLE_PRINT_PATCH"
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def _quiet_worker_logging() -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)


class _DropStateApiNotice:
    """``logging`` filter: drops PlacementGroupCleaner's "Failed to query Ray Train Controller actor state"."""

    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith("Failed to query Ray Train Controller actor state")


def _ray_process_setup() -> None:
    """``worker_process_setup_hook`` of a runtime started by :func:`run_ray_job` (runs in every Ray worker)."""
    import logging

    logging.getLogger(_CLEANER_LOGGER).addFilter(_DropStateApiNotice())


def run_ray_job(job: JobConfig, callbacks_factory: Optional[Callable[[], list[Any]]] = None,
                ray_init: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Run ``job`` as Ray Train workers (``job.distributed.ray``); returns the run summary (rank 0's).

    Args:
        job (JobConfig): the job; ``distributed.ray`` says how many workers, GPUs, storage and failures.
        callbacks_factory (Callable | None): picklable; called in each worker for extra engine callbacks.
        ray_init (dict | None): ``ray.init`` arguments when no Ray runtime is up yet (default: connect to
            ``distributed.ray.address``, or start a local one).

    Returns:
        dict: ``eval`` / ``train`` metrics, ``samples_per_s``, ``steps``, ``checkpoint`` (the DCP URL),
        ``step_losses`` (``[step, loss]`` of rank 0, this attempt), ``ray_checkpoint`` (the pointer's path),
        ``storage_path`` and ``name``. Also written to ``<output_dir>/<name>/ray_summary.json``.
    """
    import dataclasses

    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dist_ctr.strict import to_dict

    rc = job.distributed.ray
    if rc.num_workers < 1:
        raise ValueError(f"distributed.ray.num_workers must be >= 1, got {rc.num_workers}")
    if not ray.is_initialized():
        kwargs = dict(ray_init or {})
        if rc.address and "address" not in kwargs:
            kwargs["address"] = rc.address
        kwargs.setdefault("include_dashboard", False)
        if not kwargs.get("include_dashboard"):  # no dashboard, no State API: see _ray_process_setup
            runtime_env = dict(kwargs.get("runtime_env") or {})
            runtime_env.setdefault("worker_process_setup_hook", _ray_process_setup)
            kwargs["runtime_env"] = runtime_env
        ray.init(**kwargs)
    os.environ.setdefault(_PRINT_PATCH_ENV, "0")  # read by the Ray Train controller and workers it starts
    ck = dataclasses.replace(job.train.checkpoint)
    storage_url = rc.storage_path or os.path.join(job.output_dir, "ray")
    # the checkpoint store's options reach Ray's run directory too when both live on the same store
    same_store = not ck.dir or _scheme(ck.dir) == _scheme(storage_url)
    storage_path, storage_fs = resolve_storage(storage_url, storage_url, ck.storage_options if same_store else None)
    job = dataclasses.replace(job)
    if not ck.dir:
        ck.dir = _default_checkpoint_dir(storage_path if storage_fs is None else storage_url, job.name)
    job.train = dataclasses.replace(job.train, checkpoint=ck)
    resources = dict(rc.resources_per_worker) or None
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": to_dict(job), "report_every": rc.report_every, "callbacks_factory": callbacks_factory},
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=job.name, storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=ck.keep or None),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    summary = json.loads(metrics.get("summary_json", "{}"))
    ray_ck = result.checkpoint
    summary["ray_checkpoint"] = _as_url(ray_ck.path, storage_fs) if ray_ck is not None else None
    summary["storage_path"] = _as_url(storage_path, storage_fs)
    summary["name"] = job.name
    _write_summary(job, summary)
    return summary


def _as_url(path: str, storage_fs: Any) -> str:
    """A path on Ray's storage filesystem as a URL (the fsspec scheme put back when the filesystem is wrapped)."""
    if storage_fs is None:
        return path
    return storage_fs.handler.fs.unstrip_protocol(path)


def _write_summary(job: JobConfig, summary: dict[str, Any]) -> None:
    import fsspec

    url = f"{job.output_dir.rstrip('/')}/{job.name}/ray_summary.json"
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as f:
        json.dump(summary, f, indent=1, default=float)
