"""Every one of the first five models learns planted pairwise interactions that logistic regression cannot.

Plain torch (Adam on all parameters of the materialised model, BCE-with-logits plus the model's L2 terms), the
same data, epochs and optimiser for LR (``LinearArch`` only) and each model; the held-out AUC must beat LR's by
``MARGIN`` and exceed 0.6. AUC is exact (rank-based, ties counted one half).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from dist_ctr.models import CTRModel, build_model
from dist_ctr.sparse import materialize
from tests.models.planted import PlantedData, auc, planted_interactions

MARGIN = 0.03
EPOCHS = 6
LR = 3e-3
SMALL = {"dnn_hidden_units": (64, 32)}
CONFIGS = {
    "WDL": SMALL,
    "DeepFM": SMALL,
    "DCN": {**SMALL, "cross_num": 2},
    "DCNMix": {**SMALL, "cross_num": 2, "low_rank": 8},
    "xDeepFM": {**SMALL, "cin_layer_size": (16, 16)},
}


@functools.lru_cache(maxsize=1)
def _data() -> PlantedData:  # Bayes AUC 0.90, LR 0.66; with 8 fields and 4 rank-2 pairs DCN-Mix stays near LR here
    return planted_interactions(n_train=16_000, n_test=4_000, batch_size=128, n_fields=6, vocab=20, n_pairs=3,
                                rank=1, pair_scale=1.5, seed=0)


def _train_and_auc(name: str, config: object, data: PlantedData, lr: float = LR) -> float:
    torch.manual_seed(0)
    model: CTRModel = materialize(build_model(name, data.schema, config), seed=0)  # type: ignore[assignment]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(EPOCHS):
        for b in data.train:
            logits = model(b.dense, b.sparse)
            loss = F.binary_cross_entropy_with_logits(logits, b.labels)
            extra = model.pop_losses()
            if extra:
                loss = loss + sum(extra.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(b.dense, b.sparse)[:, 0] for b in data.test])
    labels = torch.cat([b.labels[:, 0] for b in data.test])
    return auc(scores, labels)


@functools.lru_cache(maxsize=1)
def _lr_auc() -> float:
    return _train_and_auc("LogisticRegression", None, _data())


def test_auc_helper_matches_sklearn_with_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (500,), generator=g).float()  # many ties
    labels = torch.randint(0, 2, (500,), generator=g).float()
    assert auc(scores, labels) == pytest.approx(sklearn_metrics.roc_auc_score(labels.numpy(), scores.numpy()),
                                                abs=1e-12)
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([0.1, 0.2], [1, 1])


def test_planted_signal_is_invisible_to_lr_but_learnable():
    d = _data()
    lr = _lr_auc()
    assert d.bayes_auc > lr + 0.08, f"Bayes AUC {d.bayes_auc:.3f} vs LR {lr:.3f}: the planted pairs are too weak"
    assert lr > 0.55, f"LR should still learn the first-order effects, got {lr:.3f}"


@pytest.mark.slow  # 2-5 s per model on one core (about 17 s for all five plus LR)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_model_beats_logistic_regression_on_planted_interactions(name):
    d = _data()
    got = _train_and_auc(name, CONFIGS[name], d)
    lr = _lr_auc()
    assert got > 0.6, f"{name}: held-out AUC {got:.3f}"
    assert got > lr + MARGIN, f"{name}: held-out AUC {got:.3f} vs LR {lr:.3f} (Bayes {d.bayes_auc:.3f})"
