"""DIN and DIEN on real behaviour sequences: Amazon Electronics (DIN format) or Taobao display ads.

Data (tiny format samples, 100 rows each; the figures show the pipeline runs, not generalisation):

- ``amazon`` (default): ``amazon_din_samples/paddlerec_din_amazon_electronics_sample.txt``, the DIN paper's
  preprocessing of Amazon Electronics: ``hist_item_ids ; hist_cate_ids ; target_item ; target_cate ; label``.
  Target ``item_id`` / ``cate_id`` and histories ``hist_item_id`` / ``hist_cate_id`` share the tables ``item`` /
  ``cate`` through ``embedding_name``; the histories are ``VarLenSparseFeat`` s kept as sequences
  ``(B, L, D)`` that the models attend over with the target as query.
- ``taobao``: ``taobao_ad_sample/{train,valid}_sample.csv`` (Alimama display ads): target ``adgroup_id`` and
  history ``click_sequence`` (``^``-separated clicked ad groups) share the table ``adgroup``, plus user / ad
  profile features; ``clk`` (4 % positives) is the label.

Each model is trained for a few epochs on all rows and evaluated on the same rows (the train-set AUC shows
memorisation; it is not a test AUC). Ids are encoded over the whole file.

Usage:
    python scripts/examples/din_dien_amazon.py [--dataset amazon|taobao] [--models DIN,DIEN] [--epochs E]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from dist_ctr.bench.examples import (
    Vocab,
    data_file,
    encode_column,
    encode_lists,
    fit_evaluate,
    make_trainer,
    print_metrics,
    schema_summary,
    split_tokens,
    to_batches,
)

from dist_ctr.schema import FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat

TAOBAO_PROFILE = ("userid", "pid", "cate_id", "campaign_id", "customer", "brand", "cms_segid", "cms_group_id",
                  "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
                  "new_user_class_level")


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """Encoded rows, the schema, and the (target feature, history feature) pairs the attention links."""

    frame: pd.DataFrame
    schema: FeatureSchema
    pairs: tuple[tuple[str, str], ...]


def load_amazon(root: str | None = None, embedding_dim: int = 8, max_history: int = 50) -> SequenceData:
    """The PaddleRec DIN sample: shared ``item`` / ``cate`` tables for targets and histories.

    Histories (up to 152 long here) keep their ``max_history`` most recent behaviours (the last ids).
    """
    path = data_file("amazon_din_samples", "paddlerec_din_amazon_electronics_sample.txt", root)
    raw = pd.read_csv(path, sep=";", header=None, dtype=str, keep_default_na=False,
                      names=["hist_item_id", "hist_cate_id", "item_id", "cate_id", "label"])
    df = pd.DataFrame({"label": raw["label"].astype(np.float32)})
    feats: list[Any] = []
    hist_feats: list[Any] = []
    for target, hist, table in (("item_id", "hist_item_id", "item"), ("cate_id", "hist_cate_id", "cate")):
        lists = split_tokens(raw[hist], " ")
        vocab = Vocab(raw[target], lists.explode().dropna())
        maxlen = min(max_history, int(lists.map(len).max()))
        df[target] = vocab.encode(raw[target], target)
        df[hist] = encode_lists(lists, vocab, hist, maxlen, keep="last")
        feats.append(SparseFeat(target, len(vocab), embedding_dim, embedding_name=table))
        hist_feats.append(VarLenSparseFeat(SparseFeat(hist, len(vocab), embedding_dim, embedding_name=table),
                                           maxlen=maxlen, combiner="mean"))
    bad = (df["hist_item_id"].map(len) != df["hist_cate_id"].map(len)).to_numpy()
    if bad.any():
        raise ValueError(f"{path}: row {int(np.argmax(bad))} has item and category histories of different lengths")
    schema = FeatureSchema(tuple(feats + hist_feats), (LabelSpec("label", "binary"),))
    return SequenceData(df, schema, (("item_id", "hist_item_id"), ("cate_id", "hist_cate_id")))


def load_taobao(root: str | None = None, embedding_dim: int = 8, maxlen: int = 8) -> SequenceData:
    """FuxiCTR's tiny Taobao ad sample (train + valid files, 200 rows): ``click_sequence`` shares ``adgroup``."""
    raw = pd.concat([pd.read_csv(data_file("taobao_ad_sample", n, root), dtype=str, keep_default_na=False)
                     for n in ("train_sample.csv", "valid_sample.csv")], ignore_index=True)
    df = pd.DataFrame({"clk": raw["clk"].astype(np.float32)})
    lists = split_tokens(raw["click_sequence"], "^")
    vocab = Vocab(raw["adgroup_id"], lists.explode().dropna())
    df["adgroup_id"] = vocab.encode(raw["adgroup_id"], "adgroup_id")
    df["click_sequence"] = encode_lists(lists, vocab, "click_sequence", maxlen, keep="last")
    feats: list[Any] = [SparseFeat("adgroup_id", len(vocab), embedding_dim, embedding_name="adgroup")]
    for n in TAOBAO_PROFILE:
        df[n], size = encode_column(raw[n], n)
        feats.append(SparseFeat(n, size, embedding_dim))
    feats.append(VarLenSparseFeat(SparseFeat("click_sequence", len(vocab), embedding_dim, embedding_name="adgroup"),
                                  maxlen=maxlen, combiner="mean"))
    schema = FeatureSchema(tuple(feats), (LabelSpec("clk", "binary"),))
    return SequenceData(df, schema, (("adgroup_id", "click_sequence"),))


def model_config(model: str, data: SequenceData) -> dict[str, Any]:
    """The model's typed-config keys for this data (history links and small layers for 100 rows)."""
    targets = tuple(t for t, _ in data.pairs)
    common: dict[str, Any] = {"history_feature_list": targets, "history_features": dict(data.pairs),
                              "dnn_hidden_units": (32, 16)}
    if model == "DIN":
        return {**common, "att_hidden_size": (16, 8)}
    if model == "DIEN":  # auxiliary loss on, negatives sampled in-batch (RecBole's DIEN)
        return {**common, "gru_type": "AUGRU", "use_negsampling": True, "att_hidden_units": (16, 8),
                "aux_hidden_units": (16, 8)}
    raise ValueError(f"unknown model {model!r}; this example runs 'DIN' and 'DIEN'")


def run(dataset: str = "amazon", models: tuple[str, ...] = ("DIN", "DIEN"), epochs: int = 5, batch_size: int = 32,
        seed: int = 0, data_root: str | None = None, verbose: bool = True) -> dict[str, dict[str, Any]]:
    """Train each model on all rows; returns ``{model: {"loss": per-epoch losses, "auc": train-set AUC,
    "preds_shape": ..., ...}}``."""
    if dataset not in ("amazon", "taobao"):
        raise ValueError(f"unknown dataset {dataset!r}; expected 'amazon' or 'taobao'")
    data = load_amazon(data_root) if dataset == "amazon" else load_taobao(data_root)
    batches = to_batches(data.frame, data.schema, batch_size, shuffle_seed=seed)
    if verbose:
        lens = data.frame[data.pairs[0][1]].map(len)
        label = data.schema.label_names[0]
        print(f"{dataset}: {len(data.frame)} rows, positive rate {data.frame[label].mean():.3f}, history length "
              f"{lens.min()}..{lens.max()} (mean {lens.mean():.1f}); train = eval rows (memorisation check)")
        print(schema_summary(data.schema))
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        trainer = make_trainer(model, data.schema, model_config(model, data), sparse=("adagrad", 0.05),
                               dense=("adam", 1e-2), batch_size=batch_size, seed=seed)
        hist, metrics = fit_evaluate(trainer, batches, batches, epochs)
        preds = trainer.predict(batches)
        out[model] = {**metrics, "loss": list(hist.history["loss"]), "preds_shape": tuple(preds.shape),
                      "preds_finite": bool(preds.isfinite().all())}
        if verbose:
            print(f"{model}: train loss per epoch: " + ", ".join(f"{v:.4f}" for v in hist.history["loss"]))
            print_metrics(f"{model} on the training rows", metrics)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="amazon", choices=("amazon", "taobao"))
    p.add_argument("--models", default="DIN,DIEN")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.dataset, tuple(m for m in a.models.split(",") if m), a.epochs, a.batch_size, a.seed)


if __name__ == "__main__":
    main()
