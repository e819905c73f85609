"""Exact ROC AUC from ranks: the one implementation the library, tests and benchmarks use.

>>> exact_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
>>> exact_auc([0.5, 0.5], [0, 1])
0.5
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["exact_auc"]


def exact_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Exact ROC AUC from ranks (Mann-Whitney U); tied scores get their average rank.

    Args:
        scores: ``(N,)`` any real scores (logits or probabilities).
        labels: ``(N,)`` 0/1 labels.

    Returns:
        float: AUC in ``[0, 1]``; ``nan`` when only one class is present.
    """
    s = np.asarray(scores).ravel()
    if s.dtype != np.float32:  # float32 scores are ranked as they are (same order and ties, a faster sort)
        s = s.astype(np.float64)
    y = np.asarray(labels).ravel() > 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s)
    ss = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ss)) + 1]
    ends = np.r_[starts[1:], s.size]
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # average 1-based rank per tie run
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
