"""DeepFM regression on MovieLens: predict the rating (1..5) from user and item features.

As DeepCTR-Torch's ``examples/run_regression_movielens.py`` (label-encoded sparse features, DeepFM with
``task="regression"``, MSE loss), here through the engine: ``LabelSpec("rating", "regression")``, sparse ids in a
KeyedJaggedTensor, fused sparse optimizer, exact test MSE / MAE.

Data: ``ml-100k`` (default; 100,000 ratings, user features age / gender / occupation / zip code, item release
year) or ``sample`` (DeepCTR's 200-row ML-1M ``movielens_sample.txt``, as in DeepCTR's example; 193 users in
200 rows, so test users are mostly unseen: it fits the training rows and does not beat the baseline).
Split: seeded random 80 / 20. The baseline predicts the training mean rating for every test row.

Usage:
    python scripts/examples/movielens_deepfm_regression.py [--dataset ml-100k|sample] [--max-rows N] [--epochs E]
"""

from __future__ import annotations

import argparse

import numpy as np

from dist_ctr.bench.examples import (
    encode_column,
    fit_evaluate,
    load_ml100k,
    load_movielens_sample,
    make_trainer,
    print_metrics,
    schema_summary,
    split_frame,
    to_batches,
)

from dist_ctr.schema import FeatureSchema, LabelSpec, SparseFeat

ML100K_FEATURES = ("user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year")
SAMPLE_FEATURES = ("user_id", "item_id", "age", "gender", "occupation", "zip_code")


def run(dataset: str = "ml-100k", max_rows: int | None = None, epochs: int = 3, batch_size: int = 256,
        embedding_dim: int = 8, seed: int = 0, data_root: str | None = None, verbose: bool = True) -> dict[str, float]:
    """Train and evaluate; returns the test metrics (``mse``, ``mae``) plus ``baseline_mse`` / ``baseline_mae``."""
    if dataset == "ml-100k":
        df, names = load_ml100k(data_root, max_rows=max_rows, seed=seed), ML100K_FEATURES
    elif dataset == "sample":
        df, names = load_movielens_sample(data_root), SAMPLE_FEATURES
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'ml-100k' or 'sample'")
    feats = []
    for n in names:  # ids fitted on the whole frame, as DeepCTR's example does with LabelEncoder
        df[n], vocab = encode_column(df[n], n)
        feats.append(SparseFeat(n, vocab, embedding_dim))
    schema = FeatureSchema(tuple(feats), (LabelSpec("rating", "regression"),))
    train, test = split_frame(df, 0.2, seed)
    trainer = make_trainer("DeepFM", schema, {"dnn_hidden_units": (64, 32)}, sparse=("adagrad", 0.05),
                           dense=("adam", 1e-3), batch_size=batch_size, seed=seed)
    hist, metrics = fit_evaluate(trainer, to_batches(train, schema, batch_size, shuffle_seed=seed),
                                 to_batches(test, schema, 4096), epochs)
    mean = float(train["rating"].mean())
    err = test["rating"].to_numpy(np.float64) - mean
    out = {**metrics, "baseline_mse": float(np.mean(err**2)), "baseline_mae": float(np.mean(np.abs(err))),
           "train_loss_first_epoch": hist.history["loss"][0], "train_loss_last_epoch": hist.history["loss"][-1]}
    if verbose:
        print(f"MovieLens {dataset}: {len(train)} train / {len(test)} test rows, {epochs} epochs, "
              f"{trainer.meta['fit_seconds']:.1f} s")
        print(schema_summary(schema))
        print("train loss (MSE) per epoch: " + ", ".join(f"{v:.4f}" for v in hist.history["loss"]))
        print_metrics("DeepFM test", metrics)
        print_metrics(f"baseline (train mean {mean:.3f}) test", {"mse": out["baseline_mse"], "mae": out["baseline_mae"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "sample"))
    p.add_argument("--max-rows", type=int, default=None, help="random subset of ratings (ml-100k)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.dataset, a.max_rows, a.epochs, a.batch_size, seed=a.seed)


if __name__ == "__main__":
    main()
