"""Distributed evaluation is exact: AUC / logloss over the union of every rank's rows, never an average.

2 spawned ranks evaluate disjoint eval rows (uneven: the last rank has a padded row that must not count); the
result must equal the exact metrics on the gathered predictions, a single-process evaluation of the union, and
sklearn's ``roc_auc_score`` as an independent check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dist_ctr.distributed.env import DistEnv
from dist_ctr.launch.spawn import spawn
from dist_ctr.train.metrics import exact_auc, logloss
from tests.distributed.ray_jobs import eval_rows, evaluate_job

MODEL = "LogisticRegression"  # field order inside the model does not matter for it (see tests/train/test_export.py)


@pytest.mark.slow
def test_two_rank_evaluate_is_exact_over_the_union():
    from sklearn.metrics import log_loss, roc_auc_score

    two = spawn(evaluate_job, 2, MODEL, 3, 40)
    one = spawn(evaluate_job, 1, MODEL, 3, 40)[0]
    m0, m1 = two[0]["metrics"], two[1]["metrics"]
    assert m0 == m1  # every rank gets the same figures

    ids = np.concatenate([r["row_ids"] for r in two])
    keep = ids >= 0
    assert keep.sum() == 3 * 40 - 1 and int(m0["eval_rows"]) == keep.sum()  # the padded row is not counted
    assert len(set(ids[keep].tolist())) == keep.sum()  # disjoint rows
    p = torch.from_numpy(np.concatenate([r["preds"] for r in two])[keep, 0])
    y = torch.from_numpy(np.concatenate([r["labels"] for r in two])[keep, 0])
    assert m0["auc"] == pytest.approx(exact_auc(p, y), abs=1e-12)
    assert m0["logloss"] == pytest.approx(logloss(p, y), abs=1e-12)
    assert m0["auc"] == pytest.approx(roc_auc_score(y.numpy(), p.numpy()), abs=1e-9)
    assert m0["logloss"] == pytest.approx(log_loss(y.numpy(), p.double().numpy()), abs=1e-6)

    # one process over the same rows (it pads the same row, 119) gives the same predictions and figures
    ids1 = one["row_ids"]
    assert np.array_equal(np.sort(ids1), np.sort(ids))
    by_id_two = np.concatenate([r["preds"] for r in two])[np.argsort(ids)]
    assert np.allclose(one["preds"][np.argsort(ids1)], by_id_two, atol=1e-6)
    assert one["metrics"]["auc"] == pytest.approx(m0["auc"], abs=1e-6)
    assert one["metrics"]["logloss"] == pytest.approx(m0["logloss"], abs=1e-6)
    assert one["metrics"]["eval_rows"] == m0["eval_rows"]

    # not an average of per-rank AUCs (which differs here)
    per_rank = []
    for r in two:
        k = r["row_ids"] >= 0
        per_rank.append(exact_auc(torch.from_numpy(r["preds"][k, 0]), torch.from_numpy(r["labels"][k, 0])))
    assert abs(np.mean(per_rank) - m0["auc"]) > 1e-4


def test_eval_rows_are_usable():
    rows = eval_rows()
    assert [b.batch_size for b in rows] == [40, 40, 40]
    assert torch.equal(torch.cat([b.row_ids for b in rows]), torch.arange(120))
    ys = torch.cat([b.labels for b in rows])
    assert 0 < float(ys.mean()) < 1
    assert DistEnv().world_size == 1
