"""Seeded planted-signal batches for the model tests, drawn from the library's generator
(:class:`dist_ctr.data.synthetic.PlantedModel`, read by :func:`dist_ctr.data.synthetic.draw_arrays`), and an exact
AUC.

Notation: ``B`` batch, ``F`` categorical fields (vocabulary ``V`` each), ``r`` rank of each pairwise effect.

:func:`planted_interactions`: ``F`` fields of uniform ids and two dense counts (read as ``log(1 + x)``). The true
logit is the generator's

    z = b + sum_f w_f(id_f) + sum_{(f, g) in pairs} s * 3 / sqrt(r) * <u_f(id_f), v_g(id_g)> + dense effects,

with ``n_pairs`` random field pairs of rank ``r`` and standard deviation ``s = pair_scale``; the pair vectors are
centred under the id distribution, so a pair averages to zero over either partner: a linear model cannot see it,
models with feature interactions can. ``b`` sets a 50% positive rate. The label is ``Bernoulli(sigmoid(z))``; the
Bayes AUC is the AUC of ``z`` itself.

:func:`planted_two_tasks`: the generator's chained tasks (click, then click-and-convert, ESMM's CTCVR).

>>> d = planted_interactions(n_train=512, n_test=256, batch_size=128, seed=0)
>>> len(d.train), d.train[0].sparse.keys()[:2], tuple(d.train[0].dense.shape)
(4, ['f0', 'f1'], (128, 2))
>>> 0.5 < d.bayes_auc < 1.0
True
>>> auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
>>> auc([1.0, 1.0, 0.0], [1, 0, 0])  # ties count one half
0.75
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from dist_ctr.auc import exact_auc
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.synthetic import PlantedModel, PlantedSignal, draw_arrays
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat

__all__ = ["PlantedData", "auc", "planted_interactions", "planted_two_tasks"]

UNIFORM = (0.0, 0.0)  # zipf_range of uniform ids: every id of a small test vocabulary is seen


def auc(scores: Sequence[float] | np.ndarray | torch.Tensor, labels: Sequence[float] | np.ndarray | torch.Tensor) -> float:
    """Exact ROC AUC (:func:`dist_ctr.auc.exact_auc`); raises when only one class is present."""
    s = scores.detach().double().cpu().numpy() if isinstance(scores, torch.Tensor) else scores  # host sync
    y = labels.detach().double().cpu().numpy() if isinstance(labels, torch.Tensor) else labels  # host sync
    value = exact_auc(s, y)
    if math.isnan(value):
        raise ValueError("AUC needs both positive and negative labels")
    return value


@dataclass
class PlantedData:
    """Train / held-out batches, the schema, the true logits of the held-out rows and their Bayes AUC."""

    schema: FeatureSchema
    train: list[CTRBatch]
    test: list[CTRBatch]
    test_logits: torch.Tensor
    bayes_auc: float


def planted_interactions(
    n_train: int = 20_000,
    n_test: int = 5_000,
    batch_size: int = 256,
    n_fields: int = 8,
    vocab: int = 50,
    n_pairs: int = 10,
    rank: int = 2,
    pair_scale: float = 1.0,
    first_order_scale: float = 0.3,
    embedding_dim: int = 8,
    seed: int = 0,
) -> PlantedData:
    """Planted-interaction data (see the module docstring); model and rows deterministic in ``seed``."""
    schema = FeatureSchema(tuple(SparseFeat(f"f{i}", vocab, embedding_dim) for i in range(n_fields))
                           + (DenseFeat("x0"), DenseFeat("x1")))
    signal = PlantedSignal(first_order_scale=first_order_scale, n_pairs=n_pairs, pair_scale=pair_scale,
                           pair_rank=rank, zipf_range=UNIFORM)
    d = draw_arrays(PlantedModel(schema, seed, signal, positive_rate=0.5), n_train + n_test, seed=seed)
    train, test = d.rows(0, n_train), d.rows(n_train, n_train + n_test)
    return PlantedData(schema, train.batches(batch_size), test.batches(batch_size),
                       torch.from_numpy(test.logits[:, 0]), auc(test.logits[:, 0], test.labels[:, 0]))


def planted_two_tasks(schema: FeatureSchema, n_train: int = 6000, n_test: int = 2000, batch_size: int = 256,
                      seed: int = 0) -> tuple[FeatureSchema, list[CTRBatch], list[CTRBatch]]:
    """Two correlated chained tasks: a click, then a conversion given the click; label 2 = click and convert.

    Strong first-order effects (``first_order_scale`` 0.7, no pairs) on every feature, uniform ids; task 2's own
    logit is ``0.8 z_click`` plus its own effects on three fields. ``schema`` has two binary labels (e.g. sparse
    ``a, b, c``, multi-hot ``tags``, dense ``x0, x1``). Returns ``(schema, train batches, test batches)``;
    deterministic in ``seed``.
    """
    signal = PlantedSignal(first_order_scale=0.7, n_pairs=0, zipf_range=UNIFORM, chained_tasks=True)
    d = draw_arrays(PlantedModel(schema, seed, signal, positive_rate=(0.5, 0.5)), n_train + n_test, seed=seed)
    return schema, d.rows(0, n_train).batches(batch_size), d.rows(n_train, n_train + n_test).batches(batch_size)
