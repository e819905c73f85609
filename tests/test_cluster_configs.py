"""Every cluster/*.yaml is validated against what the tool that reads it requires, so a typo fails here, not on a
paid cluster. No network, no cloud account, no Kubernetes:

- Ray cluster launcher configs (``ray up``): Ray's own schema (ray/autoscaler/ray-schema.json, via
  ``ray.autoscaler._private.util.prepare_config`` + ``validate_config``, which fill in the provider defaults offline),
  plus what this project needs from them: one pinned image, the package installed, ``ray start`` on head and workers
  with the job server reachable, GPU nodes that hold ``--num-workers``.
- KubeRay ``RayJob`` / ``RayCluster`` manifests: tests/kuberay_schema.py (written from KubeRay's v1 Go types),
  plus the entrypoint (``dist-ctr train jobs/...``, parsed by our CLI parser and loaded strictly with its ``--set``
  overrides), the runtime env, pinned images and GPU limits on the worker groups.
- Any other file under cluster/ fails ``test_every_cluster_file_is_covered``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kuberay_schema import kuberay_errors, schema_errors

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CONFIGS = sorted(CLUSTER.glob("*.yaml")) + sorted(CLUSTER.glob("*.yml"))
DOCS = {"README.md"}  # non-config files allowed under cluster/
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# GPUs and vCPUs of the instance types the launcher configs may use (AWS instance type pages).
GPU_INSTANCES = {
    "p4d.24xlarge": (8, 96),
    "p4de.24xlarge": (8, 96),
    "p5.48xlarge": (8, 192),
    "p5e.48xlarge": (8, 192),
    "g5.48xlarge": (8, 192),
    "g6e.48xlarge": (8, 192),
}


def kind_of(doc: Any) -> str:
    if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
        return "kuberay"
    if isinstance(doc, dict) and "provider" in doc and "cluster_name" in doc:
        return "ray-launcher"
    if isinstance(doc, dict) and doc.get("apiVersion") == "batch/v1" and doc.get("kind") == "CronJob":
        return "cronjob"  # validated by tests/test_retrain_configs.py
    return "unknown"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def by_kind(kind: str) -> list[Path]:
    return [p for p in CONFIGS if kind_of(load(p)) == kind]


# --------------------------------------------------------------------------------------------- shared checks


def image_errors(image: Any, where: str) -> list[str]:
    if not isinstance(image, str) or not image:
        return [f"{where}: no image"]
    if "@sha256:" in image:
        return []
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return [f"{where}: image {image!r} has no tag (pulls :latest)"]
    if tag == "latest" or tag.endswith("-latest") or tag.startswith("latest-"):
        return [f"{where}: image {image!r} is not pinned (tag {tag!r} moves)"]
    if not tag.startswith(VERSION):
        return [f"{where}: image tag {tag!r} does not name this package's version {VERSION}"]
    return []


def _subcommands(parser) -> set[str]:
    import argparse

    return {c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}


def _drop_submit_only(argv: list[str]) -> list[str]:
    out, it = [], iter(argv)
    for a in it:
        if a == "--address":
            next(it, None)
        elif a.startswith("--address=") or a == "--follow":
            continue
        else:
            out.append(a)
    return out


def dist_ctr_command_errors(cmd: str, where: str) -> tuple[list[str], Any]:
    """A command that runs this project: `dist-ctr train jobs/X.yaml ...`, parsed by our own CLI parser, the job
    file present in the repo, and the job loading strictly with the command's overrides."""
    from dist_ctr.cli import _parse_set, build_parser
    from dist_ctr.config import load_job

    argv = shlex.split(cmd)
    if not argv or argv[0] != "dist-ctr":
        return [f"{where}: {cmd!r} does not call dist-ctr"], None
    parser = build_parser()
    if argv[1:2] == ["submit"] and "submit" not in _subcommands(parser):
        # `dist-ctr submit JOB --address URL [--follow] ...` takes train's job options; check those.
        argv = ["dist-ctr", "train", "--ray"] + _drop_submit_only(argv[2:])
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit:
        return [f"{where}: {cmd!r} is rejected by the dist-ctr parser"], None
    job_arg = getattr(args, "job", None)
    if job_arg is None:
        return [], args
    if not job_arg.startswith("jobs/") or not (ROOT / job_arg).is_file():
        return [f"{where}: job file {job_arg!r} is not a file under jobs/ in this repository"], args
    overrides = _parse_set(getattr(args, "set", None) or [])
    if getattr(args, "num_workers", None) is not None:
        overrides["distributed.ray.num_workers"] = args.num_workers
    try:
        args.loaded_job = load_job(ROOT / job_arg, overrides)
    except Exception as e:  # ConfigError names the key
        return [f"{where}: {e}"], args
    return [], args


# ------------------------------------------------------------------------------------------ ray launcher


def ray_schema_errors(cfg: Any) -> list[str]:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    return schema_errors(cfg, schema)


def ray_launcher_errors(cfg: Any) -> list[str]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    errs = ray_schema_errors(cfg)
    if errs:
        return errs
    try:
        full = prepare_config(copy.deepcopy(cfg))  # provider defaults, offline
        validate_config(full)
    except Exception as e:
        return [f"ray validate_config: {e}"]

    docker = full.get("docker") or {}
    for key in ("image", "head_image", "worker_image"):
        if key in docker:
            errs += image_errors(docker[key], f"docker.{key}")
    if not docker.get("image") and not (docker.get("head_image") and docker.get("worker_image")):
        errs.append("docker: no image for every node")

    setup = full["setup_commands"] + full["head_setup_commands"] + full["worker_setup_commands"]
    install = [c for c in setup if re.search(r"pip install\b.*(-e \.|dist[-_]ctr)", c)]
    if not install:
        errs.append("setup_commands: nothing installs this package (pip install ... -e . / dist-ctr)")
    repo_mounts = [dst for dst, src in full["file_mounts"].items() if os.path.normpath(str(src)) == "."]
    for c in install:
        m = re.match(r"cd (\S+) &&", c)
        if m and m.group(1) not in repo_mounts:
            errs.append(f"setup_commands: {c!r} cds into {m.group(1)}, not a file_mounts target of the repository")

    head = " ".join(full["head_start_ray_commands"])
    if "ray start --head" not in head:
        errs.append("head_start_ray_commands: no `ray start --head`")
    if "--dashboard-host=0.0.0.0" not in head:
        errs.append("head_start_ray_commands: the job server (dashboard) is not reachable off the head node")
    if "--autoscaling-config=~/ray_bootstrap_config.yaml" not in head:
        errs.append("head_start_ray_commands: no --autoscaling-config (the autoscaler would not start)")
    if not any(re.search(r"ray start --address=\$RAY_HEAD_IP:\d+", c) for c in full["worker_start_ray_commands"]):
        errs.append("worker_start_ray_commands: no `ray start --address=$RAY_HEAD_IP:PORT`")

    for c in setup + full["initialization_commands"] + full["head_start_ray_commands"]:
        if re.search(r"dist[-_]ctr", c) and re.search(r"\btrain\b|\bsubmit\b", c) and "dist-ctr " not in c:
            errs.append(f"{c!r} runs the project without the dist-ctr CLI")

    head_type = full["head_node_type"]
    for name, nt in full["available_node_types"].items():
        if name == head_type:
            continue
        it = nt.get("node_config", {}).get("InstanceType")
        if it not in GPU_INSTANCES:
            errs.append(f"available_node_types.{name}.node_config.InstanceType: {it!r} is not a known GPU instance")
    return errs


def launcher_gpu_capacity(cfg: dict) -> int:
    head = cfg["head_node_type"]
    total = 0
    for name, nt in cfg["available_node_types"].items():
        if name != head and nt["node_config"].get("InstanceType") in GPU_INSTANCES:
            gpus, _ = GPU_INSTANCES[nt["node_config"]["InstanceType"]]
            total += gpus * min(nt.get("max_workers", cfg["max_workers"]), cfg["max_workers"])
    return total


def documented_commands(path: Path) -> list[str]:
    """The `dist-ctr ...` commands shown in a config's header comments."""
    out = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and "dist-ctr " in line:
            out.append(line[line.index("dist-ctr ") :].rstrip(" )"))
    return out


@pytest.mark.parametrize("path", by_kind("ray-launcher"), ids=lambda p: p.name)
def test_ray_launcher_config(path):
    cfg = load(path)
    assert ray_launcher_errors(cfg) == []
    cmds = documented_commands(path)
    assert cmds, f"{path.name}: the header shows no dist-ctr command to run on the cluster"
    capacity = launcher_gpu_capacity(cfg)
    for cmd in cmds:
        errs, args = dist_ctr_command_errors(cmd, f"{path.name} header")
        assert errs == []
        nw = getattr(args, "num_workers", None)
        if nw is not None:
            assert nw <= capacity, f"{cmd!r}: {nw} workers but the cluster has at most {capacity} GPUs"


def test_ray_launcher_typos_are_named():
    (path,) = by_kind("ray-launcher")[:1] or pytest.skip("no launcher config")
    cfg = load(path)
    bad = copy.deepcopy(cfg)
    bad["worker_start_ray_command"] = bad.pop("worker_start_ray_commands")
    assert any(e.startswith("worker_start_ray_command: unknown key") for e in ray_launcher_errors(bad))
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 0
    assert "available_node_types.gpu_worker.min_worker: unknown key" in "\n".join(ray_launcher_errors(bad))
    bad = copy.deepcopy(cfg)
    bad["max_workers"] = "two"
    assert any(e.startswith("max_workers: 'two' is not of type 'integer'") for e in ray_launcher_errors(bad))
    bad = copy.deepcopy(cfg)
    bad["docker"]["image"] = "ghcr.io/your-org/dist-ctr:latest"
    assert any("docker.image" in e and "not pinned" in e for e in ray_launcher_errors(bad))
    bad = copy.deepcopy(cfg)
    bad["head_node_type"] = "hed"
    assert any("head_node_type" in e for e in ray_launcher_errors(bad))


# ------------------------------------------------------------------------------------------------ KubeRay


def _groups(doc: dict) -> tuple[dict, list[dict]]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return spec["headGroupSpec"], spec.get("workerGroupSpecs", [])


def _gpus(container: dict) -> int:
    return int(str(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)))


def kuberay_all_errors(doc: Any) -> list[str]:
    errs = kuberay_errors(doc)
    if errs:
        return errs
    head, workers = _groups(doc)
    if not workers:
        errs.append("workerGroupSpecs: no worker group")
    groups = [("headGroupSpec", head)] + [(f"workerGroupSpecs.{i}", w) for i, w in enumerate(workers)]
    images = set()
    for where, g in groups:
        containers = g["template"]["spec"]["containers"]
        for j, c in enumerate(containers):
            errs += image_errors(c.get("image"), f"{where}.template.spec.containers.{j}.image")
            images.add(c.get("image"))
        ray_c = containers[0]  # KubeRay runs Ray in the first container
        limits, requests = ray_c.get("resources", {}).get("limits", {}), ray_c.get("resources", {}).get("requests", {})
        if not limits.get("cpu") or not limits.get("memory"):
            errs.append(f"{where}.template.spec.containers.0.resources.limits: needs cpu and memory (Ray sizes itself)")
        if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != str(limits.get("nvidia.com/gpu")):
            errs.append(f"{where}: nvidia.com/gpu requests must equal limits (an extended resource)")
    if len(images) > 1:
        errs.append(f"containers: one image on every node expected, got {sorted(images)}")
    for i, w in enumerate(workers):
        lo, n, hi = w.get("minReplicas", 0), w.get("replicas", w.get("minReplicas", 0)), w.get("maxReplicas", 2**31 - 1)
        if not lo <= n <= hi:
            errs.append(f"workerGroupSpecs.{i}: needs minReplicas <= replicas <= maxReplicas, got {lo}, {n}, {hi}")

    if doc["kind"] == "RayJob":
        spec = doc["spec"]
        mode = spec.get("submissionMode", "K8sJobMode")
        if mode != "InteractiveMode" and not spec.get("entrypoint"):
            errs.append(f"spec.entrypoint: required with submissionMode {mode}")
        if "ttlSecondsAfterFinished" in spec and not spec.get("shutdownAfterJobFinishes"):
            errs.append("spec.ttlSecondsAfterFinished: only used with shutdownAfterJobFinishes: true")
        if "runtimeEnvYAML" in spec:
            errs += runtime_env_errors(spec["runtimeEnvYAML"])
        if spec.get("entrypoint"):
            errs += entrypoint_errors(spec["entrypoint"], head, workers)
    return errs


def runtime_env_errors(text: str) -> list[str]:
    from ray.runtime_env import RuntimeEnv

    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"spec.runtimeEnvYAML: not YAML ({e})"]
    if not isinstance(env, dict):
        return ["spec.runtimeEnvYAML: not a mapping"]
    errs = [f"spec.runtimeEnvYAML.{k}: unknown runtime_env field" for k in env if k not in RuntimeEnv.known_fields]
    for k, v in (env.get("env_vars") or {}).items():
        if not isinstance(v, str):
            errs.append(f"spec.runtimeEnvYAML.env_vars.{k}: {v!r} must be a string (Ray rejects it)")
    return errs


def entrypoint_errors(entrypoint: str, head: dict, workers: list[dict]) -> list[str]:
    errs, args = dist_ctr_command_errors(entrypoint, "spec.entrypoint")
    if errs:
        return errs
    job = getattr(args, "loaded_job", None)
    if job is None:
        return ["spec.entrypoint: does not run a job file"]
    ray = job.distributed.ray
    if not getattr(args, "ray", False):
        errs.append("spec.entrypoint: `dist-ctr train` without --ray runs one process, not Ray Train workers")
    gpu_workers = [w for w in workers if _gpus(w["template"]["spec"]["containers"][0]) > 0]
    if ray.use_gpu:
        if not gpu_workers:
            errs.append("workerGroupSpecs: distributed.ray.use_gpu but no worker group has nvidia.com/gpu limits")
        per_worker_gpu = float(ray.resources_per_worker.get("GPU", 1))
        per_worker_cpu = float(ray.resources_per_worker.get("CPU", 1))
        slots = 0
        for w in gpu_workers:
            c = w["template"]["spec"]["containers"][0]
            per_pod = int(_gpus(c) // per_worker_gpu)
            cpu = float(str(c["resources"]["limits"]["cpu"]))
            if per_pod * per_worker_cpu > cpu:
                errs.append(
                    f"workerGroupSpecs {w['groupName']}: {per_pod} workers x {per_worker_cpu} CPU > cpu limit {cpu}"
                )
            slots += per_pod * w.get("maxReplicas", w.get("replicas", 0))
        if ray.num_workers > slots:
            errs.append(f"spec.entrypoint: {ray.num_workers} GPU workers but the worker groups hold {slots}")
        if "0" != str(head.get("rayStartParams", {}).get("num-gpus", "0")):
            errs.append("headGroupSpec.rayStartParams.num-gpus: the head trains nothing")
    return errs


@pytest.mark.parametrize("path", by_kind("kuberay"), ids=lambda p: p.name)
def test_kuberay_manifest(path):
    assert kuberay_all_errors(load(path)) == []


def _first_rayjob() -> dict:
    for p in by_kind("kuberay"):
        doc = load(p)
        if doc["kind"] == "RayJob":
            return doc
    pytest.skip("no RayJob manifest")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["spec"].__setitem__("entrypont", d["spec"].pop("entrypoint")), "spec.entrypont: unknown key"),
        (
            lambda d: d["spec"]["rayClusterSpec"].__setitem__(
                "workerGroupSpec", d["spec"]["rayClusterSpec"].pop("workerGroupSpecs")
            ),
            "spec.rayClusterSpec.workerGroupSpec: unknown key",
        ),
        (
            lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-gpus", 0),
            "spec.rayClusterSpec.headGroupSpec.rayStartParams.num-gpus: 0 is not of type 'string'",
        ),
        (lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", "yes"), "spec.shutdownAfterJobFinishes: 'yes'"),
        (lambda d: d["spec"].__setitem__("submissionMode", "K8sJob"), "spec.submissionMode: 'K8sJob' is not one of"),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].__setitem__("replicas", "2"),
            "spec.rayClusterSpec.workerGroupSpecs.0.replicas: '2' is not of type 'integer'",
        ),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"].__setitem__(
                "tolerations", [{"key": "nvidia.com/gpu", "operater": "Exists"}]
            ),
            "spec.rayClusterSpec.workerGroupSpecs.0.template.spec.tolerations.0.operater: unknown key",
        ),
        (lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"), "apiVersion: 'ray.io/v1' was expected"),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][
                0
            ].__setitem__("image", "ghcr.io/your-org/dist-ctr:latest"),
            "workerGroupSpecs.0.template.spec.containers.0.image: image 'ghcr.io/your-org/dist-ctr:latest' is not",
        ),
        (
            lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0][
                "resources"
            ]["limits"].pop("nvidia.com/gpu"),
            "no worker group has nvidia.com/gpu limits",
        ),
        (
            lambda d: d["spec"].__setitem__("entrypoint", d["spec"]["entrypoint"].replace("criteo_1tb", "criteo_2tb")),
            "spec.entrypoint: job file 'jobs/criteo_2tb.yaml' is not a file under jobs/",
        ),
        (
            lambda d: d["spec"].__setitem__("entrypoint", d["spec"]["entrypoint"].replace("use_gpu", "use_gp")),
            "distributed.ray: unknown key 'use_gp'",
        ),
        (
            lambda d: d["spec"].__setitem__("entrypoint", "python -m dist_ctr.cli train jobs/criteo_1tb.yaml --ray"),
            "does not call dist-ctr",
        ),
        (
            lambda d: d["spec"].__setitem__("entrypoint", d["spec"]["entrypoint"].replace("16", "32", 1)),
            "32 GPU workers but the worker groups hold 16",
        ),
        (lambda d: d["spec"].__setitem__("runtimeEnvYAML", "env_vars: {OMP_NUM_THREADS: 8}\n"), "must be a string"),
    ],
    ids=[
        "entrypont",
        "workerGroupSpec",
        "rayStartParams-int",
        "bool-type",
        "enum",
        "replicas-str",
        "toleration-typo",
        "apiVersion",
        "latest-image",
        "no-gpu-limit",
        "missing-job-file",
        "set-typo",
        "not-dist-ctr",
        "too-many-workers",
        "env-var-int",
    ],
)
def test_kuberay_errors_are_named(mutate, expected):
    doc = copy.deepcopy(_first_rayjob())
    mutate(doc)
    errs = kuberay_all_errors(doc)
    assert any(expected in e for e in errs), errs


# ---------------------------------------------------------------------------------------------- coverage


def test_every_cluster_file_is_covered():
    assert CONFIGS, "cluster/ has no configs"
    for p in CLUSTER.iterdir():
        if p.name in DOCS:
            continue
        assert p.suffix in (".yaml", ".yml"), f"cluster/{p.name}: not a config this test knows how to validate"
        docs = list(yaml.safe_load_all(p.read_text()))
        assert len(docs) == 1, f"cluster/{p.name}: one document per file expected"
        assert kind_of(docs[0]) != "unknown", f"cluster/{p.name}: neither a Ray launcher config nor a KubeRay CR"
    assert set(by_kind("ray-launcher")) | set(by_kind("kuberay")) | set(by_kind("cronjob")) == set(CONFIGS)


def test_readme_names_every_config():
    text = (CLUSTER / "README.md").read_text()
    for p in CONFIGS:
        assert f"`{p.name}`" in text, f"cluster/README.md does not describe {p.name}"


def test_readme_commands_parse():
    """The `dist-ctr submit` / `dist-ctr train` lines cluster/README.md shows parse and their job loads."""
    text = (CLUSTER / "README.md").read_text().replace("\\\n", " ")
    cmds = [m.group(1) for m in re.finditer(r"^\s+(dist-ctr (?:submit|train) .+?)\s*$", text, re.M)]
    assert cmds, "cluster/README.md shows no dist-ctr submit / train command"
    for cmd in cmds:
        errs, _ = dist_ctr_command_errors(cmd.split("#")[0].strip(), "cluster/README.md")
        assert errs == []
