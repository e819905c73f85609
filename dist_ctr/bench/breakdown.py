"""Where a training step's time goes: a torch-profiler run split into the parts of a CTR step.

Parts (each forward op and the backward of that op count together, matched by the autograd sequence number):

- ``input prep``: checking the input columns and cutting batches from them with their KJTs (the facade's
  ``dc:data.prepare`` / ``dc:data.batch`` scopes);
- ``lookup``: the sharded embedding modules' forward (TorchRec input distribution, FBGEMM lookup) and the
  sparse arch around them;
- ``embedding bwd + update``: FBGEMM's fused backward, which also applies the sparse optimizer;
- ``interaction``: every other op of the model (FM, cross net, attention, pair products, concatenation);
- ``tower``: the DNN towers and output heads;
- ``loss``: the task's ops outside the model (BCE, L2 terms, weights);
- ``dense optimizer``: the dense optimizer's step and ``zero_grad``;
- ``engine``: the remaining ops inside the profiled call (loss bookkeeping, the facade's prediction hook);
- ``python``: wall time no op accounts for (interpreter, module calls, hooks, the profiler's own cost).

Figures are per step, in milliseconds, with the profiler on: they say where the time goes, not how fast the
step runs without a profiler (time that with the benchmark's own timing). ``profile_steps(..., top_ops=n)`` also
keeps the ``n`` ops with the most self CPU time, per op name and input shapes (:func:`format_top_ops`).

>>> split = StepBreakdown({"tower": 2000.0, "python": 1000.0}, wall_ms=3.0, steps=1)
>>> split.shares()["tower"]
0.6666666666666666
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.autograd.profiler import record_function

__all__ = ["PARTS", "OpTime", "StepBreakdown", "format_breakdown", "format_top_ops", "profile_steps"]

PARTS = ("input prep", "lookup", "embedding bwd + update", "interaction", "tower", "loss", "dense optimizer",
         "engine", "python")
SCOPE = "dc:"  # prefix of the profiler scopes this module (and the engine / facade) opens
# scopes opened by the library itself (``record_function``) -> part
LIBRARY_SCOPES = {"dc:data.prepare": "input prep", "dc:data.batch": "input prep"}


@dataclass(frozen=True)
class OpTime:
    """One op (name and input shapes) of a profiled call: its self CPU time and calls, both per step."""

    name: str
    shapes: str
    self_ms: float
    calls: float


@dataclass
class StepBreakdown:
    """Per-part CPU time of some steps.

    Attributes:
        micros (dict[str, float]): part -> microseconds over all profiled steps.
        wall_ms (float): wall time of the profiled call.
        steps (int): training steps in it.
        top_ops (list[OpTime]): the ops with the most self CPU time, most first (empty unless asked for).
    """

    micros: dict[str, float]
    wall_ms: float
    steps: int
    top_ops: list[OpTime] = field(default_factory=list)

    def per_step_ms(self) -> dict[str, float]:
        return {p: self.micros.get(p, 0.0) / 1e3 / max(1, self.steps) for p in PARTS}

    def shares(self) -> dict[str, float]:
        total = sum(self.micros.values()) or 1.0
        return {p: self.micros.get(p, 0.0) / total for p in PARTS if p in self.micros}


def _part_of_module(name: str, module: nn.Module) -> str | None:
    """The part a module's forward ops belong to, or ``None`` to inherit its parent's."""
    from torchrec.distributed.types import ShardedModule

    from dist_ctr.layers.core import DNN
    from dist_ctr.models.heads import TaskOutput
    from dist_ctr.sparse.arch import LinearArch, SparseArch

    if isinstance(module, (ShardedModule, SparseArch, LinearArch)):
        return "lookup"
    if isinstance(module, (DNN, TaskOutput)) or name.rsplit(".", 1)[-1] == "dnn_linear":
        return "tower"
    return None


@contextlib.contextmanager
def _scoped_modules(task: nn.Module) -> Iterator[None]:
    """Open a ``dc:<part>`` profiler scope around the forward of every module that decides a part: the task
    (``loss``), its model (``interaction``), lookups and towers."""
    model = getattr(task, "model", None)
    handles: list[Any] = []

    def attach(module: nn.Module, part: str) -> None:
        stack: list[Any] = []

        def pre(_m: nn.Module, _args: Any) -> None:
            rf = record_function(SCOPE + part)
            rf.__enter__()
            stack.append(rf)

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    attach(task, "loss")
    if model is not None:
        attach(model, "interaction")
        for name, m in model.named_modules():
            part = _part_of_module(name, m) if m is not model else None
            if part is not None:
                attach(m, part)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _part(scope_names: list[str]) -> str | None:
    """The innermost ``dc:`` scope among an event's ancestors (innermost first) -> its part."""
    for n in scope_names:
        if n in LIBRARY_SCOPES:
            return LIBRARY_SCOPES[n]
        if n.startswith(SCOPE):
            return n[len(SCOPE):]
    return None


def _ancestors(e: Any) -> list[str]:
    out = []
    p = e.cpu_parent
    while p is not None:
        out.append(p.name)
        p = p.cpu_parent
    return out


def _attribute(events: list[Any]) -> dict[str, float]:
    """Self CPU microseconds per part; backward ops take the part of the forward op of the same sequence number.

    The ``dc:`` scopes' own self time (Python inside a module's forward) is left out: it lands in ``python``.
    """
    fwd_part: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::engine"):
            part = _part([e.name, *_ancestors(e)])
            if part is not None:
                fwd_part.setdefault(e.sequence_nr, part)
    micros: dict[str, float] = {}
    for e in events:
        if e.name.startswith(SCOPE):
            continue
        names = [e.name, *_ancestors(e)]
        if any("split_embedding_backward" in n for n in names):
            part: str | None = "embedding bwd + update"
        elif any(n.startswith("Optimizer.") for n in names):
            part = "dense optimizer"
        else:
            part = None
            p = e
            while p is not None and part is None:  # the backward node this op runs under, if any
                if p.name.startswith("autograd::engine::evaluate_function") and p.sequence_nr in fwd_part:
                    part = fwd_part[p.sequence_nr]
                p = p.cpu_parent
            if part is None:
                part = _part(names) or "engine"
        micros[part] = micros.get(part, 0.0) + float(e.self_cpu_time_total)
    return micros


def profile_steps(run: Callable[[], Any], task: nn.Module, steps: int, top_ops: int = 0) -> StepBreakdown:
    """Profile ``run()`` (which trains ``steps`` steps of ``task``, a ``CTRTask`` inside DMP) and split its time.

    Args:
        run: the call to profile, e.g. a facade ``model.fit(...)`` over ``steps`` batches.
        task: the ``CTRTask`` (``trainer.task``) whose modules get part scopes.
        steps (int): steps ``run`` trains (for per-step figures).
        top_ops (int): also keep this many ops with the most self CPU time (per name and input shapes).
    """
    import time

    from torch.profiler import ProfilerActivity, profile

    with _scoped_modules(task), profile(activities=[ProfilerActivity.CPU], record_shapes=top_ops > 0) as prof:
        t0 = time.perf_counter()
        run()
        wall_ms = (time.perf_counter() - t0) * 1e3
    micros = _attribute(list(prof.events()))
    micros["python"] = max(0.0, wall_ms * 1e3 - sum(micros.values()))
    ops: list[OpTime] = []
    if top_ops > 0:
        n = max(1, steps)
        rows = [r for r in prof.key_averages(group_by_input_shape=True) if not r.key.startswith(SCOPE)]
        rows.sort(key=lambda r: r.self_cpu_time_total, reverse=True)
        ops = [OpTime(r.key, str(r.input_shapes), r.self_cpu_time_total / 1e3 / n, r.count / n)
               for r in rows[:top_ops]]
    return StepBreakdown(micros, wall_ms, steps, ops)


def format_breakdown(title: str, split: StepBreakdown) -> str:
    """One line: ``title: <part> <ms/step> (<share>) ...``, parts in ``PARTS`` order."""
    per, share = split.per_step_ms(), split.shares()
    cells = [f"{p} {per[p]:.2f} ms ({share[p]:.0%})" for p in PARTS if p in share]
    return f"{title}: {split.wall_ms / max(1, split.steps):.2f} ms/step with the profiler on; " + ", ".join(cells)


def format_top_ops(title: str, split: StepBreakdown) -> str:
    """``title`` and one indented line per kept op: self CPU ms per step, calls per step, name, input shapes."""
    lines = [f"{title}: top {len(split.top_ops)} ops by self CPU time (ms per step, calls per step)"]
    lines += [f"  {o.self_ms:8.2f} ms {o.calls:6.1f}x  {o.name}  {o.shapes}" for o in split.top_ops]
    return "\n".join(lines)
