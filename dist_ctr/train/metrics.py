"""Exact evaluation metrics over a whole (distributed) eval set.

AUC is computed exactly from ranks (Mann-Whitney U with average ranks for ties) over the union of all ranks'
predictions, which are gathered first; never an average of per-batch or per-rank AUCs.

>>> import torch
>>> round(exact_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0.0, 0.0, 1.0, 1.0])), 4)
0.75
>>> exact_auc(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0]))
0.5
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.distributed as dist

from dist_ctr.auc import exact_auc as _exact_auc


def exact_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC AUC (:func:`dist_ctr.auc.exact_auc`). Args: scores ``(N,)``, labels ``(N,)`` in {0, 1}.
    Returns NaN if one class is absent."""
    s = scores.detach().double().flatten().cpu().numpy()  # host sync
    y = labels.detach().double().flatten().cpu().numpy()  # host sync
    return _exact_auc(s, y)


def logloss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``(N,)`` against labels ``(N,)``."""
    p = probs.detach().double().clamp(eps, 1 - eps)
    y = labels.detach().double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())  # host sync


def _gather_1d(x: torch.Tensor) -> torch.Tensor:
    """All-gather a 1-D tensor of varying length from every rank (padded to the max length, then trimmed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    n = torch.tensor([x.numel()], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    m = int(max(int(s) for s in sizes))  # host sync
    padded = torch.zeros(m, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s)] for o, s in zip(out, sizes)])


class EvalAccumulator:
    """Collects predictions ``(B, T)``, labels ``(B, T)`` and row weights ``(B,)`` over an eval pass.

    ``compute()`` gathers across ranks (every rank gets the same figures) and returns per-task metrics:
    ``auc``/``logloss`` for binary tasks, ``mse``/``mae`` for regression, keyed ``<task_name>/<metric>`` when
    there are several tasks and plain ``auc``/``logloss`` for one.
    """

    def __init__(self, task_types: Sequence[str], task_names: Sequence[str] | None = None) -> None:
        self.task_types = tuple(task_types)
        self.task_names = tuple(task_names) if task_names else tuple(f"task{i}" for i in range(len(task_types)))
        self.preds: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []

    def update(self, preds: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        keep = weights > 0 if weights is not None else None
        p, y = preds.detach().float(), labels.detach().float()
        if keep is not None:
            p, y = p[keep], y[keep]
        self.preds.append(p.cpu())  # host sync
        self.labels.append(y.cpu())

    @property
    def num_rows(self) -> int:
        return sum(int(p.shape[0]) for p in self.preds)

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' predictions and labels, ``(N, T)`` each, rank order."""
        T = len(self.task_types)
        p = torch.cat(self.preds) if self.preds else torch.zeros(0, T)
        y = torch.cat(self.labels) if self.labels else torch.zeros(0, T)
        gp = torch.stack([_gather_1d(p[:, t].contiguous()) for t in range(T)], dim=1) if T else p  # (N, T)
        gy = torch.stack([_gather_1d(y[:, t].contiguous()) for t in range(T)], dim=1) if T else y  # (N, T)
        return gp, gy

    def compute(self) -> dict[str, float]:
        p, y = self.gathered()
        out: dict[str, float] = {"eval_rows": float(p.shape[0])}
        single = len(self.task_types) == 1
        for t, (kind, name) in enumerate(zip(self.task_types, self.task_names)):
            prefix = "" if single else f"{name}/"
            if p.shape[0] == 0:
                continue
            if kind == "binary":
                out[prefix + "auc"] = exact_auc(p[:, t], y[:, t])
                out[prefix + "logloss"] = logloss(p[:, t], y[:, t])
            else:
                out[prefix + "mse"] = float(((p[:, t] - y[:, t]) ** 2).mean())
                out[prefix + "mae"] = float((p[:, t] - y[:, t]).abs().mean())
        return out


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
