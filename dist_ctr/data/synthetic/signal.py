"""The planted signal's strengths and the pieces of truth a :class:`PlantedModel` holds per feature.

Notation: ``N`` rows, ``T`` tasks, ``r`` rank of each pairwise effect, ``V`` a feature's vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from dist_ctr.data.synthetic.ids import _hash_unit, _Zipf


@dataclass(frozen=True)
class PlantedSignal:
    """Strengths of the planted effects (standard deviations on the logit scale).

    Args:
        first_order_scale (float): typical std of one feature's first-order effect (each feature gets a random
            multiple of it in ``[0.25, 1.75]``).
        n_pairs (int): number of feature pairs with a pairwise effect.
        pair_scale (float): std of each pairwise effect.
        pair_rank (int): ``r``, rank of each pairwise effect.
        dense_scale (float): std of each dense column's effect.
        sequence_scale (float): logit change per unit of history/target match share.
        task_correlation (float): weight of the shared logit in tasks ``t > 0``.
        zipf_range (tuple[float, float]): range of the per-feature Zipf exponents.
        fixed_bags (bool): every multi-hot bag (a ``VarLenSparseFeat`` that is not a linked history) holds exactly
            ``maxlen`` ids, MLPerf's multi-hot layout; otherwise a bag's length is uniform in ``0..maxlen``.
        history_categories (int): ``C``, interest categories of a linked history (item ``i`` is in category
            ``i % C``); 0 picks ``min(32, V // 4)``.
        history_min_length (int): shortest history; lengths are uniform in ``history_min_length..maxlen``.
        history_zipf (float): Zipf exponent of the items drawn within a category (0: uniform, so that with
            uniform ids an item's id says nothing about whether it came from the row's interest).
        chained_tasks (bool): binary task ``t > 0`` is a step after task ``t - 1`` (click, then conversion): its
            label is task ``t - 1``'s label and a ``Bernoulli(sigmoid(z_t))`` draw, its true probability the
            product of ``sigmoid(z_s)`` for ``s <= t`` (ESMM's CTCVR); ``positive_rate[t]`` is then the mean of
            ``sigmoid(z_t)`` over all rows (correlated with the step before, the rate given that step is higher).

    A zero ``zipf_range`` ``(0.0, 0.0)`` draws uniform ids (small test vocabularies).
    """

    first_order_scale: float = 0.22
    n_pairs: int = 6
    pair_scale: float = 0.7
    pair_rank: int = 4
    dense_scale: float = 0.15
    sequence_scale: float = 2.0
    task_correlation: float = 0.8
    zipf_range: tuple[float, float] = (1.05, 1.3)
    fixed_bags: bool = False
    history_categories: int = 0
    history_min_length: int = 0
    history_zipf: float = 1.1
    chained_tasks: bool = False

    def __post_init__(self) -> None:
        if self.n_pairs < 0 or self.pair_rank < 1:
            raise ValueError(f"PlantedSignal: n_pairs must be >= 0 and pair_rank >= 1, "
                             f"got {self.n_pairs}, {self.pair_rank}")
        if self.history_categories < 0 or self.history_min_length < 0:
            raise ValueError(f"PlantedSignal: history_categories and history_min_length must be >= 0, "
                             f"got {self.history_categories}, {self.history_min_length}")
        object.__setattr__(self, "zipf_range", tuple(float(x) for x in self.zipf_range))


@dataclass
class _Cat:
    """One categorical id space: sampler, permutation, first-order weights."""

    name: str
    vocab: int
    zipf: _Zipf
    mult: int
    offset: int
    w_scale: float
    w_salt: np.uint64
    perm: Optional[np.ndarray] = None
    w_table: Optional[np.ndarray] = None
    w_by_rank: Optional[np.ndarray] = None  # w_table[perm]: the weight of each rank's id, one gather per draw

    def ids_from_ranks(self, ranks: np.ndarray) -> np.ndarray:
        if self.perm is not None:
            return np.take(self.perm, ranks)
        return (ranks.astype(np.int64) * np.int64(self.mult) + np.int64(self.offset)) % np.int64(self.vocab)

    def draw(self, bits: np.ndarray) -> np.ndarray:
        return self.ids_from_ranks(self.zipf.sample(bits))

    def draw_weighted(self, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, weight(ids))`` of fresh draws, both ``(N,)``; tabulated features gather both by rank."""
        ranks = self.zipf.sample(bits)
        if self.w_by_rank is None:
            ids = self.ids_from_ranks(ranks)
            return ids, self.weight(ids)
        ranks = ranks.astype(np.intp)  # converted once for both gathers
        return self.perm.take(ranks), self.w_by_rank.take(ranks)  # type: ignore[union-attr]

    def weight(self, ids: np.ndarray) -> np.ndarray:
        if self.w_table is not None:
            return np.take(self.w_table, ids)
        return _hash_unit(ids, self.w_salt) * np.float32(self.w_scale * math.sqrt(3.0))

    def id_pmf(self) -> np.ndarray:
        """``(V,)`` probability of each id (tabulated vocabularies only)."""
        p = np.zeros(self.vocab)
        p[self.perm] = self.zipf.pmf()  # type: ignore[index]
        return p


@dataclass
class _PairSide:
    cat: str
    salts: list[np.uint64]
    mean: np.ndarray  # (r,)
    table: Optional[np.ndarray] = None  # (V, r), centred

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """``(N, r)`` centred pair vectors."""
        if self.table is not None:
            return np.take(self.table, ids, axis=0)
        out = np.stack([_hash_unit(ids, s) for s in self.salts], axis=1)  # (N, r)
        out -= self.mean
        return out


@dataclass
class _Pair:
    left: _PairSide
    right: _PairSide
    scale: float


@dataclass
class _Dense:
    name: str
    zipf: _Zipf
    null_rate: float
    coef: float
    null_effect: float
    mean: float
    std: float
    effect: Optional[np.ndarray] = None  # (V,) float32: coef * (log1p(value) - mean) / std

    def __post_init__(self) -> None:
        lv = np.log1p(np.arange(self.zipf.vocab, dtype=np.float64))
        self.effect = (self.coef * (lv - self.mean) / self.std).astype(np.float32)


@dataclass
class _History:
    """A behaviour sequence (``hist``) linked to its target (``target``) through a shared table."""

    hist: str
    target: str
    maxlen: int
    n_cat: int
    inner: _Zipf  # ranks within a category
    beta: float
    hist_vocab: int = 1
    min_len: int = 0  # shortest history
    match_mean: Optional[float] = None  # set from the calibration sample


@dataclass
class _Chunk:
    """Raw draws of ``n`` rows: column arrays (numpy / Arrow) and logits before the bias."""

    n: int
    columns: dict[str, Any]
    z: np.ndarray  # (T, N) float32, without bias
    z_first: np.ndarray  # (N,) float32, additive part (no pairs, no history match), without bias
