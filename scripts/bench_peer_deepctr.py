"""Peer benchmark: dist_ctr's engine against DeepCTR-Torch 0.2.9 on the same data and hyper-parameters.

Not a test: prints figures (and optionally writes JSON), asserts nothing.

How the bench works (peer import, data, hyper-parameters, variants, timing, quality) is written out in
docs/benchmarks.md, "How the peer bench works". In short: the same rows in the same order feed both libraries;
both sides train side by side in rotating chunks, so they see the same load; speed-up is the median paired chunk
ratio; quality is the exact held-out AUC of each side, ours minus the peer's.

Usage:
    PEER_DIR=$(scripts/peer_env.sh)
    .venv/bin/python scripts/bench_peer_deepctr.py --peer-dir "$PEER_DIR" --json out.json      # full default set
    .venv/bin/python scripts/bench_peer_deepctr.py --quick                                     # smoke run
    .venv/bin/python scripts/bench_peer_deepctr.py --models DeepFM --seeds 1,2,3 --lrs 0.005,0.01,0.02
    .venv/bin/python scripts/bench_peer_deepctr.py --models DIN,DIEN,MMOE,ESMM,PLE,SharedBottom --seeds 0,1,2
    # the facade at the user's batch size, with where each step's time goes:
    .venv/bin/python scripts/bench_peer_deepctr.py --variants facade --batch 1024 --breakdown 256,1024,4096
    # the facade as a fraction of its model's limit at that batch (dist_ctr.bench.limit):
    .venv/bin/python scripts/bench_peer_deepctr.py --variants facade --batch 1024 --models DeepFM --limit
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import platform
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

# TorchRec (and torch._dynamo through it) before the TensorFlow stand-in: dynamo probes `tensorflow` at import.
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: F401

from dist_ctr.bench.breakdown import format_breakdown, format_top_ops
from dist_ctr.bench.limit import limit_rate
from dist_ctr.bench.timing import time_steps
from dist_ctr.bench.facade import COMPAT, FacadeRunner
from dist_ctr.bench.peer import (BOTH_SIDES, SET_BOTH, SPARSE_ONLY_DNN, OursRunner, PeerRunner, fix_peer_mlr_learners,
                                 fix_peer_onn_init, import_peer, our_config, peer_columns, peer_model, peer_x)
from dist_ctr.bench.peer_data import (SPARSE_NAMES, Data, SeqData, make_data, make_sequence_data, our_schema,
                                      seq_peer_columns, seq_schema, seq_to_batches, task_aucs, to_batches,
                                      vocabularies, with_conversions)
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import MODEL_REGISTRY
from dist_ctr.schema import FeatureSchema
from dist_ctr.train.job import quiet_torchrec

DEFAULT_MODELS = ("DeepFM", "WDL", "DCN", "DCNMix", "xDeepFM", "NFM", "AutoInt", "PNN", "AFM", "FiBiNET", "CCPM",
                  "IFM", "DIFM", "AFN", "ONN", "MLR")
QUICK_MODELS = ("DeepFM", "DCN")
SEQUENCE_MODELS = ("DIN", "DIEN")  # behaviour-sequence rows (dist_ctr.bench.peer_data.make_sequence_data)
MULTITASK_MODELS = ("SharedBottom", "ESMM", "MMOE", "PLE")  # the flat rows with two labels: ctr, ctcvr
MULTITASK_LABELS = ("ctr", "ctcvr")
# ours: <fused sparse optimizer>/<loss reduction>/<table init> (see run_ours); the first is the headline.
DEFAULT_VARIANTS = ("rowwise_adagrad/mean/engine", "adagrad/sum/engine", "rowwise_adagrad/mean/peer")
FACADE = "facade"  # the variant that runs the peer's own program with the prefix swapped (dist_ctr.bench.facade)
BY_ROWS = ("peer", FACADE)  # sides that take rows (a DeepCTR-style dict), not pre-built batches


def family(name: str) -> str:
    """The data set a model is benched on: "sequence", "multitask" or "flat"."""
    return "sequence" if name in SEQUENCE_MODELS else "multitask" if name in MULTITASK_MODELS else "flat"


@dataclasses.dataclass
class DataSet:
    """One data set with both libraries' inputs, cut from the same rows.

    Attributes:
        family (str): "flat" | "multitask" | "sequence".
        train, test (Data | SeqData): the rows.
        schema (FeatureSchema): ours.
        cols (list): the peer's feature columns.
        facade_cols (list): the same columns built by ``dist_ctr.compat`` (the facade variant's).
        batches, test_batches (list[CTRBatch]): ours (train: ``--batch`` rows each; test: 8192).
        task_names (tuple[str, ...]): the label columns, in order.
        ceilings (list[float]): AUC of the planted probability on the test rows, per task.
    """

    family: str
    train: Any
    test: Any
    schema: FeatureSchema
    cols: list[Any]
    facade_cols: list[Any]
    batches: list[CTRBatch]
    test_batches: list[CTRBatch]
    task_names: tuple[str, ...]
    ceilings: list[float]

    def ceiling_text(self) -> str:
        if len(self.ceilings) == 1:
            return f"{self.ceilings[0]:.4f}"
        return (f"{np.mean(self.ceilings):.4f} (mean of " + ", ".join(
            f"{n} {c:.4f}" for n, c in zip(self.task_names, self.ceilings)) + ")")


def auc_fields(aucs: list[float], task_names: tuple[str, ...]) -> dict[str, Any]:
    """``{"auc": mean over tasks}``, plus ``"task_aucs"`` (task -> AUC) with several tasks."""
    out: dict[str, Any] = {"auc": float(np.mean(aucs))}
    if len(aucs) > 1:
        out["task_aucs"] = dict(zip(task_names, aucs))
    return out


def run_pair(dc: types.ModuleType, name: str, ds: DataSet, cfg: dict[str, Any], env: DistEnv, variants: list[str],
             lr: float, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Peer and every variant of ours trained side by side, chunk by chunk (``--chunk`` batches each, the order
    of the sides rotating per chunk), so that every side sees the same load on a shared machine. Each side's
    samples/s is the median over chunks of its chunk rate; the speed-up is the median over chunks of the paired
    ratio peer chunk time / ours chunk time. AUC: per task, and their mean."""
    cols, schema, train, test = ds.cols, ds.schema, ds.train, ds.test
    batches, test_batches = ds.batches, ds.test_batches
    row: dict[str, Any] = {"model": name, "lr": lr, "seed": seed, "ours": {}}
    B, W, C = args.batch, args.warmup, args.chunk
    sides: list[tuple[str, Any]] = []
    try:
        if name in SPARSE_ONLY_DNN:
            # DeepCTR-Torch's AFM / CCPM raise "DenseFeat is not supported in dnn_feature_columns" in forward: the
            # dense features stay in the linear part only, on both sides.
            sparse_cols = [c for c in cols if isinstance(c, dc.inputs.SparseFeat)]
            sides.append(("peer", PeerRunner(dc, name, cols, lr, seed, B, dnn_cols=sparse_cols)))
            row["peer_dnn_cols"] = sparse_cols
            cfg = {**cfg, "dnn_feature_names": tuple(SPARSE_NAMES)}
            row["note"] = "DNN/interaction columns: sparse only on both sides (the peer rejects DenseFeat there)"
        elif name == "ONN" and args.peer_onn_init:
            init_std = float(SET_BOTH.get("init_std", 1e-4))  # DeepCTR-Torch's default, on both sides
            sides.append(("peer", PeerRunner(dc, name, cols, lr, seed, B,
                                             patch=lambda m: fix_peer_onn_init(m, init_std))))
            row["note"] = f"peer-onn-init: the peer's pair tables all start at N(0, {init_std})"
        elif name == "MLR" and args.peer_mlr_learners:
            sides.append(("peer", PeerRunner(dc, name, cols, lr, seed, B, patch=fix_peer_mlr_learners)))
            row["note"] = "peer-mlr-learners: the peer's learners are its base linear models"
        else:
            sides.append(("peer", PeerRunner(dc, name, cols, lr, seed, B)))
    except Exception as e:  # noqa: BLE001 - report and go on
        row["peer_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    for v in variants:
        try:
            if v == FACADE:
                sides.append((v, facade_runner(name, ds, lr, seed, B, args.sparse_eps)))
            else:
                sides.append((v, OursRunner(name, cfg, schema, env, v, lr, B, seed, args.sparse_eps)))
        except Exception as e:  # noqa: BLE001
            row["ours"][v] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    failed: set[str] = set()

    def call(key: str, fn: Callable[[], Any]) -> Any:
        if key in failed:
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            failed.add(key)
            msg = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            if key == "peer":
                row["peer_error"] = msg
            else:
                row["ours"][key] = {"error": msg}
            return None

    for key, r in sides:
        call(key, lambda r=r, key=key: r.warm(train.rows(0, W * B) if key in BY_ROWS else batches[:W]))
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    k = 0
    for _ in range(args.epochs):
        for lo in range(W, len(batches), C):
            hi = min(lo + C, len(batches))
            order = sides[k % len(sides):] + sides[:k % len(sides)]
            k += 1
            secs: dict[str, float] = {}
            for key, r in order:
                chunk = train.rows(lo * B, hi * B) if key in BY_ROWS else batches[lo:hi]
                dt = call(key, lambda r=r, chunk=chunk: r.train_chunk(chunk))
                if dt is not None:
                    secs[key] = dt
            for v in variants:
                if "peer" in secs and v in secs:
                    ratios[v].append(secs["peer"] / secs[v])
    for key, r in sides:
        if key == "peer":
            a = call(key, lambda r=r: r.auc(test))
            if a is not None:
                row["peer"] = {**r.timing.result(B), **auc_fields(a, ds.task_names)}
        else:
            a = call(key, lambda r=r, key=key: r.auc(test) if key == FACADE else r.auc(test_batches, test.label))
            if a is not None:
                row["ours"][key] = {**r.timing.result(B), **auc_fields(a, ds.task_names)}
                if ratios[key]:
                    row["ours"][key]["speedup"] = float(np.median(ratios[key]))
    del sides
    return row


def facade_runner(name: str, ds: DataSet, lr: float, seed: int, batch: int, eps: float) -> FacadeRunner:
    """The facade side: the peer's program with ``dist_ctr.compat`` for ``deepctr_torch`` (AFM / CCPM: sparse
    DNN columns, as the peer gets them)."""
    dnn_cols = ([c for c in ds.facade_cols if isinstance(c, COMPAT.inputs.SparseFeat)] if name in SPARSE_ONLY_DNN
                else None)
    return FacadeRunner(name, ds.facade_cols, lr, seed, batch, dnn_cols, eps)


def breakdowns(name: str, ds: DataSet, lr: float, seed: int, batches: list[int], steps: int,
               eps: float, top_ops: int = 0) -> dict[str, dict[str, float]]:
    """Where the facade's training time goes at each batch size (fresh model, 2 untimed steps, then ``steps``
    profiled steps); prints one line per batch size (and its ``top_ops`` costliest ops) and returns
    batch -> part -> ms per step."""
    out: dict[str, dict[str, float]] = {}
    for b in batches:
        r = facade_runner(name, ds, lr, seed, b, eps)
        r.warm(ds.train.rows(0, 2 * b))
        split = r.breakdown(ds.train.rows(2 * b, (2 + steps) * b), top_ops)
        print(format_breakdown(f"breakdown {name} facade batch {b}", split), flush=True)
        if top_ops:
            print(format_top_ops(f"ops {name} facade batch {b}", split), flush=True)
        out[str(b)] = {**split.per_step_ms(), "wall_ms_per_step": split.wall_ms / max(1, split.steps)}
        del r
    return out


def facade_limit(name: str, ds: DataSet, lr: float, seed: int, batch: int, eps: float, steps: int,
                 rounds: int) -> dict[str, float]:
    """The facade's samples/s as a fraction of its model's limit at ``batch`` (:mod:`dist_ctr.bench.limit`): a
    fresh facade model's ``fit`` over ``steps`` batches of rows, its bare embedding step and its bare dense step on
    those rows, in ``rounds`` interleaved rounds (medians); prints one line."""
    r = facade_runner(name, ds, lr, seed, batch, eps)
    warm = 2
    r.warm(ds.train.rows(0, warm * batch))
    rows = ds.train.rows(warm * batch, (2 * warm + steps) * batch)
    emb_step, dense_step, batches = r.limit_steps(rows)
    rates: dict[str, list[float]] = {"facade": [], "emb": [], "dense": []}
    for _ in range(rounds):
        chunk = rows.rows(warm * batch, len(rows))
        rates["facade"].append(len(chunk) / r.train_chunk(chunk))
        rates["emb"].append(time_steps(emb_step, batches, warm))
        rates["dense"].append(time_steps(dense_step, [batches[0]] * len(batches), warm))
    facade, emb, dense = (float(np.median(rates[k])) for k in ("facade", "emb", "dense"))
    limit = limit_rate(emb, dense)
    print(f"limit {name} facade batch {batch}: facade {facade:,.0f} samples/s; bare embedding step {emb:,.0f}, bare "
          f"dense step {dense:,.0f}, limit {limit:,.0f}; fraction {facade / limit:.2f} (median of {rounds} rounds)",
          flush=True)
    return {"facade": facade, "embedding_step": emb, "dense_step": dense, "limit": limit, "fraction": facade / limit}


def peer_step_rate(dc: types.ModuleType, name: str, cols: list[Any], lr: float, train: Data | SeqData, batch: int,
                   steps: int, seed: int, dnn_cols: Optional[list[Any]] = None, warmup: int = 2) -> float:
    """DeepCTR's per-batch work on pre-built float batches (no DataLoader), on a fresh model; median-step
    samples/s."""
    import torch.nn.functional as F

    model = peer_model(dc, name, cols, seed, dnn_cols)
    model.train()
    opt = torch.optim.Adagrad(model.parameters(), lr=lr)
    order = list(model.feature_index)  # DeepCTR's column order of its input matrix (a history: L columns)
    name_to_col = peer_x(train)
    xs, ys = [], []
    for s in range(warmup + steps):
        lo, hi = s * batch, (s + 1) * batch
        parts = [name_to_col[n][lo:hi].reshape(hi - lo, -1) for n in order]
        xs.append(torch.from_numpy(np.concatenate(parts, 1).astype(np.float32)))  # (B, input columns)
        ys.append(torch.from_numpy(train.label[lo:hi].reshape(hi - lo, -1)).squeeze(-1))  # (B,) | (B, T)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        y_pred = model(x).squeeze(-1)
        opt.zero_grad()
        loss = F.binary_cross_entropy(y_pred, y, reduction="sum") + model.get_regularization_loss() + model.aux_loss
        loss.backward()
        opt.step()

    for x, y in zip(xs[:warmup], ys[:warmup]):
        step(x, y)
    stamps = [time.perf_counter()]
    for x, y in zip(xs[warmup:], ys[warmup:]):
        step(x, y)
        stamps.append(time.perf_counter())
    del model
    return batch / float(np.median(np.diff(stamps)))


# ---- main -------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", default=os.environ.get(
        "DIST_CTR_PEER_DIR", str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dist_ctr_peer")))
    ap.add_argument("--models", default="", help=f"comma-separated; default: {','.join(DEFAULT_MODELS)}")
    ap.add_argument("--train-rows", type=int, default=400_000)
    ap.add_argument("--test-rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3, help="batches trained untimed first, on both sides")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--vocab-cap", type=int, default=0,
                    help="cap every vocabulary at this size (0: the criteo-kaggle preset's); the peer's dense "
                    "Adagrad touches every row of every table each step, so its speed depends on this")
    ap.add_argument("--lrs", default="0.01", help="comma-separated Adagrad learning rates, each used on both sides")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help="ours: comma-separated <fused sparse optimizer>/<mean|sum loss>/<peer|engine init>; "
                    "the first is the headline")
    ap.add_argument("--sparse-eps", type=float, default=1e-10,
                    help="eps of our fused sparse optimizer (default: torch.optim.Adagrad's, the peer's)")
    ap.add_argument("--chunk", type=int, default=8, help="batches per paired timing chunk")
    ap.add_argument("--peer-step-steps", type=int, default=10, help="steps for the 'peer step' figure (0: skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--seeds", default="1024", help="comma-separated model seeds (peer: its `seed` argument; "
                    "ours: torch.manual_seed + the Trainer's table seed); the summary averages AUC over them")
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a constructor argument set on both sides for every model that takes it (VALUE a Python "
                    "literal, e.g. --set l2_reg_embedding=0); repeatable")
    ap.add_argument("--breakdown", default="", metavar="BATCHES",
                    help="comma-separated batch sizes: profile the facade per model at each and print where a "
                    "step's time goes (input prep, lookup, embedding backward + update, interaction, tower, loss, "
                    "dense optimizer, engine, python); e.g. --breakdown 256,1024,4096")
    ap.add_argument("--breakdown-steps", type=int, default=8, help="profiled steps per --breakdown batch size")
    ap.add_argument("--breakdown-ops", type=int, default=0, metavar="N",
                    help="with --breakdown, also print the N ops with the most self CPU time (per name and input "
                    "shapes, ms and calls per step)")
    ap.add_argument("--limit", action="store_true",
                    help="also time the facade against its model's limit at --batch (bare embedding step + bare "
                    "dense step, dist_ctr.bench.limit) and print the fraction")
    ap.add_argument("--limit-steps", type=int, default=20, help="timed batches per --limit round")
    ap.add_argument("--limit-rounds", type=int, default=3, help="interleaved rounds of --limit")
    ap.add_argument("--peer-onn-init", action="store_true",
                    help="diagnostic: start the second table of the peer ONN's pair modules at N(0, init_std) as "
                    "its first (the peer leaves it at N(0, 1)); rows are marked peer-onn-init")
    ap.add_argument("--peer-mlr-learners", action="store_true",
                    help="diagnostic: the peer MLR's learners read its base linear models (it reads its region "
                    "models, so its base learners are never used); rows are marked peer-mlr-learners")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {','.join(QUICK_MODELS)}, 60k/20k rows")
    args = ap.parse_args()
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: {item!r} is not KEY=VALUE")
        try:
            SET_BOTH[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise SystemExit(f"--set {key}: {value!r} is not a Python literal") from None
    if args.quick:
        args.train_rows, args.test_rows = min(args.train_rows, 60_000), min(args.test_rows, 20_000)
        args.models = args.models or ",".join(QUICK_MODELS)
        args.peer_step_steps = min(args.peer_step_steps, 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_torchrec()
    dc = import_peer(args.peer_dir)
    lrs = [float(x) for x in args.lrs.split(",") if x]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v == FACADE:
            continue
        parts = v.split("/")
        if len(parts) != 3 or parts[1] not in ("mean", "sum") or parts[2] not in ("peer", "engine"):
            raise SystemExit(f"--variants: {v!r} is not {FACADE!r} or <optimizer>/<mean|sum>/<peer|engine>")
    models = [m for m in (args.models.split(",") if args.models else DEFAULT_MODELS) if m]
    both = [m for m in models if m in MODEL_REGISTRY and hasattr(dc.models, m)]
    for m in [m for m in models if m not in both]:
        print(f"{m}: skipped (not in {'dist_ctr' if m not in MODEL_REGISTRY else 'deepctr_torch'})")

    families = {family(m) for m in both}
    vocabs, vocab_src = vocabularies()
    if args.vocab_cap:
        vocabs, vocab_src = [min(v, args.vocab_cap) for v in vocabs], f"{vocab_src}, capped at {args.vocab_cap:,}"
    datasets: dict[str, DataSet] = {}
    lines: list[str] = []
    n_train, n_all = args.train_rows, args.train_rows + args.test_rows
    if families & {"flat", "multitask"}:
        t0 = time.perf_counter()
        data = make_data(n_all, vocabs, args.data_seed)
        gen_s = time.perf_counter() - t0
        cols, fcols = peer_columns(dc, vocabs, args.dim), peer_columns(COMPAT, vocabs, args.dim)
        if "flat" in families:
            train, test = data.rows(0, n_train), data.rows(n_train, n_all)
            datasets["flat"] = DataSet("flat", train, test, our_schema(vocabs, args.dim), cols, fcols,
                                       to_batches(train, args.batch), to_batches(test, 8192), ("label",),
                                       task_aucs(test.label, test.prob))
        ceiling = task_aucs(data.label[n_train:], data.prob[n_train:])[0]
        lines.append(f"data: {args.train_rows:,} train / {args.test_rows:,} test rows (made in {gen_s:.1f} s), 26 "
                     f"sparse ({vocab_src}; {sum(vocabs):,} rows in all), 13 dense; train CTR "
                     f"{data.label[:n_train].mean():.3f}; AUC of the planted probability on the test rows (ceiling) "
                     f"{ceiling:.4f}")
        if "multitask" in families:
            t0 = time.perf_counter()
            mt = with_conversions(data, vocabs, args.data_seed)
            train, test = mt.rows(0, n_train), mt.rows(n_train, n_all)
            ds = DataSet("multitask", train, test, our_schema(vocabs, args.dim, MULTITASK_LABELS), cols, fcols,
                         to_batches(train, args.batch), to_batches(test, 8192), MULTITASK_LABELS,
                         task_aucs(test.label, test.prob))
            datasets["multitask"] = ds
            lines.append(f"multi-task data ({', '.join(MULTITASK_MODELS)}): the rows above with two labels (made in "
                         f"{time.perf_counter() - t0:.1f} s): ctr (the label above) and ctcvr (click and convert; "
                         f"conversion | click planted, correlated with the click, see dist_ctr/bench/peer_data.py); "
                         f"train rates {train.label.mean(0)[0]:.3f} / {train.label.mean(0)[1]:.3f}; ceiling "
                         f"{ds.ceiling_text()}; AUC = mean of the per-task AUCs on both sides")
    if "sequence" in families:
        t0 = time.perf_counter()
        sq = make_sequence_data(n_all, args.data_seed)
        gen_s = time.perf_counter() - t0
        train, test = sq.rows(0, n_train), sq.rows(n_train, n_all)
        schema = seq_schema(sq, args.dim)
        ds = DataSet("sequence", train, test, schema, seq_peer_columns(dc, sq, args.dim),
                     seq_peer_columns(COMPAT, sq, args.dim),
                     seq_to_batches(train, schema, args.batch), seq_to_batches(test, schema, 8192), ("label",),
                     task_aucs(test.label, test.prob))
        datasets["sequence"] = ds
        lines.append(f"sequence data ({', '.join(SEQUENCE_MODELS)}): {args.train_rows:,} train / {args.test_rows:,} "
                     f"test rows (made in {gen_s:.1f} s): " + ", ".join(f"{k} ({v:,})" for k, v in sq.vocab.items())
                     + ", " + ", ".join(f"{h} (on {t}'s table)" for h, t in sq.history_of.items())
                     + f" with maxlen {sq.maxlen} (mean length {sq.seq_length.mean():.1f}), 1 dense (price); click "
                     "planted on the share of the history in the target's category and first-order effects of "
                     f"user, item and price (dist_ctr/bench/peer_data.py); train CTR "
                     f"{train.label.mean():.3f}; ceiling {ds.ceiling_text()}; AUC of the planted part without the "
                     f"history (user, item, price): {task_aucs(test.label, test.base)[0]:.4f}")
    env = DistEnv()
    init_process_group(env)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
          f"(affinity {len(os.sched_getaffinity(0))}), load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
          f"intra-op threads {torch.get_num_threads()}, inter-op threads {torch.get_num_interop_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} (one process: same settings for both sides)")
    print(f"peer: deepctr_torch {dc.__version__} from {args.peer_dir}")
    for line in lines:
        print(line)
    print(f"hyper-parameters: dim {args.dim}, batch {args.batch}, epochs {args.epochs}, no shuffle, first "
          f"{args.warmup} batches untimed; Adagrad lr {lrs} on both sides (peer: torch.optim.Adagrad over all "
          f"parameters, BCE summed over the batch; ours: fused <optimizer> on embeddings with eps {args.sparse_eps:g} "
          f"+ torch.optim.Adagrad on the dense part; variants {variants} (optimizer/loss reduction/table init))")
    print(f"timing: both sides train side by side in chunks of {args.chunk} batches (rotating order); samples/s = "
          "median over chunks of the chunk rate (whole pass in brackets, median single step after it); speed-up = "
          "median over chunks of peer chunk time / ours chunk time", flush=True)
    print("| model | lr | side | samples/s (pass; step) | speed-up | AUC | dAUC vs peer |")
    print("|---|---|---|---|---|---|---|")

    seeds = [int(x) for x in args.seeds.split(",") if x]
    results: list[dict[str, Any]] = []
    for name in both:
        cfg, changed = our_config(name, getattr(dc.models, name))
        ds = datasets[family(name)]
        if changed:
            print(f"| {name} | | note: our config set to the peer's defaults: "
                  + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()) + " | | | | | |")
        if name in BOTH_SIDES:
            print(f"| {name} | | note: on both sides: "
                  + ", ".join(f"{k} {v!r}" for k, v in BOTH_SIDES[name].items()) + " | | | | | |")
        for lr in lrs:
            for seed in seeds:
                tag = f"{lr:g}" + (f" s{seed}" if len(seeds) > 1 else "")
                row = run_pair(dc, name, ds, cfg, env, variants, lr, seed, args)
                row["data"] = ds.family
                if "note" in row:
                    print(f"| {name} | {tag} | note: {row['note']} | | | | |")
                if "peer" in row:
                    print_line(name, tag, "DeepCTR-Torch fit", row["peer"], None)
                else:
                    print(f"| {name} | {tag} | DeepCTR-Torch: {row.get('peer_error')} | | | | |", flush=True)
                if args.peer_step_steps and "peer" in row:
                    rate = peer_step_rate(dc, name, ds.cols, lr, ds.train, args.batch, args.peer_step_steps, seed,
                                          row.pop("peer_dnn_cols", None))
                    row["peer_step_samples_per_s"] = rate
                    print(f"| {name} | {tag} | DeepCTR-Torch model step, no DataLoader | (-; {rate:,.0f}) | | | |",
                          flush=True)
                for v in variants:
                    r = row["ours"].get(v, {"error": "not run"})
                    if "error" in r:
                        print(f"| {name} | {tag} | ours {v}: {r['error']} | | | | |", flush=True)
                    else:
                        print_line(name, tag, f"ours {v}", r, row.get("peer"))
                row.pop("peer_dnn_cols", None)
                if args.breakdown and seed == seeds[0] and lr == lrs[0]:
                    row["breakdown_ms_per_step"] = breakdowns(
                        name, ds, lr, seed, [int(b) for b in args.breakdown.split(",") if b], args.breakdown_steps,
                        args.sparse_eps, args.breakdown_ops)
                if args.limit and seed == seeds[0] and lr == lrs[0]:
                    row["facade_limit"] = facade_limit(name, ds, lr, seed, args.batch, args.sparse_eps,
                                                       args.limit_steps, args.limit_rounds)
                results.append(row)
    print_summary(results, variants, {k: d.ceiling_text() for k, d in datasets.items()})
    if args.json:
        first = next(iter(datasets.values()), None)
        meta = {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "args": vars(args), "vocab_source": vocab_src,
                "auc_ceiling": float(np.mean(first.ceilings)) if first is not None else None,
                "data_sets": {k: {"auc_ceilings": dict(zip(d.task_names, d.ceilings))} for k, d in datasets.items()}}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def task_text(aucs: dict[str, float]) -> str:
    """`` (ctr 0.7712, ctcvr 0.8012)`` for several tasks."""
    return " (" + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items()) + ")"


def mean_tasks(sides: list[dict[str, Any]]) -> dict[str, float]:
    """Each task's AUC averaged over runs (empty for single-task runs)."""
    if not sides or "task_aucs" not in sides[0]:
        return {}
    return {k: float(np.mean([s["task_aucs"][k] for s in sides])) for k in sides[0]["task_aucs"]}


def print_line(name: str, tag: str, side: str, r: dict[str, Any], peer: Optional[dict[str, Any]]) -> None:
    """One table row; with several tasks the AUC is their mean, the per-task AUCs (and dAUCs) in brackets."""
    speed = dauc = ""
    if peer is not None and "speedup" in r:
        speed = f"{r['speedup']:.2f}x ({r['pass_samples_per_s'] / peer['pass_samples_per_s']:.2f}x)"
        dauc = f"{r['auc'] - peer['auc']:+.4f}"
        if "task_aucs" in r and "task_aucs" in peer:
            dauc += " (" + ", ".join(f"{k} {v - peer['task_aucs'][k]:+.4f}" for k, v in r["task_aucs"].items()) + ")"
    tasks = task_text(r["task_aucs"]) if "task_aucs" in r else ""
    print(f"| {name} | {tag} | {side} | {r['samples_per_s']:,.0f} ({r['pass_samples_per_s']:,.0f}; "
          f"{r['median_step_samples_per_s']:,.0f}) | {speed} | {r['auc']:.4f}{tasks} | {dauc} |", flush=True)


def print_summary(results: list[dict[str, Any]], variants: list[str], ceilings: dict[str, str]) -> None:
    """The headline table (first variant) per (model, lr), over seeds: median samples/s and speed-up, mean AUC
    (with several tasks: the mean over tasks, and each task's mean over seeds in brackets); then the worst cases
    of every variant. ``ceilings``: data set -> its planted AUC, as text."""
    head = variants[0]
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["model"], row["lr"]), []).append(row)

    def agg(rows: list[dict[str, Any]], v: str) -> Optional[dict[str, float]]:
        ok = [r for r in rows if r.get("peer") and "speedup" in r["ours"].get(v, {})]
        if not ok:
            return None
        med = lambda f: float(np.median([f(r) for r in ok]))  # noqa: E731
        return {"peer_rate": med(lambda r: r["peer"]["samples_per_s"]),
                "ours_rate": med(lambda r: r["ours"][v]["samples_per_s"]),
                "speedup": med(lambda r: r["ours"][v]["speedup"]),
                "pass_speedup": med(lambda r: r["ours"][v]["pass_samples_per_s"] / r["peer"]["pass_samples_per_s"]),
                "peer_auc": float(np.mean([r["peer"]["auc"] for r in ok])),
                "ours_auc": float(np.mean([r["ours"][v]["auc"] for r in ok])),
                "peer_tasks": mean_tasks([r["peer"] for r in ok]),
                "ours_tasks": mean_tasks([r["ours"][v] for r in ok]),
                "dauc_sd": float(np.std([r["ours"][v]["auc"] - r["peer"]["auc"] for r in ok])), "n": len(ok)}

    n_seeds = max(len(g) for g in groups.values()) if groups else 0
    ceiling = (f"AUC ceiling {next(iter(ceilings.values()))}" if len(ceilings) == 1
               else "AUC ceilings: " + "; ".join(f"{k} {c}" for k, c in ceilings.items()))
    print(f"\nsummary (ours = {head}; samples/s = median chunk rate, speed-up = median paired chunk ratio with the "
          f"whole-pass ratio in brackets; over {n_seeds} seed(s): median rates, mean AUC; {ceiling}):")
    print("| model | lr | peer samples/s | ours samples/s | speed-up | peer AUC | ours AUC | dAUC |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, lr), rows in groups.items():
        a = agg(rows, head)
        if a is None:
            errs = [r.get("peer_error") or r["ours"].get(head, {}).get("error") for r in rows]
            print(f"| {model} | {lr:g} | failed: {next((e for e in errs if e), '?')} | | | | | |")
            continue
        sd = f" (sd {a['dauc_sd']:.4f})" if a["n"] > 1 else ""
        pt = task_text(a["peer_tasks"]) if a["peer_tasks"] else ""
        ot = task_text(a["ours_tasks"]) if a["ours_tasks"] else ""
        print(f"| {model} | {lr:g} | {a['peer_rate']:,.0f} | {a['ours_rate']:,.0f} | {a['speedup']:.2f}x "
              f"({a['pass_speedup']:.2f}x) | {a['peer_auc']:.4f}{pt} | {a['ours_auc']:.4f}{ot} | "
              f"{a['ours_auc'] - a['peer_auc']:+.4f}{sd} |")
    for v in variants:
        aggs = {k: agg(rows, v) for k, rows in groups.items()}
        ok = {k: a for k, a in aggs.items() if a is not None}
        if not ok:
            continue
        slow = min(ok, key=lambda k: ok[k]["ours_rate"])
        worst = min(ok, key=lambda k: ok[k]["speedup"])
        bad = min(ok, key=lambda k: ok[k]["ours_auc"] - ok[k]["peer_auc"])
        print(f"ours {v}: slowest {slow[0]} (lr {slow[1]:g}) {ok[slow]['ours_rate']:,.0f} samples/s; lowest "
              f"speed-up {worst[0]} {ok[worst]['speedup']:.2f}x; worst dAUC {bad[0]} "
              f"{ok[bad]['ours_auc'] - ok[bad]['peer_auc']:+.4f}")


if __name__ == "__main__":
    main()
