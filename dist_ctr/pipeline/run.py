"""One scheduled retraining run: plan -> lease -> train (warm start) -> export -> score -> gate -> publish.

:func:`run_retrain` is what ``dist-ctr retrain`` calls. For an as-of date it plans one or more windows (missed
days caught up ``in_order``, or as ``one_window``), and for each:

1. plan: the training partitions (``since_parent``: the complete partitions after the newest version's window;
   ``last_n``), the evaluation partition (held out), the parent (the published version) -- ``--dry-run`` prints
   this and stops;
2. idempotency: when a version already covers this evaluation partition (or a newer one) there is nothing to do;
3. under the registry's lease: train through the engine (in-process, spawned processes or Ray Train workers),
   with ``data.train`` filtered to the window and ``data.eval`` to the evaluation partition, warm-started from the
   parent's checkpoint (``warm_start: parent``); export; score candidate and published model with the same code
   on the same partition; gate; ``add_version`` (COMPLETE marker last, so a crash leaves no half version and the
   run key makes a retry reuse a finished one); promote when the gate passed; every step an event, the last
   one ``run_finished`` (a version without it is completed by the next run: promoted if its gate passed).

The pointer only ever names a complete version, so a crash anywhere leaves the published model loadable.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dist_ctr.errors import PipelineError
from dist_ctr.pipeline.config import PipelineConfig
from dist_ctr.pipeline.partitions import Window, choose_window, list_partitions

__all__ = ["PlannedRun", "RetrainRun", "run_retrain"]


def _say(label: str, text: str) -> None:
    print(f"[retrain] {label:<10} {text}", flush=True)


@dataclass
class PlannedRun:
    """One window to train: partitions, evaluation partition, parent version and the run key."""

    as_of: str
    window: Window
    parent: Any  # VersionInfo | None
    run_key: str
    warm: bool
    skipped: list[str] = field(default_factory=list)


class RetrainRun:
    """The runs of one ``dist-ctr retrain`` call (see the module docstring)."""

    def __init__(self, cfg: PipelineConfig, as_of: Optional[str] = None) -> None:
        from dist_ctr.pipeline.registry import ModelRegistry

        self.cfg = cfg
        self.r = cfg.retrain
        self.as_of = as_of or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
        self.registry = ModelRegistry(self.r.registry, storage_options=self.r.registry_storage_options or None)
        self.model = self.r.model_name
        self.lease: Any = None  # the held Lease while executing: checked before each registry write

    # ---- plan ---------------------------------------------------------------------------------------------
    def _newest_covered(self) -> tuple[Optional[str], Optional[str], Any]:
        """(newest trained partition, newest evaluated partition, that version) over every version."""
        versions = self.registry.versions(self.model)
        best = None
        for v in versions:
            ev = (v.metadata or {}).get("eval_partition")
            if ev is not None and (best is None or ev > best.metadata["eval_partition"]):
                best = v
        if best is None:
            return None, None, None
        window = best.metadata.get("window") or []
        return (window[-1] if window else None), best.metadata["eval_partition"], best

    def plan(self, quiet: bool = False) -> list[PlannedRun]:
        """The windows this call trains, oldest first (empty: nothing to do)."""
        parts = list_partitions(self.r.data_root, self.r.partition_key, self.r.storage_options or None)
        trained, evaluated, covering = self._newest_covered()
        probe = choose_window(parts, self.as_of, trained, self.r.window.mode, self.r.window.last_n,
                              self.r.eval_partition, self.r.partition_key) if evaluated is None else None
        if evaluated is not None:
            ev = self._eval_value(parts)
            if covering is not None and not self._finished(covering):  # stopped between add_version and the end
                w = Window(list(covering.metadata.get("window") or []), covering.metadata["eval_partition"])
                parent = self.registry.published(self.model)
                return [PlannedRun(self.as_of, w, parent, covering.metadata["run_key"], bool(covering.metadata.get(
                    "warm_start")))]
            if ev <= evaluated:
                if not quiet:
                    print(f"[retrain] nothing to do: {covering.version} already covers {self.r.partition_key}={ev} "
                          f"(window {covering.metadata.get('window_text', '')}, as of {self.as_of})", flush=True)
                return []
            probe = choose_window(parts, self.as_of, trained, self.r.window.mode, self.r.window.last_n,
                                  self.r.eval_partition, self.r.partition_key)
        assert probe is not None
        windows = [probe]
        if self.r.catch_up == "in_order" and self.r.window.mode == "since_parent" and len(probe.train) > 1 \
                and self.r.eval_partition == "newest_complete":
            ready = probe.train + [probe.eval]
            windows = [Window([a], b, probe.skipped) for a, b in zip(ready[:-1], ready[1:])]
        parent = self.registry.published(self.model) if self.r.warm_start == "parent" else None
        warm = parent is not None and self._parent_fits(parent, quiet)
        return [PlannedRun(self.as_of, w, parent, self._run_key(w), warm) for w in windows]

    def _parent_fits(self, parent: Any, quiet: bool) -> bool:
        """Whether the parent's checkpoint describes the job's model (a grown vocabulary fits); a mismatch is an
        error, or a cold start under ``on_schema_change: cold_start``."""
        from dist_ctr.config import load_schema
        from dist_ctr.train import checkpoint as ckpt
        from dist_ctr.train.warm_start import SchemaMismatch, grown_tables

        meta = ckpt.read_meta(parent.checkpoint_url, self.r.registry_storage_options or None)
        try:
            grown = grown_tables(meta, self.cfg.model.name, self.cfg.model.config, load_schema(self.cfg.schema),
                                 parent.checkpoint_url)
        except SchemaMismatch as e:
            if self.r.on_schema_change != "cold_start":
                raise
            if not quiet:
                _say("cold start", f"{e} (on_schema_change: cold_start)")
            return False
        for t, (a, b) in grown.items():
            if not quiet:
                _say("grown", f"table {t}: {a:,} -> {b:,} rows (old rows kept, new rows initialised)")
        return True

    def _eval_value(self, parts: list[Any]) -> str:
        if self.r.eval_partition != "newest_complete":
            return str(self.r.eval_partition)
        done = [p.value for p in parts if p.complete and p.value <= self.as_of]
        if not done:
            raise PipelineError(f"no complete partition under {self.r.data_root} up to {self.as_of}")
        return done[-1]

    def _run_key(self, w: Window) -> str:
        text = json.dumps([self.model, w.train, w.eval, self.r.window.mode], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def print_plan(self, runs: list[PlannedRun]) -> None:
        key = self.r.partition_key
        for i, p in enumerate(runs):
            _say("run", f"{i + 1}/{len(runs)} for {self.model} as of {self.as_of}")
            _say("train", f"{p.window.describe(key)}")
            _say("evaluate", f"{key}={p.window.eval} (held out)")
            if i > 0 and self.r.warm_start == "parent":  # parent: what the runs before it publish
                _say("parent", f"the version published when run {i + 1} starts -> warm start")
                _say("compare", "candidate vs published, same partition")
            else:
                parent = p.parent.version if p.parent is not None else "none (cold start)"
                _say("parent", f"{parent}{' -> warm start' if p.warm else ''}")
                _say("compare", "candidate vs published, same partition" if p.parent is not None
                     else "candidate on absolute rules (no published version)")
            for s in p.window.skipped:
                _say("skipped", s)

    # ---- execute ------------------------------------------------------------------------------------------
    def execute(self, p: PlannedRun) -> Any:
        """Train, export, score, gate, publish one planned window (under the lease). Returns the version."""
        from dist_ctr.pipeline.gate import GateConfig, evaluate_gate
        from dist_ctr.pipeline.scoring import score_model
        from dist_ctr.train.export import export_checkpoint

        existing = self.registry.find(self.model, p.run_key)
        eval_url = f"{self.r.data_root.rstrip('/')}/{self.r.partition_key}={p.window.eval}"
        if existing is not None:
            _say("resume", f"{existing.version} already holds this window (a previous run stopped after adding it)")
            version, decision = existing, None
        else:
            self.registry.record(self.model, {"event": "run_started", "as_of": p.as_of, "run_key": p.run_key,
                                              "window": p.window.train, "eval_partition": p.window.eval})
            work = Path(self.r.work_dir) / self.model / f"{p.window.eval}-{p.run_key}"
            shutil.rmtree(work, ignore_errors=True)  # what a crashed attempt left is redone, never reused
            result = self._train(p, work)
            model_path = str(work / "model.pt")
            export_checkpoint(result["checkpoint"], model_path)
            so = self.r.storage_options or None
            cand = score_model(model_path, eval_url, storage_options=so)
            pub = self.registry.published(self.model)
            pub_m = score_model(pub.model_path, eval_url, storage_options=so,
                                model_storage_options=self.r.registry_storage_options or {}) if pub else None
            g = self.r.gate
            gate = GateConfig(min_auc=g.min_auc, max_auc_drop=g.max_auc_drop, max_logloss_rise=g.max_logloss_rise,
                              calibration_range=g.calibration_range, tasks=g.tasks)
            decision = evaluate_gate(cand, pub_m, gate)
            for line in decision.lines():
                _say("gate", line)
            meta = {"run_key": p.run_key, "as_of": p.as_of, "window": p.window.train,
                    "window_text": p.window.describe(self.r.partition_key), "eval_partition": p.window.eval,
                    "parent": p.parent.version if p.parent is not None else None, "warm_start": p.warm,
                    "metrics": cand, "published_metrics": pub_m, "gate_passed": bool(decision.passed),
                    "gate_failed": [str(r) for r in decision.failed()], "config": _plain(self.cfg),
                    "created": time.time()}
            self._check_lease()
            version = self.registry.add_version(self.model, export_path=model_path,
                                                checkpoint_url=result["checkpoint"], metadata=meta)
            self.registry.record(self.model, {"event": "decision", "version": version.version,
                                              "passed": bool(decision.passed), "candidate": cand,
                                              "published": pub_m, "failed": meta["gate_failed"]})
        passed = decision.passed if decision is not None else bool(version.metadata.get("gate_passed"))
        if passed:
            self._check_lease()
            self.registry.promote(self.model, version.version, reason=f"gate passed on {p.window.eval}")
            _say("published", f"{version.version} ({self.r.registry.rstrip('/')}/{self.model}@published)")
        else:
            _say("rejected", f"{version.version} kept unpublished; pointer unchanged")
        self.registry.record(self.model, {"event": "run_finished", "version": version.version, "run_key": p.run_key,
                                          "published": bool(passed)})
        return version

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _finished(self, version: Any) -> bool:
        """Whether the run that added ``version`` got to its end (promotion included)."""
        return any(e.get("event") == "run_finished" and e.get("version") == version.version
                   for e in self.registry.events(self.model))

    def _train(self, p: PlannedRun, work: Path) -> dict[str, Any]:
        """Run the engine on the window; returns the job summary (``checkpoint``: the DCP URL)."""
        from dist_ctr.train.warm_start import WarmStart

        job = self._job(p, work)
        cbs: tuple = ()
        if p.warm:
            cbs = (WarmStart(p.parent.checkpoint_url, dict(self.r.registry_storage_options)),)
        d = job.distributed
        if d.launcher == "ray":
            import functools

            from dist_ctr.launch.ray_train import run_ray_job

            return run_ray_job(job, callbacks_factory=functools.partial(list, cbs))
        if d.launcher == "spawn" and d.world_size > 1:
            from dist_ctr.launch.spawn import spawn

            return spawn(_spawned, d.world_size, job, cbs)[0]
        from dist_ctr.distributed.env import DistEnv, init_process_group
        from dist_ctr.train.job import run_job

        env = DistEnv.from_environ()
        init_process_group(env)
        return run_job(job, env, callbacks=cbs).summary()

    def _job(self, p: PlannedRun, work: Path) -> Any:
        job = self.cfg.job()
        key = self.r.partition_key
        base = {k: v for k, v in job.data.train.items() if k not in ("url", "partitions")}
        train = {**base, "url": self.r.data_root, "storage_options": self.r.storage_options,
                 "partitions": {key: list(p.window.train)}}
        ev = {**(job.data.eval or {}), "url": self.r.data_root, "storage_options": self.r.storage_options,
              "partitions": {key: p.window.eval}}
        data = dataclasses.replace(job.data, train=train, eval=ev, synth=None)
        ck = dataclasses.replace(job.train.checkpoint, dir=str(work / "checkpoints"), resume=False, keep=1)
        tr = dataclasses.replace(job.train, checkpoint=ck)
        return dataclasses.replace(job, data=data, train=tr, output_dir=str(work), name=f"{self.model}")


def _spawned(env: Any, job: Any, cbs: tuple) -> dict[str, Any]:
    from dist_ctr.train.job import run_job

    return run_job(job, env, callbacks=cbs, verbose=env.is_main).summary()


def _plain(cfg: PipelineConfig) -> dict[str, Any]:
    from dist_ctr.train.checkpoint import _without_storage_options
    from dist_ctr.strict import to_dict

    return _without_storage_options(to_dict(cfg))


def run_retrain(cfg: PipelineConfig, as_of: Optional[str] = None, dry_run: bool = False) -> list[Any]:
    """Plan and (unless ``dry_run``) execute the runs for ``as_of``; returns the versions added or reused."""
    run = RetrainRun(cfg, as_of)
    _ensure_synth(cfg)
    runs = run.plan()
    if not runs:
        return []
    run.print_plan(runs)
    if dry_run:
        _say("dry run", "nothing trained")
        return []
    out = []
    owner = f"retrain-{run.model}-{run.as_of}-{time.time_ns()}"
    with run.registry.lease(run.model, owner, ttl_s=cfg.retrain.lease_ttl_s) as run.lease:
        while True:  # planned again under the lease (another run may have finished meanwhile) and after each run
            again = run.plan(quiet=True)
            if not again:
                break
            out.append(run.execute(again[0]))
    return out


def _ensure_synth(cfg: PipelineConfig) -> None:
    """Write the pipeline's drifting synthetic days under ``data_root`` when the first one is missing."""
    s = cfg.retrain.synth
    if s is None or not s.days:
        return
    import fsspec

    from dist_ctr.config import load_schema
    from dist_ctr.data.drift import Drift, generate_daily

    root = cfg.retrain.data_root.rstrip("/")
    fs, path = fsspec.core.url_to_fs(root, **(cfg.retrain.storage_options or {}))
    if fs.exists(f"{path}/{cfg.retrain.partition_key}={s.days[-1]}/_SUCCESS"):
        return
    generate_daily(root, load_schema(cfg.schema), s.days, s.rows_per_day, seed=s.seed,
                   drift=Drift(shuffle_labels=tuple(s.shuffle_labels_on)), storage_options=cfg.retrain.storage_options)
    _say("data", f"wrote {len(s.days)} synthetic daily partitions under {root}")
