"""Planted-signal data of the DeepCTR-Torch peer benchmark (``scripts/bench_peer_deepctr.py``,
``scripts/peer_trajectory.py``): Criteo-shaped rows for the flat models, their two-label form for the multi-task
models (SharedBottom, ESMM, MMOE, PLE) and behaviour sequences for DIN / DIEN. Seeded; all of them come from the
library's planted generator; both libraries get the same arrays.

Notation: ``N`` rows, ``F`` categorical fields, ``L`` history ``maxlen``, ``V`` items, ``C`` categories, ``T`` tasks.

**Criteo-shaped rows** (:func:`make_data`): the library's planted generator
(:class:`dist_ctr.data.synthetic.PlantedModel` with its default :class:`~dist_ctr.data.synthetic.PlantedSignal`,
``model_seed = seed``) on the schema of :func:`our_schema`: 26 categorical features ``C1..C26`` with Zipf ids over
the vocabularies of :func:`vocabularies`, 13 dense counts ``I1..I13`` read as ``log(1 + x)`` (nulls -> 0), and a
binary label drawn from ``sigmoid(bias + first-order effects of every feature + 6 centred rank-4 pairwise effects +
dense effects)``, the bias set for a 25% CTR; the rows are :func:`dist_ctr.data.synthetic.draw_arrays`' (seed
``seed``). The planted function depends on ``seed`` only, not on the row count.

**Behaviour sequences** (:func:`make_sequence_data`): the library's planted generator with a linked history
(``PlantedSignal(sequence_scale=3, history_categories=C, history_min_length=1)``, ``model_seed = seed``): a
``user`` and a target ``item_id`` (Zipf ids, each with a first-order effect), its history ``hist_item_id`` of ``n ~
U{1..L}`` items, oldest first, and one dense count ``price`` (read as ``log(1 + x)``, with an effect). Item ``i`` is
in category ``i % C``; every row has an interest category, the target's from it half of the time (else a Zipf item),
each history item from it with probability 0.7 (else a Zipf item), Zipf within the category.
``cate_id`` / ``hist_cate_id`` are the categories of the target / history items
(:func:`dist_ctr.data.synthetic.history_categories`). The click logit is

    z = b + w_user + w_item(target) + price effect + 3 * (m - mean m)

with ``m`` the share of the history in the target's category. Without the history a model reaches at most the
first-order part (``SeqData.base``); the rest needs the history read against the target (DIN's attention, DIEN's
evolving interest). ``b`` is set for a 25% CTR; the planted function depends on ``seed`` only, not on ``N``.

**Two tasks** (:func:`with_conversions`): the same generator with two chained labels
(``PlantedSignal(chained_tasks=True)``): the click of :func:`make_data` (same rows, same labels) and
click-and-convert (CTCVR), a conversion given a click drawn from ``sigmoid(z_cvr)`` with ``z_cvr = c + 0.8 z_click +
first-order effects on 3 fields``, ``c`` set for a 30% mean of ``sigmoid(z_cvr)``; conversion implies click
(ESMM's setting). The same two labels (``ctr``, ``ctcvr``) serve all four multi-task models.

>>> f = make_data(3000, [50] * 26, seed=0)
>>> f.sparse.shape, f.dense.shape, bool(0.2 < f.label.mean() < 0.3), bool(0.6 < task_aucs(f.label, f.prob)[0] < 1)
((3000, 26), (3000, 13), True, True)
>>> m = with_conversions(f, [50] * 26, seed=0)
>>> m.label.shape, bool((m.label[:, 0] == f.label).all() and (m.label[:, 1] <= m.label[:, 0]).all())
((3000, 2), True)
>>> b = to_batches(f.rows(0, 1000), 512)
>>> len(b), b[0].sparse.keys()[:2], tuple(b[1].labels.shape)
(2, ['C1', 'C2'], (488, 1))
>>> d = make_sequence_data(2000, seed=0)
>>> d.seqs["hist_item_id"].shape, d.label.shape, bool(d.seq_length.min() >= 1)
((2000, 20), (2000, 1), True)
>>> bool(0.2 < d.label.mean() < 0.3), bool(0.7 < task_aucs(d.label, d.prob)[0] < 0.95)
(True, True)
>>> bool((d.seqs["hist_cate_id"] == d.seqs["hist_item_id"] % 100).all()
...      and (d.sparse["cate_id"] == d.sparse["item_id"] % 100).all())
True
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.auc import exact_auc
from dist_ctr.data.batch import CTRBatch
from dist_ctr.data.synthetic import PlantedModel, PlantedSignal, draw_arrays, history_categories
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat

__all__ = ["CRITEO_KAGGLE_CARD", "DENSE_NAMES", "Data", "N_DENSE", "N_SPARSE", "SEQ_LENGTH", "SEQ_TARGETS",
           "SPARSE_NAMES", "SeqData", "VOCAB_CAP", "make_data", "make_sequence_data", "our_schema",
           "seq_peer_columns", "seq_schema", "seq_to_batches", "task_aucs", "to_batches", "vocabularies",
           "with_conversions"]

# Criteo (Kaggle display-ads) categorical cardinalities, C1..C26.
CRITEO_KAGGLE_CARD = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                      5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
VOCAB_CAP = 75_000
N_SPARSE, N_DENSE = 26, 13
SPARSE_NAMES = [f"C{i + 1}" for i in range(N_SPARSE)]
DENSE_NAMES = [f"I{i + 1}" for i in range(N_DENSE)]

SEQ_TARGETS = ("item_id", "cate_id")  # history_feature_list on both sides
SEQ_LENGTH = "seq_length"  # the peer's length column (VarLenSparseFeat.length_name)
SEQ_SCALE = 3.0  # logit change per unit of history / target category match share


def task_aucs(y: np.ndarray, p: np.ndarray) -> list[float]:
    """Exact AUC per task (:func:`dist_ctr.auc.exact_auc`, float64): ``y, p: (N, T) | (N,) -> [T floats]``."""
    n = y.shape[0]
    y2, p2 = y.reshape(n, -1).astype(np.float64), p.reshape(n, -1).astype(np.float64)  # (N, T)
    if y2.shape[1] != p2.shape[1]:
        raise ValueError(f"labels have {y2.shape[1]} task(s) but predictions {p2.shape[1]}")
    return [exact_auc(p2[:, t], y2[:, t]) for t in range(y2.shape[1])]


# ---- Criteo-shaped rows ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    """Criteo-shaped rows (:func:`make_data`); multi-task rows (:func:`with_conversions`) have ``(N, T)`` labels."""

    sparse: np.ndarray  # (N, 26) int64
    dense: np.ndarray  # (N, 13) float32
    label: np.ndarray  # (N,) float32; (N, T) for the multi-task rows
    prob: np.ndarray  # (N,) float64, the planted click probability; (N, T) for the multi-task rows

    def rows(self, lo: int, hi: int) -> "Data":
        return Data(self.sparse[lo:hi], self.dense[lo:hi], self.label[lo:hi], self.prob[lo:hi])

    def __len__(self) -> int:
        return int(self.label.shape[0])


def vocabularies() -> tuple[list[int], str]:
    """The 26 vocabulary sizes of the benchmark and where they come from: the ``criteo-kaggle`` preset when
    ``dist_ctr.data.presets`` exists, else the Criteo-Kaggle cardinalities capped at ``VOCAB_CAP``."""
    try:
        from dist_ctr.data.presets import criteo_kaggle_schema  # type: ignore[import-not-found]

        schema = criteo_kaggle_schema(embedding_dim=16)
        return [int(f.vocabulary_size) for f in schema.sparse_features], "dist_ctr.data.presets criteo-kaggle"
    except ImportError:
        return [min(c, VOCAB_CAP) for c in CRITEO_KAGGLE_CARD], f"Criteo-Kaggle cardinalities capped at {VOCAB_CAP:,}"


def _flat_model(vocabs: list[int], seed: int, ctr: float, cvr: Optional[float] = None) -> PlantedModel:
    """The planted model of the Criteo-shaped rows: one label, or two chained ones (``ctr``, ``ctcvr``)."""
    labels = ("label",) if cvr is None else ("ctr", "ctcvr")
    signal = PlantedSignal(chained_tasks=cvr is not None)
    return PlantedModel(our_schema(vocabs, 16, labels), seed, signal, ctr if cvr is None else (ctr, cvr))


def make_data(n: int, vocabs: list[int], seed: int, ctr: float = 0.25) -> Data:
    """``n`` Criteo-shaped rows over ``vocabs`` (``F`` sizes) with the library's planted signal (see the module
    docstring). The planted function depends on ``seed`` only (not on ``n``); the bias is set so the mean click
    probability is ``ctr``."""
    d = draw_arrays(_flat_model(vocabs, seed, ctr), n, seed)
    return Data(d.columns.ids, d.dense, d.labels[:, 0], d.probs[:, 0])


def with_conversions(data: Data, vocabs: list[int], seed: int, ctr: float = 0.25, cvr: float = 0.3) -> Data:
    """The rows of ``make_data(len(data), vocabs, seed, ctr)`` with two labels ``(N, 2)``: the click (``ctr``) and
    click-and-convert (``ctcvr``), and their true probabilities ``(N, 2)``; see the module docstring."""
    d = draw_arrays(_flat_model(vocabs, seed, ctr, cvr), len(data), seed)
    if not np.array_equal(d.columns.ids, data.sparse):
        raise ValueError("with_conversions: data must be make_data(n, vocabs, seed, ctr)'s rows, drawn with this seed")
    return Data(data.sparse, data.dense, d.labels, d.probs)


def our_schema(vocabs: list[int], dim: int, labels: tuple[str, ...] = ("label",)) -> FeatureSchema:
    """Our schema of the Criteo-shaped rows: ``C1..C26`` (dim ``dim``), ``I1..I13``, one label per task."""
    feats = [SparseFeat(n, v, dim) for n, v in zip(SPARSE_NAMES, vocabs)] + [DenseFeat(n) for n in DENSE_NAMES]
    return FeatureSchema(tuple(feats), tuple(LabelSpec(n) for n in labels))


def to_batches(d: Data, batch: int) -> list[CTRBatch]:
    """Key-major KJT batches of ``batch`` rows (int64 ids, int32 lengths), ``(B, 13)`` dense, ``(B, T)`` labels."""
    out = []
    for lo in range(0, len(d), batch):
        part = d.rows(lo, lo + batch)
        b = len(part)
        values = torch.from_numpy(np.ascontiguousarray(part.sparse.T).reshape(-1))  # (F * B,) key-major
        kjt = KeyedJaggedTensor(keys=SPARSE_NAMES, values=values, lengths=torch.ones(b * N_SPARSE, dtype=torch.int32))
        out.append(CTRBatch(torch.from_numpy(part.dense), kjt, torch.from_numpy(part.label).view(b, -1)))  # (B, T)
    return out


# ---- behaviour sequences ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class SeqData:
    """Rows with single-valued ids, right-padded histories and dense values (see the module docstring).

    Attributes:
        sparse (dict[str, ndarray]): single-valued feature -> ``(N,)`` int64 ids.
        seqs (dict[str, ndarray]): history feature -> ``(N, L)`` int64 ids, oldest first, 0 beyond the length.
        seq_length (ndarray): ``(N,)`` int64 true length of every row's history (all histories share it).
        dense (dict[str, ndarray]): dense feature -> ``(N,)`` float32.
        label (ndarray): ``(N, T)`` float32.
        prob (ndarray): ``(N, T)`` float64, the planted probabilities.
        base (ndarray): ``(N,)`` float64, the planted logit without the history terms (what a model that ignores
            the history can reach at best).
        vocab (dict[str, int]): vocabulary per table (single-valued feature name).
        history_of (dict[str, str]): history feature -> the target feature whose table it reads.
    """

    sparse: dict[str, np.ndarray]
    seqs: dict[str, np.ndarray]
    seq_length: np.ndarray
    dense: dict[str, np.ndarray]
    label: np.ndarray
    prob: np.ndarray
    base: np.ndarray
    vocab: dict[str, int]
    history_of: dict[str, str]

    def rows(self, lo: int, hi: int) -> "SeqData":
        return SeqData({k: v[lo:hi] for k, v in self.sparse.items()}, {k: v[lo:hi] for k, v in self.seqs.items()},
                       self.seq_length[lo:hi], {k: v[lo:hi] for k, v in self.dense.items()}, self.label[lo:hi],
                       self.prob[lo:hi], self.base[lo:hi], self.vocab, self.history_of)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def maxlen(self) -> int:
        return int(next(iter(self.seqs.values())).shape[1])

    def peer_x(self) -> dict[str, np.ndarray]:
        """DeepCTR-Torch's input dict: ``(N,)`` ids and dense values, ``(N, L)`` padded histories, and the
        ``seq_length`` column."""
        return {**self.sparse, **self.seqs, SEQ_LENGTH: self.seq_length, **self.dense}


SEQ_CATEGORIES = {"cate_id": "item_id", "hist_cate_id": "hist_item_id"}  # derived column -> the items it categorises


def _seq_model(seed: int, n_users: int, n_items: int, n_cates: int, maxlen: int, ctr: float) -> PlantedModel:
    """The planted model of the behaviour sequences (``model_seed = seed``): ``user``, target ``item_id``, its
    history ``hist_item_id`` (lengths ``1..maxlen``, ``n_cates`` interest categories) and one dense ``price``."""
    schema = FeatureSchema((SparseFeat("user", n_users, 4), SparseFeat("item_id", n_items, 4),
                            VarLenSparseFeat(SparseFeat("hist_item_id", n_items, 4, embedding_name="item_id"),
                                             maxlen=maxlen), DenseFeat("price")), (LabelSpec("label"),))
    signal = PlantedSignal(sequence_scale=SEQ_SCALE, history_categories=n_cates, history_min_length=1)
    return PlantedModel(schema, seed, signal, ctr)


def make_sequence_data(n: int, seed: int, n_users: int = 10_000, n_items: int = 10_000, n_cates: int = 100,
                       maxlen: int = 20, ctr: float = 0.25) -> SeqData:
    """``n`` behaviour-sequence rows (see the module docstring): the library's planted generator with a linked
    history, its categories derived by :func:`dist_ctr.data.synthetic.history_categories`. The planted function
    depends on ``seed`` only (not on ``n``); the bias is set so the mean click probability is ``ctr``."""
    model = _seq_model(seed, n_users, n_items, n_cates, maxlen, ctr)
    base = model.schema.features
    schema = FeatureSchema((base[0], base[1], SparseFeat("cate_id", n_cates, 4), base[2],
                            VarLenSparseFeat(SparseFeat("hist_cate_id", n_cates, 4, embedding_name="cate_id"),
                                             maxlen=maxlen), base[3]), model.schema.labels)
    d = draw_arrays(model, n, seed, schema=schema, derive=history_categories(model, SEQ_CATEGORIES))
    hist, length = d.padded("hist_item_id")  # (N, L), (N,)
    hist_cate, _ = d.padded("hist_cate_id")  # (N, L): the same lengths
    return SeqData(
        sparse={k: np.ascontiguousarray(d.ids(k)) for k in ("user", "item_id", "cate_id")},
        seqs={"hist_item_id": hist, "hist_cate_id": hist_cate}, seq_length=length,
        dense={"price": np.ascontiguousarray(d.dense[:, 0])},
        label=d.labels, prob=d.probs, base=d.first_order.astype(np.float64),
        vocab={"user": n_users, "item_id": n_items, "cate_id": n_cates},
        history_of={"hist_item_id": "item_id", "hist_cate_id": "cate_id"})


def seq_schema(d: SeqData, dim: int) -> FeatureSchema:
    """Our schema: each history ``VarLenSparseFeat`` reads its target's table (``embedding_name``)."""
    feats: list[Any] = [SparseFeat(k, d.vocab[k], dim) for k in d.sparse]
    feats += [VarLenSparseFeat(SparseFeat(h, d.vocab[t], dim, embedding_name=t), maxlen=d.maxlen)
              for h, t in d.history_of.items()]
    feats += [DenseFeat(k) for k in d.dense]
    return FeatureSchema(tuple(feats), (LabelSpec("label"),))


def seq_peer_columns(dc: Any, d: SeqData, dim: int) -> list[Any]:
    """DeepCTR-Torch's columns: the histories named ``hist_<target>`` on the target's table, with ``length_name``."""
    inp = dc.inputs
    cols: list[Any] = [inp.SparseFeat(k, vocabulary_size=d.vocab[k], embedding_dim=dim) for k in d.sparse]
    cols += [inp.VarLenSparseFeat(inp.SparseFeat(h, vocabulary_size=d.vocab[t], embedding_dim=dim, embedding_name=t),
                                  maxlen=d.maxlen, length_name=SEQ_LENGTH) for h, t in d.history_of.items()]
    cols += [inp.DenseFeat(k, 1) for k in d.dense]
    return cols


def seq_to_batches(d: SeqData, schema: FeatureSchema, batch: int) -> list[CTRBatch]:
    """Key-major KJT batches (int64 ids, int32 lengths; a history's values are its valid prefix) and ``(B,
    n_dense)`` dense values, ``(B, T)`` labels."""
    out = []
    for lo in range(0, len(d), batch):
        part = d.rows(lo, lo + batch)
        b = len(part)
        vals, lens = [], []
        for k in schema.sparse_names:
            if k in part.sparse:
                vals.append(part.sparse[k])
                lens.append(np.ones(b, dtype=np.int32))
            else:
                seq = part.seqs[k]  # (b, L)
                vals.append(seq[np.arange(seq.shape[1])[None, :] < part.seq_length[:, None]])  # row-major prefixes
                lens.append(part.seq_length.astype(np.int32))
        kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=torch.from_numpy(np.concatenate(vals)),
                                lengths=torch.from_numpy(np.concatenate(lens)))
        dense = np.stack([part.dense[k] for k in schema.dense_names], axis=1)  # (b, n_dense)
        out.append(CTRBatch(torch.from_numpy(dense), kjt, torch.from_numpy(part.label)))  # labels (b, T)
    return out
