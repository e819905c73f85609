"""Same start, same steps: does dist_ctr's model train exactly like DeepCTR-Torch's when the two differ in nothing?

Not a test: prints figures, asserts nothing. The multi-seed AUC bench (``scripts/bench_peer_deepctr.py``) compares
independently initialised runs, so its per-seed differences mix init luck with real differences. This script
removes the luck: it builds the peer's model (DeepCTR-Torch 0.2.9, imported as the bench does), copies its initial
weights into ours (embedding tables, linear weights, every dense layer), then trains both on the same batches and
prints, after each of the first steps, the largest difference of their held-out predictions and both AUCs.

Knobs that separate the two libraries' remaining conventions:
  - ``--variant <sparse optimizer>/<mean|sum>``: our fused sparse optimizer (``adagrad`` is the peer's exact
    Adagrad) and loss reduction (DeepCTR-Torch sums BCE over the batch; the engine takes the mean; under Adagrad
    they differ only through eps 1e-10, which damps mean-sized gradients);
  - ``--l2``: ``l2_reg_embedding`` = ``l2_reg_linear`` on both sides (the peer decays whole tables every step and
    adds the term to the summed loss; ours penalises looked-up rows, added to the mean loss).

Models: those in ``WEIGHT_MAP`` (how each of our parameters is named in the peer's ``state_dict``).

Usage:
    PEER_DIR=$(scripts/peer_env.sh)
    .venv/bin/python scripts/peer_trajectory.py --peer-dir "$PEER_DIR" --model IFM --variant adagrad/sum --l2 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dist_ctr.bench import peer as bench  # the bench's peer import, config mapping and runners
from dist_ctr.bench.peer_data import SPARSE_NAMES, Data, make_data, our_schema, task_aucs, to_batches, vocabularies
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.train.job import quiet_torchrec

# ours (parameter-name suffix) -> peer state_dict key, per model; embedding tables are mapped by table name.
WEIGHT_MAP: dict[str, dict[str, str]] = {
    "IFM": {
        "linear.dense_weight.weight": "linear_model.weight",  # (1, 13) vs (13, 1): transposed
        "out.bias": "out.bias",
        "factor_estimating_net.layers.0.weight": "factor_estimating_net.linears.0.weight",
        "factor_estimating_net.layers.0.bias": "factor_estimating_net.linears.0.bias",
        "factor_estimating_net.layers.2.weight": "factor_estimating_net.linears.1.weight",
        "factor_estimating_net.layers.2.bias": "factor_estimating_net.linears.1.bias",
        "transform_weight_matrix_P.weight": "transform_weight_matrix_P.weight",
    },
    "CCPM": {
        "linear.dense_weight.weight": "linear_model.weight",
        "out.bias": "out.bias",
        "conv_layer.conv_layer.0.weight": "conv_layer.conv_layer.0.weight",
        "conv_layer.conv_layer.0.bias": "conv_layer.conv_layer.0.bias",
        "conv_layer.conv_layer.3.weight": "conv_layer.conv_layer.3.weight",
        "conv_layer.conv_layer.3.bias": "conv_layer.conv_layer.3.bias",
        "dnn.layers.0.weight": "dnn.linears.0.weight",
        "dnn.layers.0.bias": "dnn.linears.0.bias",
        "dnn_linear.weight": "dnn_linear.weight",
    },
}


def copy_peer_into_ours(peer: torch.nn.Module, ours: torch.nn.Module, name: str) -> None:
    """Every parameter of ``ours`` set from ``peer``: tables by name (a linear table's 4 columns all get the peer's
    dim-1 weight, so their mean is it), dense parameters through ``WEIGHT_MAP[name]``; fails on any left out."""
    ps = peer.state_dict()
    done: set[str] = set()
    with torch.no_grad():
        for table, shard in bench.table_shards(ours):
            src = (ps[f"linear_model.embedding_dict.{table[len('linear__'):]}.weight"] if table.startswith("linear__")
                   else ps[f"embedding_dict.{table}.weight"])
            row0 = shard.metadata.shard_offsets[0]
            shard.tensor.copy_(src[row0:row0 + shard.tensor.shape[0]].expand(-1, shard.tensor.shape[1]))
        named = dict(ours.named_parameters())
        for suffix, peer_key in WEIGHT_MAP[name].items():
            hits = [k for k in named if k.endswith(suffix)]
            if len(hits) != 1:
                raise SystemExit(f"{name}: our parameter *{suffix} matched {hits}")
            named[hits[0]].copy_(ps[peer_key].reshape(named[hits[0]].shape) if ps[peer_key].dim() < 2
                                 or ps[peer_key].shape == named[hits[0]].shape else ps[peer_key].t())
            done.add(hits[0])
        left = [k for k in named if k not in done and "embedding" not in k and "linear_weights" not in k]
        if left:
            raise SystemExit(f"{name}: parameters not copied from the peer: {left}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", default=str(Path.home() / ".cache" / "dist_ctr_peer"))
    ap.add_argument("--model", default="IFM", choices=sorted(WEIGHT_MAP))
    ap.add_argument("--variant", default="adagrad/sum", help="<fused sparse optimizer>/<mean|sum>")
    ap.add_argument("--l2", type=float, default=0.0, help="l2_reg_embedding = l2_reg_linear, both sides")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sparse_opt, reduction = args.variant.split("/")
    quiet_torchrec()
    dc = bench.import_peer(args.peer_dir)
    vocabs, _ = vocabularies()
    B = 4096
    data = make_data(B * args.steps + 20_000, vocabs, 7)
    train, test = data.rows(0, B * args.steps), data.rows(B * args.steps, B * args.steps + 20_000)
    bench.SET_BOTH.update(l2_reg_embedding=args.l2, l2_reg_linear=args.l2)
    peer_cls = getattr(dc.models, args.model)
    cfg, _ = bench.our_config(args.model, peer_cls)
    cols = bench.peer_columns(dc, vocabs, 16)
    dnn_cols = [c for c in cols if isinstance(c, dc.inputs.SparseFeat)] if args.model in bench.SPARSE_ONLY_DNN else None
    if dnn_cols is not None:
        cfg = {**cfg, "dnn_feature_names": tuple(SPARSE_NAMES)}
    env = DistEnv()
    init_process_group(env)
    ours = bench.OursRunner(args.model, cfg, our_schema(vocabs, 16), env, f"{sparse_opt}/{reduction}/engine",
                            args.lr, B, args.seed, 1e-10)
    peer = bench.peer_model(dc, args.model, cols, args.seed, dnn_cols)
    copy_peer_into_ours(peer, ours.trainer.dmp, args.model)
    opt = torch.optim.Adagrad(peer.parameters(), lr=args.lr)

    def peer_x(d: Data) -> torch.Tensor:  # (N, columns) in the peer's feature_index order, as its fit builds
        x = bench.peer_x(d)
        return torch.from_numpy(np.concatenate([np.asarray(x[f], np.float32).reshape(len(d), -1)
                                                for f in peer.feature_index], axis=1))

    x_test, test_batches = peer_x(test), to_batches(test, 8192)
    def auc(p: np.ndarray) -> float:  # held-out AUC of predictions (N,)
        return task_aucs(test.label, p.reshape(-1, 1))[0]

    print(f"{args.model}: peer's init copied into ours; ours {sparse_opt} / {reduction} loss; l2 {args.l2:g}; "
          f"Adagrad lr {args.lr}; {len(test):,} held-out rows")
    print("| step | max abs diff of predicted p | mean p peer / ours | AUC peer | AUC ours |")
    print("|---|---|---|---|---|")
    for step in range(args.steps + 1):
        if step:
            i = step - 1
            rows = train.rows(i * B, (i + 1) * B)
            opt.zero_grad()
            loss = F.binary_cross_entropy(peer(peer_x(rows)).squeeze(1), torch.from_numpy(rows.label.reshape(-1)),
                                          reduction="sum") + peer.get_regularization_loss()
            loss.backward()
            opt.step()
            ours.trainer.train_step(to_batches(rows, B)[0])
        peer.eval()
        with torch.no_grad():
            pp = peer(x_test).numpy().astype(np.float64).reshape(-1)
        peer.train()
        po = ours.trainer.predict(test_batches).numpy().astype(np.float64).reshape(-1)
        print(f"| {step} | {np.abs(pp - po).max():.2e} | {pp.mean():.4f} / {po.mean():.4f} | {auc(pp):.4f} | "
              f"{auc(po):.4f} |", flush=True)


if __name__ == "__main__":
    main()
