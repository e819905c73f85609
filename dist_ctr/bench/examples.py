"""Shared helpers of the real-data examples (``scripts/examples/``): find the data, encode columns, build batches,
train and evaluate.

Notation: ``B`` batch size, ``R`` rows, ``n_dense`` dense width, ``T`` tasks.

The examples read ``<repo>/../shared/data`` (override with the environment variable ``DIST_CTR_SHARED_DATA``);
nothing is copied into the repository. Every example trains through the engine
(:class:`dist_ctr.train.engine.Trainer`) at world size 1, exactly as a sharded job would, and reports the
engine's exact metrics.

Frames handed to :func:`to_batches` hold one column per schema feature and label:

- ``SparseFeat``: an integer column of ids in ``[0, vocabulary_size)``;
- ``VarLenSparseFeat``: an object column whose cells are int64 arrays of at most ``maxlen`` ids (empty allowed);
- ``DenseFeat`` (dimension 1) and labels: numeric columns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import build_model
from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.train.engine import History, Trainer

REPO_ROOT = Path(__file__).resolve().parents[2]  # dist_ctr/bench/examples.py -> the repository
DATA_ENV = "DIST_CTR_SHARED_DATA"


class DataMissing(FileNotFoundError):
    """A real-data folder or file is absent; the message names the path and how to point at the data."""


# ---- locating data -----------------------------------------------------------------------------------------
def shared_data_dir() -> Path:
    """``$DIST_CTR_SHARED_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def data_file(folder: str, name: str, root: str | Path | None = None) -> Path:
    """Path of ``<root>/<folder>/<name>``; :class:`DataMissing` naming it when absent."""
    base = Path(root) if root is not None else shared_data_dir()
    p = base / folder / name
    if not p.is_file():
        raise DataMissing(f"real-data file not found: {p} (set {DATA_ENV} to the folder holding '{folder}/')")
    return p


# ---- encoding ----------------------------------------------------------------------------------------------
class Vocab:
    """Token -> id map built over one or more columns (a target item and its history share one vocab).

    Ids are ``0 .. len(vocab) - 1`` in first-seen order; tokens are compared as strings.

    >>> v = Vocab(pd.Series(["a", "b"]), pd.Series(["c", "a"]))
    >>> len(v), v.encode(pd.Series(["c", "a"]), "x").tolist()
    (3, [2, 0])
    """

    def __init__(self, *columns: pd.Series) -> None:
        tokens = pd.concat([c.astype(str) for c in columns], ignore_index=True) if columns else pd.Series([], dtype=str)
        self.index = pd.Index(pd.unique(tokens))

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, values: pd.Series, column: str) -> np.ndarray:
        """Ids ``(R,)`` int64 of ``values``; an unknown token is an error naming ``column``."""
        codes = self.index.get_indexer(values.astype(str))
        if (codes < 0).any():
            bad = values[codes < 0].iloc[0]
            raise ValueError(f"column {column!r}: token {bad!r} is not in the vocabulary")
        return codes.astype(np.int64)


def encode_column(values: pd.Series, column: str) -> tuple[np.ndarray, int]:
    """Label-encode one categorical column (missing values become their own token). Returns (ids, vocab size)."""
    v = Vocab(values.fillna("<missing>"))
    return v.encode(values.fillna("<missing>"), column), len(v)


def split_tokens(values: pd.Series, sep: str) -> pd.Series:
    """``"a|b|c"`` -> ``["a", "b", "c"]`` per row; missing or empty strings give empty lists."""
    return values.fillna("").astype(str).map(lambda s: [t for t in s.split(sep) if t])


def encode_lists(lists: pd.Series, vocab: Vocab, column: str, maxlen: int, keep: str = "first") -> pd.Series:
    """Encode a column of token lists to int64 id arrays of at most ``maxlen`` ids.

    Args:
        lists (pd.Series): each cell a list of tokens.
        vocab (Vocab): the id map (shared with a target feature when the table is shared).
        column (str): name for errors.
        maxlen (int): longer lists keep their first (``keep="first"``) or last (``keep="last"``, the most
            recent behaviours of a time-ordered history) ``maxlen`` ids.
    """
    lengths = lists.map(len).to_numpy()
    flat = pd.Series([t for cell in lists for t in cell], dtype=object)
    ids = vocab.encode(flat, column) if len(flat) else np.zeros(0, dtype=np.int64)
    cells = np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []
    cut = (lambda a: a[:maxlen]) if keep == "first" else (lambda a: a[-maxlen:])
    return pd.Series([cut(a) for a in cells], index=lists.index, dtype=object)


# ---- batches -----------------------------------------------------------------------------------------------
def _sparse_columns(frame: pd.DataFrame, schema: FeatureSchema) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sparse feature (schema order): flat int64 ids and int32 lengths ``(R,)``, validated."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for f in schema.sparse_features:
        if f.name not in frame.columns:
            raise KeyError(f"feature {f.name!r} of the schema has no column in the frame (columns: {list(frame.columns)})")
        col = frame[f.name]
        if isinstance(f, VarLenSparseFeat):
            lengths = col.map(len).to_numpy(np.int32)
            if len(lengths) and int(lengths.max()) > f.maxlen:
                raise ValueError(f"feature {f.name!r}: a list has {int(lengths.max())} ids > maxlen {f.maxlen}; "
                                 "truncate when encoding (encode_lists)")
            values = np.concatenate([np.asarray(a, dtype=np.int64) for a in col]) if len(col) else np.zeros(0, np.int64)
        else:
            values = col.to_numpy(copy=True)
            if not np.issubdtype(values.dtype, np.integer):
                raise TypeError(f"feature {f.name!r}: ids must be integers, got dtype {values.dtype}")
            values = values.astype(np.int64)
            lengths = np.ones(len(values), dtype=np.int32)
        if len(values) and (values.min() < 0 or values.max() >= f.vocabulary_size):
            raise ValueError(f"feature {f.name!r}: ids must lie in [0, {f.vocabulary_size}), got "
                             f"[{values.min()}, {values.max()}]")
        out.append((values, lengths))
    return out


def to_batches(frame: pd.DataFrame, schema: FeatureSchema, batch_size: int, shuffle_seed: int | None = None) -> list[CTRBatch]:
    """Cut a frame into :class:`CTRBatch` es (one key-major KJT per batch, no loop per row).

    Args:
        frame (pd.DataFrame): one column per feature and label (see the module docstring).
        schema (FeatureSchema): features (KJT keys in schema order) and labels ``T``.
        batch_size (int): rows per batch ``B`` (the last batch may be smaller).
        shuffle_seed (int | None): permute rows once with this seed before cutting.

    Returns:
        list[CTRBatch]: dense ``(B, n_dense)`` float32, labels ``(B, T)`` float32, int64 ids / int32 lengths.
    """
    if shuffle_seed is not None:
        frame = frame.iloc[np.random.default_rng(shuffle_seed).permutation(len(frame))]
    missing = [n for n in schema.dense_names + schema.label_names if n not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} of the schema are not in the frame (columns: {list(frame.columns)})")
    dense = frame[schema.dense_names].to_numpy(np.float32, copy=True) if schema.dense_names else np.zeros((len(frame), 0), np.float32)
    labels = frame[schema.label_names].to_numpy(np.float32, copy=True)  # (R, T)
    cols = _sparse_columns(frame, schema)
    offsets = [np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]) for _, lens in cols]
    keys = schema.sparse_names
    batches: list[CTRBatch] = []
    for s in range(0, len(frame), batch_size):
        e = min(s + batch_size, len(frame))
        vals = [v[o[s]: o[e]] for (v, _), o in zip(cols, offsets)]
        lens = [ln[s:e] for _, ln in cols]
        kjt = KeyedJaggedTensor(
            keys=keys,
            values=torch.from_numpy(np.concatenate(vals) if vals else np.zeros(0, np.int64)),
            lengths=torch.from_numpy(np.concatenate(lens) if lens else np.zeros(0, np.int32)),
        )
        batches.append(CTRBatch(torch.from_numpy(np.ascontiguousarray(dense[s:e])), kjt,
                                torch.from_numpy(np.ascontiguousarray(labels[s:e]))))
    return batches


def split_frame(frame: pd.DataFrame, test_frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded random split into (train, test)."""
    perm = np.random.default_rng(seed).permutation(len(frame))
    n_test = int(round(len(frame) * test_frac))
    return frame.iloc[perm[n_test:]].reset_index(drop=True), frame.iloc[perm[:n_test]].reset_index(drop=True)


# ---- training ----------------------------------------------------------------------------------------------
def dist_env() -> DistEnv:
    """World size 1 on CPU; the process group (in-memory store) is created once per process."""
    from dist_ctr.distributed.model_parallel import quiet_torchrec

    quiet_torchrec()
    env = DistEnv()
    init_process_group(env)
    return env


def make_trainer(
    model: str,
    schema: FeatureSchema,
    config: Mapping[str, Any] | Any | None,
    *,
    sparse: tuple[str, float] = ("adagrad", 0.05),
    dense: tuple[str, float] = ("adam", 1e-3),
    batch_size: int = 256,
    seed: int = 0,
) -> Trainer:
    """Seed, build the registered ``model`` and wrap it in a :class:`Trainer` (tasks from the schema labels)."""
    env = dist_env()
    torch.manual_seed(seed)
    net = build_model(model, schema, config)
    return Trainer(net, env, sparse_optim=SparseOptimConfig(name=sparse[0], lr=sparse[1]),  # type: ignore[arg-type]
                   dense_optim=DenseOptimConfig(name=dense[0], lr=dense[1]),  # type: ignore[arg-type]
                   batch_size=batch_size, seed=seed)


def fit_evaluate(trainer: Trainer, train: Sequence[CTRBatch], test: Iterable[CTRBatch] | None,
                 epochs: int) -> tuple[History, dict[str, float]]:
    """Train ``epochs`` epochs (quietly) and return the history and the exact test metrics (``{}`` if no test)."""
    t0 = time.perf_counter()
    hist = trainer.fit(list(train), epochs=epochs, progress=False, log_every=0)
    trainer.meta["fit_seconds"] = time.perf_counter() - t0
    return hist, (trainer.evaluate(test) if test is not None else {})


def schema_summary(schema: FeatureSchema) -> str:
    """One line per feature: kind, vocabulary / maxlen, table."""
    rows = []
    for f in schema.features:
        if isinstance(f, VarLenSparseFeat):
            rows.append(f"  varlen {f.name:<16} vocab={f.vocabulary_size:<6} maxlen={f.maxlen:<3} "
                        f"combiner={f.combiner} table={f.embedding_name}")
        elif isinstance(f, SparseFeat):
            rows.append(f"  sparse {f.name:<16} vocab={f.vocabulary_size:<6} table={f.embedding_name}")
        else:
            rows.append(f"  dense  {f.name:<16} dim={f.dimension}")
    rows.append("  labels " + ", ".join(f"{lab.name} ({lab.task})" for lab in schema.labels))
    return "\n".join(rows)


def print_metrics(title: str, metrics: Mapping[str, float]) -> None:
    def fmt(k: str, v: float) -> str:
        return f"{k}={int(v)}" if k.endswith("rows") else f"{k}={v:.4f}"

    print(f"{title}: " + "  ".join(fmt(k, v) for k, v in metrics.items()), flush=True)


# ---- MovieLens (used by two examples) ----------------------------------------------------------------------
def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic TSV: header ``name:type``; the ``:type`` suffixes are stripped, every column read as str."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def load_ml100k(root: str | Path | None = None, max_rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """ML-100K ratings joined with user and item features (strings), ``rating`` float, ``genres`` token lists.

    Columns: ``user_id, item_id, rating, timestamp, age, gender, occupation, zip_code, release_year, genres``.
    ``max_rows`` keeps a seeded random subset of the ratings.
    """
    inter = _read_atomic(data_file("movielens", "ml-100k/ml-100k.inter", root))
    users = _read_atomic(data_file("movielens", "ml-100k/ml-100k.user", root))
    items = _read_atomic(data_file("movielens", "ml-100k/ml-100k.item", root))
    if max_rows is not None and max_rows < len(inter):
        inter = inter.iloc[np.sort(np.random.default_rng(seed).choice(len(inter), max_rows, replace=False))]
    df = inter.merge(users, on="user_id", how="left", validate="many_to_one")
    df = df.merge(items[["item_id", "release_year", "class"]], on="item_id", how="left", validate="many_to_one")
    df["rating"] = df["rating"].astype(np.float32)
    df["genres"] = split_tokens(df.pop("class"), " ")
    return df.reset_index(drop=True)


def load_movielens_sample(root: str | Path | None = None) -> pd.DataFrame:
    """DeepCTR's ``movielens_sample.txt`` (200 ML-1M rows), renamed to the ML-100K column names.

    Columns: ``user_id, item_id, rating, timestamp, age, gender, occupation, zip_code, title, genres``.
    """
    df = pd.read_csv(data_file("movielens", "movielens_sample.txt", root), dtype=str, keep_default_na=False)
    df = df.rename(columns={"movie_id": "item_id", "zip": "zip_code"})
    df["rating"] = df["rating"].astype(np.float32)
    df["genres"] = split_tokens(df["genres"], "|")
    return df
