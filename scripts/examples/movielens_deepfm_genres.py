"""DeepFM with the multi-valued ``genres`` feature on MovieLens ML-100K (binary target: rating >= 4).

As DeepCTR-Torch's ``examples/run_multivalue_movielens.py``: ``genres`` is a ``VarLenSparseFeat`` pooled with
``combiner="mean"`` (here a TorchRec bag with MEAN pooling over a jagged list, no padding), next to the single-valued
user / item features. The target is binary, ``rating >= 4`` (55.4 % positives), so the figures are AUC / logloss.

Two comparisons, each the same DeepFM trained on the same split with and without ``genres``:

- ``full``: every feature (user_id, item_id, ...). The item id already identifies the genres, so genres add
  little here.
- ``cold-item``: user features only, no item_id / release_year, so genres are the only item information: this
  is where the pooled multi-valued feature has to carry the signal (users' genre tastes).

Split: seeded random 80 / 20 of the ratings.

Usage:
    python scripts/examples/movielens_deepfm_genres.py [--max-rows N] [--epochs E]
"""

from __future__ import annotations

import argparse

import numpy as np

from dist_ctr.bench.examples import (
    Vocab,
    encode_column,
    encode_lists,
    fit_evaluate,
    load_ml100k,
    make_trainer,
    print_metrics,
    schema_summary,
    split_frame,
    to_batches,
)

from dist_ctr.schema import FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat

FULL = ("user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year")
COLD_ITEM = ("user_id", "age", "gender", "occupation", "zip_code")
GENRES_MAXLEN = 6  # ML-100K movies have at most 6 genres


def run(max_rows: int | None = None, epochs: int = 3, batch_size: int = 256, embedding_dim: int = 8, seed: int = 0,
        data_root: str | None = None, settings: tuple[str, ...] = ("full", "cold-item"),
        verbose: bool = True) -> dict[str, dict[str, float]]:
    """Train DeepFM with and without ``genres`` per setting; returns ``{"<setting>/<genres|no_genres>": metrics}``."""
    df = load_ml100k(data_root, max_rows=max_rows, seed=seed)
    df["label"] = (df["rating"] >= 4).astype(np.float32)
    sparse = {}
    for n in FULL:
        df[n], vocab = encode_column(df[n], n)
        sparse[n] = SparseFeat(n, vocab, embedding_dim)
    genre_vocab = Vocab(df["genres"].explode().dropna())
    df["genres"] = encode_lists(df["genres"], genre_vocab, "genres", GENRES_MAXLEN)
    genres = VarLenSparseFeat(SparseFeat("genres", len(genre_vocab), embedding_dim), maxlen=GENRES_MAXLEN,
                              combiner="mean")
    train, test = split_frame(df, 0.2, seed)
    if verbose:
        print(f"MovieLens ml-100k: {len(train)} train / {len(test)} test rows, label = rating >= 4 "
              f"(positive rate {df['label'].mean():.3f}), {len(genre_vocab)} genres, {epochs} epochs")
    results: dict[str, dict[str, float]] = {}
    for setting in settings:
        names = {"full": FULL, "cold-item": COLD_ITEM}[setting]
        for with_genres in (True, False):
            feats = tuple(sparse[n] for n in names) + ((genres,) if with_genres else ())
            schema = FeatureSchema(feats, (LabelSpec("label", "binary"),))
            trainer = make_trainer("DeepFM", schema, {"dnn_hidden_units": (64, 32)}, sparse=("adagrad", 0.05),
                                   dense=("adam", 1e-3), batch_size=batch_size, seed=seed)
            hist, m = fit_evaluate(trainer, to_batches(train, schema, batch_size, shuffle_seed=seed),
                                   to_batches(test, schema, 4096), epochs)
            key = f"{setting}/{'genres' if with_genres else 'no_genres'}"
            results[key] = {**m, "train_loss_last_epoch": hist.history["loss"][-1]}
            if verbose:
                if setting == settings[0] and with_genres:
                    print(schema_summary(schema))
                print_metrics(f"DeepFM {key:<20} test", m)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-rows", type=int, default=None, help="random subset of ratings")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.max_rows, a.epochs, a.batch_size, seed=a.seed)


if __name__ == "__main__":
    main()
