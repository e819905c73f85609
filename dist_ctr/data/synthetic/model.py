"""The planted model: the generator's truth (id laws, weights, pairs, dense effects, task biases) and its draws.

Notation: ``N`` rows, ``T`` tasks (label columns), ``r`` rank of each pairwise effect, ``V`` a feature's vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from dist_ctr.data.synthetic.ids import TABLE_MAX, _coprime_mult, _hash_unit, _hex8, _salt, _sigmoid, _u32, _unit, _Zipf
from dist_ctr.data.synthetic.signal import _Cat, _Chunk, _Dense, _History, _Pair, _PairSide, PlantedSignal
from dist_ctr.schema import DenseFeat, FeatureSchema, SchemaError, SparseFeat, VarLenSparseFeat
from dist_ctr.schema.hashing import splitmix64

ROW_ID = "row_id"


class PlantedModel:
    """The generator's truth for one schema: id laws, weights, pairs, dense effects, task biases.

    Args:
        schema (FeatureSchema): features to draw and labels to plant.
        model_seed (int): seeds every weight and law (not the rows).
        signal (PlantedSignal): effect strengths.
        positive_rate (float | Sequence[float]): target positive rate per binary task.
    """

    def __init__(self, schema: FeatureSchema, model_seed: int = 0, signal: PlantedSignal | None = None,
                 positive_rate: float | Sequence[float] = 0.25) -> None:
        self.schema = schema
        self.model_seed = int(model_seed)
        self.signal = signal or PlantedSignal()
        sig = self.signal
        if not schema.labels:
            raise SchemaError("synthetic data needs at least one label in the schema")
        for f in schema.dense_features:
            if f.dimension != 1:
                raise SchemaError(f"feature {f.name!r}: the generator writes dense features of dimension 1 only, "
                                  f"got dimension {f.dimension}")
        if np.isscalar(positive_rate):
            rates = [positive_rate] * len(schema.labels)
        else:
            rates = list(positive_rate)  # type: ignore[arg-type]
        if len(rates) != len(schema.labels) or not all(0.0 < float(r) < 1.0 for r in rates):
            raise ValueError(f"positive_rate must be one rate in (0, 1) or one per label {schema.label_names}, "
                             f"got {positive_rate!r}")
        self.positive_rate = [float(r) for r in rates]
        if sig.chained_tasks and any(lab.task != "binary" for lab in schema.labels):
            raise ValueError(f"chained_tasks needs binary labels only, got {[lab.task for lab in schema.labels]}")
        rng = np.random.default_rng([self.model_seed, 0x5EED])

        # Linked histories: a VarLenSparseFeat reading the table of a single-valued feature.
        single_by_table = {f.embedding_name: f for f in schema.single_sparse}
        self.histories: list[_History] = []
        linked_targets: set[str] = set()
        for v in schema.varlen_features:
            tgt = single_by_table.get(v.embedding_name)
            if tgt is None or tgt.name in linked_targets:
                continue
            vocab = min(v.vocabulary_size, tgt.vocabulary_size)
            n_cat = sig.history_categories or max(1, min(32, vocab // 4))
            if n_cat > vocab or sig.history_min_length > v.maxlen:
                raise ValueError(f"history {v.name!r}: history_categories ({n_cat}) must be <= its vocabulary "
                                 f"({vocab}) and history_min_length ({sig.history_min_length}) <= maxlen ({v.maxlen})")
            inner = _Zipf(max(1, vocab // n_cat), sig.history_zipf)
            self.histories.append(_History(v.name, tgt.name, v.maxlen, n_cat, inner, beta=sig.sequence_scale,
                                           hist_vocab=v.vocabulary_size, min_len=sig.history_min_length))
            linked_targets.add(tgt.name)
        self._hist_names = {h.hist for h in self.histories}

        # Categorical id spaces: every single-valued and (unlinked) var-len feature.
        self.cats: dict[str, _Cat] = {}
        lo_s, hi_s = sig.zipf_range
        for f in schema.sparse_features:
            if f.name in self._hist_names:
                continue
            vocab = f.vocabulary_size
            cat = _Cat(name=f.name, vocab=vocab, zipf=_Zipf(vocab, float(rng.uniform(lo_s, hi_s))),
                       mult=_coprime_mult(rng, vocab), offset=int(rng.integers(0, vocab)),
                       w_scale=sig.first_order_scale * float(rng.uniform(0.25, 1.75)),
                       w_salt=_salt(self.model_seed, "w", f.name))
            if vocab <= TABLE_MAX:
                cat.perm = ((np.arange(vocab, dtype=np.int64) * cat.mult + cat.offset) % vocab).astype(np.int32)
                cat.w_table = _hash_unit(np.arange(vocab), cat.w_salt) * np.float32(cat.w_scale * math.sqrt(3.0))
                cat.w_by_rank = cat.w_table[cat.perm]
            self.cats[f.name] = cat

        # Pairwise effects among single-valued features (history targets excluded).
        pool = [f.name for f in schema.single_sparse if f.name not in linked_targets]
        all_pairs = [(a, b) for i, a in enumerate(pool) for b in pool[i + 1:]]
        chosen = rng.permutation(len(all_pairs))[: sig.n_pairs] if all_pairs else []
        self.pairs: list[_Pair] = []
        for q, j in enumerate(chosen):
            a, b = all_pairs[int(j)]
            self.pairs.append(_Pair(self._pair_side(a, f"u{q}"), self._pair_side(b, f"v{q}"), sig.pair_scale))

        # Dense columns: heavy-tailed counts.
        self.dense: list[_Dense] = []
        for f in schema.dense_features:
            z = _Zipf(int(10 ** rng.uniform(2.5, 5.0)), float(rng.uniform(1.0, 1.6)))
            pmf = z.pmf()
            lv = np.log1p(np.arange(z.vocab, dtype=np.float64))
            m = float(pmf @ lv)
            sd = float(math.sqrt(max(pmf @ (lv - m) ** 2, 1e-12)))
            self.dense.append(_Dense(f.name, z, null_rate=float(rng.choice([0.0, 0.0, 0.05, 0.2, 0.45])),
                                     coef=float(rng.normal(0.0, sig.dense_scale)),
                                     null_effect=float(rng.normal(0.0, sig.dense_scale)), mean=m, std=sd))

        self._dense_by_name = {d.name: d for d in self.dense}

        # Task-specific first-order effects for tasks t > 0 (three features each).
        names = [f.name for f in schema.single_sparse]
        self.task_feats: list[list[str]] = [[]]
        for t in range(1, len(schema.labels)):
            k = min(3, len(names))
            self.task_feats.append([names[int(i)] for i in rng.choice(len(names), size=k, replace=False)] if k else [])

        # Calibration: history-match mean, then per-task biases, on a fixed sample.
        cal = self._draw(np.random.default_rng([self.model_seed, 0xCA1]), 65_536, arrow=False)
        self.bias = np.zeros(len(schema.labels))
        for t, lab in enumerate(schema.labels):
            zt = cal.z[t].astype(np.float64)
            self.bias[t] = self._calibrate(zt, self.positive_rate[t]) if lab.task == "binary" else -float(zt.mean())

    def _pair_side(self, name: str, tag: str) -> _PairSide:
        """Centred rank-``r`` vectors of one side of a pair: zero mean under the feature's id distribution."""
        cat = self.cats[name]
        r = self.signal.pair_rank
        salts = [_salt(self.model_seed, "pair", tag, name, k) for k in range(r)]
        if cat.perm is not None:
            ids = np.arange(cat.vocab)
            table = np.stack([_hash_unit(ids, s) for s in salts], axis=1)  # (V, r)
            mean = (cat.id_pmf() @ table.astype(np.float64)).astype(np.float32)
            return _PairSide(name, salts, mean, table - mean)
        ids = cat.draw(_u32(np.random.default_rng([self.model_seed, 0xAB]), 1 << 18))
        mean = np.stack([_hash_unit(ids, s) for s in salts], axis=1).astype(np.float64).mean(axis=0).astype(np.float32)
        return _PairSide(name, salts, mean, None)

    @staticmethod
    def _calibrate(z: np.ndarray, rate: float) -> float:
        lo, hi = -40.0, 40.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if _sigmoid(z + mid).mean() < rate:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    # ---- drawing ------------------------------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, n: int, arrow: bool = True, raw_hex: bool = False) -> _Chunk:
        """Draw ``n`` rows of features and their logits (bias not added)."""
        schema = self.schema
        cols: dict[str, Any] = {}
        ids_of: dict[str, np.ndarray] = {}
        z_first = np.zeros(n, dtype=np.float32)
        z_inter = np.zeros(n, dtype=np.float32)

        hist_by_name = {h.hist: h for h in self.histories}
        drawn_hist: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for h in self.histories:
            tgt_ids, lengths, hist_ids, match = self._draw_history(rng, h, n)
            ids_of[h.target] = tgt_ids
            drawn_hist[h.hist] = (lengths, hist_ids)
            z_inter += np.float32(h.beta) * (match - np.float32(h.match_mean or 0.0))

        for f in schema.features:
            if isinstance(f, DenseFeat):
                d = self._dense_by_name[f.name]
                vals = d.zipf.sample(_u32(rng, n))  # (N,) int32 counts
                null = _u32(rng, n) < np.uint32(int(d.null_rate * 2**32)) if d.null_rate > 0 else None
                eff = np.take(d.effect, vals)  # type: ignore[arg-type]
                if null is not None:
                    eff[null] = np.float32(d.null_effect)
                z_first += eff
                cols[f.name] = pa.array(vals, mask=null) if arrow else vals
            elif isinstance(f, SparseFeat):
                ids = ids_of.get(f.name)
                if ids is None:
                    ids, w = self.cats[f.name].draw_weighted(_u32(rng, n))
                    ids_of[f.name] = ids
                else:  # a history's target, drawn with its history
                    w = self.cats[f.name].weight(ids)
                z_first += w
                cols[f.name] = self._arrow_ids(f, ids, raw_hex) if arrow else ids
            else:  # VarLenSparseFeat
                if f.name in hist_by_name:
                    lengths, vals = drawn_hist[f.name]
                else:
                    if self.signal.fixed_bags:
                        lengths = np.full(n, f.maxlen, dtype=np.int32)
                    else:
                        lengths = (_u32(rng, n) % np.uint32(f.maxlen + 1)).astype(np.int32)
                    vals = self.cats[f.name].draw(_u32(rng, int(lengths.sum())))
                    rows = np.repeat(np.arange(n), lengths)
                    bag = np.bincount(rows, weights=self.cats[f.name].weight(vals), minlength=n)
                    z_first += (bag / np.maximum(lengths, 1)).astype(np.float32)
                if arrow:
                    offsets = np.zeros(n + 1, dtype=np.int32)
                    np.cumsum(lengths, out=offsets[1:])
                    cols[f.name] = pa.ListArray.from_arrays(pa.array(offsets), self._arrow_ids(f, vals, raw_hex))
                else:
                    cols[f.name] = (lengths, vals)

        for p in self.pairs:
            u = p.left.vectors(ids_of[p.left.cat])  # (N, r)
            v = p.right.vectors(ids_of[p.right.cat])  # (N, r)
            z_inter += np.float32(p.scale * 3.0 / math.sqrt(u.shape[1])) * np.einsum("nr,nr->n", u, v)

        z_shared = z_first + z_inter
        z = np.empty((len(schema.labels), n), dtype=np.float32)
        z[0] = z_shared
        lam = np.float32(self.signal.task_correlation)
        for t in range(1, len(schema.labels)):
            own = np.zeros(n, dtype=np.float32)
            for name in self.task_feats[t]:
                own += _hash_unit(ids_of[name], _salt(self.model_seed, "task", t, name)) * np.float32(
                    self.signal.first_order_scale * 2.0)
            z[t] = lam * z_shared + own
        return _Chunk(n, cols, z, z_first)

    def _draw_history(self, rng: np.random.Generator, h: _History, n: int):
        """Target ids ``(N,)``, history lengths ``(N,)``, history ids ``(sum lengths,)``, match share ``(N,)``."""
        general = self.cats[h.target]
        interest = (_u32(rng, n) % np.uint32(h.n_cat)).astype(np.int64)
        # Target: from the interest category half of the time.
        from_int = _u32(rng, n) < np.uint32(2**31)
        tgt = general.draw(_u32(rng, n))
        inner = h.inner.sample(_u32(rng, n))
        tgt = np.where(from_int, interest + h.n_cat * inner, tgt)
        # History: lengths min_len..maxlen; 70% of the items from the interest category.
        lengths = (_u32(rng, n) % np.uint32(h.maxlen + 1 - h.min_len)).astype(np.int32) + np.int32(h.min_len)
        total = int(lengths.sum())
        rows = np.repeat(np.arange(n), lengths)
        in_cat = _u32(rng, total) < np.uint32(int(0.7 * 2**32))
        hist = general.draw(_u32(rng, total)) % h.hist_vocab
        inner_h = h.inner.sample(_u32(rng, total))
        hist = np.where(in_cat, interest[rows] + h.n_cat * inner_h, hist)
        same = (hist % h.n_cat) == (tgt % h.n_cat)[rows]
        share = np.bincount(rows, weights=same, minlength=n) / np.maximum(lengths, 1)
        if h.match_mean is None:  # the first draw is the calibration sample: it fixes the centring constant
            h.match_mean = float(share[lengths > 0].mean()) if (lengths > 0).any() else 0.0
        share = np.where(lengths > 0, share, h.match_mean).astype(np.float32)
        return tgt, lengths, hist, share

    def _arrow_ids(self, f: SparseFeat | VarLenSparseFeat, ids: np.ndarray, raw_hex: bool) -> pa.Array:
        if raw_hex and f.use_hash:
            with np.errstate(over="ignore"):
                tok = splitmix64(ids.astype(np.uint64) + _salt(self.model_seed, "hex", f.name))
            return _hex8((tok & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        return pa.array(ids.astype(np.int32 if f.vocabulary_size < 2**31 else np.int64, copy=False))

    def sample(self, rng: np.random.Generator, n: int, row_id_start: int = 0,
               raw_hex: bool = False) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """Draw ``n`` rows.

        Returns:
            tuple: (Arrow table with ``row_id``, labels and features in schema order; true logits ``(T, N)``
            float32; additive (first-order) logit of task 0 ``(N,)`` float32).
        """
        ch = self._draw(rng, n, arrow=True, raw_hex=raw_hex)
        z = ch.z + self.bias[:, None].astype(np.float32)
        arrays: list[pa.Array] = [pa.array(np.arange(row_id_start, row_id_start + n, dtype=np.int64))]
        names = [ROW_ID]
        chained = self.signal.chained_tasks
        y_prev = None
        for t, lab in enumerate(self.schema.labels):
            if lab.task == "binary":
                y = (_unit(_u32(rng, n)) < _sigmoid(z[t])).astype(np.int8)
                if chained and y_prev is not None:
                    y &= y_prev  # a step happens only after the one before it
                y_prev = y
            else:
                y = (z[t] + rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
            arrays.append(pa.array(y))
            names.append(lab.name)
        for f in self.schema.features:
            arrays.append(ch.columns[f.name])
            names.append(f.name)
        if chained:
            z = _chain_logits(z)
        return pa.Table.from_arrays(arrays, names=names), z, ch.z_first + np.float32(self.bias[0])


def _chain_logits(z: np.ndarray) -> np.ndarray:
    """Logits ``(T, N)`` of the steps given the step before -> logits of reaching each step, float32 ``(T, N)``.

    >>> np.round(_sigmoid(_chain_logits(np.zeros((2, 1), np.float32)))[:, 0], 3).tolist()
    [0.5, 0.25]
    """
    log_p = np.cumsum(-np.logaddexp(0.0, -z.astype(np.float64)), axis=0)  # (T, N) log prod sigmoid(z_s)
    return (log_p - np.log(-np.expm1(log_p))).astype(np.float32)  # logit(p) = log p - log(1 - p)
