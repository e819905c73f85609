"""Exact AUC / logloss against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from dist_ctr.train.metrics import EvalAccumulator, exact_auc, logloss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, 5000)
    s = np.round(g.random(5000) + 0.3 * y, 2)  # many ties
    assert exact_auc(torch.tensor(s), torch.tensor(y)) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_brute_force_pairs():
    g = np.random.default_rng(5)
    y = g.integers(0, 2, 300)
    s = g.integers(0, 10, 300).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert exact_auc(torch.tensor(s), torch.tensor(y)) == pytest.approx(brute, abs=1e-12)


def test_auc_single_class_is_nan():
    assert math.isnan(exact_auc(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.0])))


def test_logloss_matches_sklearn():
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 1000)
    p = g.random(1000) * 0.98 + 0.01
    assert logloss(torch.tensor(p), torch.tensor(y)) == pytest.approx(log_loss(y, p), rel=1e-9)


def test_accumulator_multitask_and_pad_rows():
    acc = EvalAccumulator(["binary", "regression"], ["click", "dwell"])
    preds = torch.tensor([[0.9, 1.0], [0.2, 2.0], [0.7, 5.0], [0.5, 100.0]])
    labels = torch.tensor([[1.0, 1.5], [0.0, 2.0], [0.0, 4.0], [1.0, 0.0]])
    acc.update(preds, labels, torch.tensor([1.0, 1.0, 1.0, 0.0]))  # last row is padding
    m = acc.compute()
    assert m["eval_rows"] == 3
    assert m["click/auc"] == pytest.approx(1.0)
    assert m["dwell/mse"] == pytest.approx((0.25 + 0 + 1) / 3)
