"""MMOE on UCI Adult with two binary tasks: income > 50K and marital status == Never-married.

The common stand-in for MMoE's census experiment (Ma et al., KDD 2018, used two census-income tasks as well):
one schema with two ``LabelSpec`` s, labels ``(B, 2)`` from the batches, one BCE loss per task, and the engine's
exact per-task metrics (``income/auc``, ``never_married/auc``). ``marital_status`` is the second label, so it is
not a feature; ``relationship`` stays a feature (it is correlated with both labels, as in the usual setup).

Data: ``adult.data.gz`` (32,561 rows) for training, ``adult.test.gz`` (16,281 rows) for test. Categorical columns
are label-encoded (``?`` is its own token); numeric columns are dense features, ``capital_gain`` /
``capital_loss`` through ``log1p``, all standardised with training statistics. ``--model`` trains another
registered model on the same data (e.g. ``SharedBottom`` or ``DeepFM``, whose outputs are one per task too).

Usage:
    python scripts/examples/mmoe_two_labels.py [--max-train-rows N] [--max-test-rows N] [--epochs E] [--model MMOE]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from dist_ctr.bench.examples import (
    Vocab,
    data_file,
    fit_evaluate,
    make_trainer,
    print_metrics,
    schema_summary,
    to_batches,
)

from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
           "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
           "income")
SPARSE = ("workclass", "education", "occupation", "relationship", "race", "sex", "native_country")
DENSE = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
LOG_DENSE = ("capital_gain", "capital_loss")
LABELS = ("income", "never_married")

#: per-model configs used by this example (models not listed get their defaults)
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "MMOE": {"num_experts": 4, "expert_dnn_hidden_units": (64, 32), "gate_dnn_hidden_units": (16,),
             "tower_dnn_hidden_units": (32,)},
    "DeepFM": {"dnn_hidden_units": (64, 32)},
}


def load_adult(root: str | None = None, max_train_rows: int | None = None, max_test_rows: int | None = None,
               seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw train / test frames (strings stripped) with the two 0/1 label columns added."""
    frames = []
    for name, cap in (("adult.data.gz", max_train_rows), ("adult.test.gz", max_test_rows)):
        df = pd.read_csv(data_file("uci_adult", name, root), header=None, names=list(COLUMNS),
                         skipinitialspace=True, dtype=str, keep_default_na=False)
        if len(df.columns) != len(COLUMNS) or df["income"].eq("").any():
            raise ValueError(f"uci_adult/{name}: expected {len(COLUMNS)} comma-separated columns per row")
        if cap is not None and cap < len(df):
            df = df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), cap, replace=False))]
        df["income"] = df["income"].str.rstrip(".").map({"<=50K": 0.0, ">50K": 1.0})
        if df["income"].isna().any():
            raise ValueError(f"uci_adult/{name}: income must be '<=50K' or '>50K' (with an optional trailing dot)")
        df["never_married"] = (df["marital_status"] == "Never-married").astype(np.float32)
        frames.append(df.reset_index(drop=True))
    return frames[0], frames[1]


def prepare(train: pd.DataFrame, test: pd.DataFrame, embedding_dim: int = 8) -> FeatureSchema:
    """Encode sparse columns (vocab over both files), transform and standardise dense columns in place."""
    feats: list[Any] = []
    for n in SPARSE:
        v = Vocab(train[n], test[n])
        train[n], test[n] = v.encode(train[n], n), v.encode(test[n], n)
        feats.append(SparseFeat(n, len(v), embedding_dim))
    for n in DENSE:
        tr, te = train[n].astype(np.float64), test[n].astype(np.float64)
        if n in LOG_DENSE:
            tr, te = np.log1p(tr), np.log1p(te)
        mu, sd = tr.mean(), tr.std() or 1.0
        train[n], test[n] = ((tr - mu) / sd).astype(np.float32), ((te - mu) / sd).astype(np.float32)
        feats.append(DenseFeat(n))
    return FeatureSchema(tuple(feats), tuple(LabelSpec(n, "binary") for n in LABELS))


def run(model: str = "MMOE", max_train_rows: int | None = None, max_test_rows: int | None = None, epochs: int = 3,
        batch_size: int = 256, seed: int = 0, data_root: str | None = None,
        config: dict[str, Any] | None = None, verbose: bool = True) -> dict[str, float]:
    """Train ``model`` on both tasks; returns per-task test metrics (``income/auc``, ``never_married/auc``, ...)."""
    train, test = load_adult(data_root, max_train_rows, max_test_rows, seed)
    schema = prepare(train, test)
    cfg = config if config is not None else MODEL_CONFIGS.get(model)
    trainer = make_trainer(model, schema, cfg, sparse=("adagrad", 0.05), dense=("adam", 1e-3),
                           batch_size=batch_size, seed=seed)
    hist, metrics = fit_evaluate(trainer, to_batches(train, schema, batch_size, shuffle_seed=seed),
                                 to_batches(test, schema, 4096), epochs)
    out = {**metrics, "train_loss_first_epoch": hist.history["loss"][0],
           "train_loss_last_epoch": hist.history["loss"][-1]}
    if verbose:
        rates = ", ".join(f"{n} {train[n].mean():.3f} / {test[n].mean():.3f}" for n in LABELS)
        print(f"UCI Adult: {len(train)} train / {len(test)} test rows; positive rates (train / test): {rates}; "
              f"{model}, {epochs} epochs, {trainer.meta['fit_seconds']:.1f} s")
        print(schema_summary(schema))
        print("train loss (sum over tasks) per epoch: " + ", ".join(f"{v:.4f}" for v in hist.history["loss"]))
        print_metrics(f"{model} test", metrics)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="MMOE")
    p.add_argument("--max-train-rows", type=int, default=None)
    p.add_argument("--max-test-rows", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.model, a.max_train_rows, a.max_test_rows, a.epochs, a.batch_size, seed=a.seed)


if __name__ == "__main__":
    main()
