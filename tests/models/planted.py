"""Seeded data with a planted interaction signal, two planted correlated tasks (:func:`planted_two_tasks`), and
an exact AUC.

Notation: ``B`` batch, ``F`` categorical fields (vocabulary ``V`` each), ``r`` rank of each pair table.

Each row has ``F`` uniform ids and two standard-normal dense values. Its true logit is

    z = b + sum_f w_f[id_f] + c . x_dense + sum_{(f, g) in pairs} P_fg[id_f, id_g],

with first-order tables ``w_f`` and, for ``n_pairs`` random field pairs, a random pair table
``P_fg = scale * A_fg B_fg^T / sqrt(r)`` (``A, B`` standard normal ``(V, r)``). Every pair table has zero mean
over each of its ids' partners in expectation, so a linear model cannot see it; models with feature
interactions can. The label is ``Bernoulli(sigmoid(z))``; the Bayes AUC is the AUC of ``z`` itself.

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

import itertools
from dataclasses import dataclass
from typing import Sequence

import math

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.auc import exact_auc
from dist_ctr.data.batch import CTRBatch
from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat

__all__ = ["PlantedData", "auc", "planted_interactions", "planted_two_tasks"]


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
    """Generate planted-interaction data (see the module docstring). Deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    names = [f"f{i}" for i in range(n_fields)]
    schema = FeatureSchema(tuple(SparseFeat(n, vocab, embedding_dim) for n in names)
                           + (DenseFeat("x0"), DenseFeat("x1")))
    w = torch.randn(n_fields, vocab, generator=g) * first_order_scale  # (F, V)
    c = torch.tensor([0.3, 0.0])  # x1 is noise
    all_pairs = list(itertools.combinations(range(n_fields), 2))
    pick = torch.randperm(len(all_pairs), generator=g)[:n_pairs].tolist()
    pairs = [all_pairs[i] for i in pick]
    tables = [pair_scale * (torch.randn(vocab, rank, generator=g) @ torch.randn(vocab, rank, generator=g).t())
              / rank ** 0.5 for _ in pairs]  # each (V, V)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, vocab, (n, n_fields), generator=g)  # (n, F)
        dense = torch.randn(n, 2, generator=g)  # (n, 2)
        z = w.gather(1, ids.t()).sum(0) + dense @ c  # (n,)
        for (f, h), P in zip(pairs, tables):
            z = z + P[ids[:, f], ids[:, h]]
        y = torch.bernoulli(torch.sigmoid(z), generator=g)
        return ids, dense, z, y

    def batches(ids: torch.Tensor, dense: torch.Tensor, y: torch.Tensor) -> list[CTRBatch]:
        out = []
        for lo in range(0, ids.shape[0], batch_size):
            bi = ids[lo:lo + batch_size]  # (B, F)
            B = bi.shape[0]
            kjt = KeyedJaggedTensor.from_lengths_sync(names, bi.t().reshape(-1),  # (F * B,) key-major
                                                      torch.ones(n_fields * B, dtype=torch.int32))
            out.append(CTRBatch(dense[lo:lo + B], kjt, y[lo:lo + B].unsqueeze(1)))
        return out

    tr_ids, tr_dense, _, tr_y = draw(n_train)
    te_ids, te_dense, te_z, te_y = draw(n_test)
    return PlantedData(schema, batches(tr_ids, tr_dense, tr_y), batches(te_ids, te_dense, te_y), te_z,
                       auc(te_z, te_y))


def planted_two_tasks(schema: FeatureSchema, n_train: int = 6000, n_test: int = 2000, batch_size: int = 256,
                      seed: int = 0) -> tuple[FeatureSchema, list[CTRBatch], list[CTRBatch]]:
    """Two correlated planted tasks: click ~ Bernoulli(sigmoid(f)), conversion | click ~ Bernoulli(sigmoid(g)),
    label 2 = click * conversion; ``f`` and ``g`` share the field ``a``.

    ``schema`` has sparse ``a, b, c`` (vocabulary 20), ``tags`` (vocabulary 10, up to 3 ids a row), dense ``x0, x1``
    and two labels. Returns ``(schema, train batches, test batches)``; deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    ids = {k: rng.integers(0, 20, n) for k in ("a", "b", "c")}
    tags_len = rng.integers(0, 4, n)
    tags = rng.integers(0, 10, int(tags_len.sum()))
    x = rng.standard_normal((n, 2)).astype(np.float32)
    wa, wb, va, vc = (rng.standard_normal(20) * 1.5 for _ in range(4))
    f = wa[ids["a"]] + wb[ids["b"]] + 0.8 * x[:, 0]
    g = va[ids["a"]] + vc[ids["c"]] + 0.5
    click = rng.random(n) < 1 / (1 + np.exp(-f))
    conv = rng.random(n) < 1 / (1 + np.exp(-g))
    labels = np.stack([click, click & conv], axis=1).astype(np.float32)
    off = np.concatenate([[0], np.cumsum(tags_len)])
    batches = []
    for st in range(0, n, batch_size):
        e = min(n, st + batch_size)
        vals = [ids["a"][st:e], ids["b"][st:e], ids["c"][st:e], tags[off[st]:off[e]]]
        lens = [np.ones(e - st, np.int64)] * 3 + [tags_len[st:e]]
        kjt = KeyedJaggedTensor.from_lengths_sync(schema.sparse_names, torch.from_numpy(np.concatenate(vals)),
                                                  torch.from_numpy(np.concatenate(lens).astype(np.int32)))
        batches.append(CTRBatch(torch.from_numpy(x[st:e]), kjt, torch.from_numpy(labels[st:e])))
    k = n_train // batch_size
    return schema, batches[:k], batches[k:]
