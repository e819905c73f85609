"""The evaluation gate: publish a candidate only when every configured rule holds.

Value rules check the candidate alone (``min_auc``, ``calibration_range``); change rules compare it with the
published model scored by the same code on the same partition (``max_auc_drop``, ``max_logloss_rise``) and are
skipped -- said so, not failed -- when nothing is published yet (TFX's Evaluator does the same on a first run).
Rules are checked per task (``tasks``; default: every binary task of the candidate). A metric that is undefined
(an AUC on a one-class partition) fails its rule.

>>> cand = {"auc": 0.71, "logloss": 0.52, "calibration": 1.02}
>>> d = evaluate_gate(cand, {"auc": 0.72, "logloss": 0.50, "calibration": 1.0},
...                   GateConfig(min_auc=0.6, max_auc_drop=0.005, calibration_range=(0.8, 1.25)))
>>> d.passed, [r.rule for r in d.failed()]
(False, ['max_auc_drop'])
>>> print(d.failed()[0])
max_auc_drop: FAILED: auc published 0.7200 -> candidate 0.7100: drop +0.0100, allowed 0.0050
>>> evaluate_gate(cand, None, GateConfig(min_auc=0.6, max_auc_drop=0.005)).passed  # first model: value rules only
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["GateConfig", "GateDecision", "RuleResult", "evaluate_gate"]


@dataclass(frozen=True)
class GateConfig:
    """Thresholds; None leaves a rule out."""

    min_auc: Optional[float] = None
    max_auc_drop: Optional[float] = None
    max_logloss_rise: Optional[float] = None
    calibration_range: Optional[tuple[float, float]] = None
    tasks: Optional[list[str]] = None


@dataclass(frozen=True)
class RuleResult:
    """One rule on one task: ``passed``; ``skipped`` when it could not apply (said in ``detail``)."""

    rule: str
    task: str
    passed: bool
    detail: str
    skipped: bool = False

    def __str__(self) -> str:
        where = f"[{self.task}]" if self.task else ""
        state = "skipped" if self.skipped else ("ok" if self.passed else "FAILED")
        return f"{self.rule}{where}: {state}: {self.detail}"


@dataclass
class GateDecision:
    """All rule results and both metric sets."""

    passed: bool
    rules: list[RuleResult]
    candidate: dict[str, Any]
    published: Optional[dict[str, Any]] = None
    notes: list[str] = field(default_factory=list)

    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    def lines(self) -> list[str]:
        """What the run prints: the decision, then one line per rule."""
        head = "PASSED: the candidate may be published" if self.passed else \
            f"REJECTED: {', '.join(sorted({r.rule for r in self.failed()}))} failed"
        return [head, *self.notes, *(str(r) for r in self.rules)]


def _tasks(candidate: dict[str, Any], wanted: Optional[list[str]]) -> list[str]:
    """Task prefixes with an AUC ('' for a single-task model's unprefixed keys)."""
    prefixed = sorted({k.rsplit("/", 1)[0] for k in candidate if k.endswith("/auc")})
    if wanted:
        missing = [t for t in wanted if t not in prefixed]
        if missing:
            from dist_ctr.errors import PipelineError

            raise PipelineError(f"retrain.gate.tasks: {missing} not among the model's binary tasks {prefixed}")
        return list(wanted)
    return [""] if "auc" in candidate and len(prefixed) <= 1 else prefixed


def _get(m: dict[str, Any], task: str, key: str) -> float:
    v = m.get(f"{task}/{key}" if task else key)
    return float(v) if v is not None else math.nan


def evaluate_gate(candidate: dict[str, Any], published: Optional[dict[str, Any]], cfg: GateConfig) -> GateDecision:
    """Check every configured rule (see the module docstring)."""
    rules: list[RuleResult] = []
    for t in _tasks(candidate, cfg.tasks):
        auc, ll, cal = _get(candidate, t, "auc"), _get(candidate, t, "logloss"), _get(candidate, t, "calibration")
        if cfg.min_auc is not None:
            ok = not math.isnan(auc) and auc >= cfg.min_auc
            rules.append(RuleResult("min_auc", t, ok, f"auc {auc:.4f}, required >= {cfg.min_auc:.4f}"))
        if cfg.calibration_range is not None:
            lo, hi = cfg.calibration_range
            ok = not math.isnan(cal) and lo <= cal <= hi
            rules.append(RuleResult("calibration_range", t, ok,
                                    f"mean prediction / label rate {cal:.4f}, allowed [{lo:g}, {hi:g}]"))
        for rule, limit, key in (("max_auc_drop", cfg.max_auc_drop, "auc"),
                                 ("max_logloss_rise", cfg.max_logloss_rise, "logloss")):
            if limit is None:
                continue
            if published is None:
                rules.append(RuleResult(rule, t, True, "no published model to compare with", skipped=True))
                continue
            new, old = _get(candidate, t, key), _get(published, t, key)
            change = (old - new) if key == "auc" else (new - old)
            ok = not (math.isnan(new) or math.isnan(old)) and change <= limit
            what = "drop" if key == "auc" else "rise"
            rules.append(RuleResult(rule, t, ok, f"{key} published {old:.4f} -> candidate {new:.4f}: {what} "
                                                 f"{change:+.4f}, allowed {limit:.4f}"))
    notes = [] if rules else ["no rule configured: every candidate passes"]
    return GateDecision(all(r.passed for r in rules), rules, candidate, published, notes)
