"""DLRM-DCNv2 (MLPerf shape) training speed on multi-hot synthetic Criteo-1TB batches, one process.

Builds the ``criteo-1tb-multihot`` schema (214 ids per row, dim 128) with every table capped at ``--max-rows``
(``--full``: the MLPerf sizes, for a GPU machine with the memory), the model ``DLRM_DCNv2`` at MLPerf's layer
sizes, and trains it with Adagrad (lr 0.004, eps 1e-8) on random fixed-size bags. Prints:

- samples/s of this worker (wall clock, no profiler; the median of ``--rounds`` rounds) and the time to
  ``--samples`` samples at that rate;
- the time split from ``torch.profiler`` over ``--profile-steps`` steps: embedding lookup (forward and backward of
  the EBC), interaction (the cross network), MLPs (bottom and top, forward and backward), optimizer. The backward is
  run stage by stage (top MLP, cross network, bottom MLP, embeddings) on detached stage outputs, which gives the
  same gradients as one ``loss.backward()`` and lets each stage carry its own profiler label;
- the throughput model's prediction for this worker (``dist_ctr.distributed.throughput.step_cost`` with ``W = 1``)
  from rates measured here by two micro-benchmarks (dense fwd+bwd FLOP/s of the MLP/cross-network matmuls, bytes/s
  of the embedding forward + backward + optimizer) taken in each round right after its timed steps, so a change of
  the machine's load meets both alike; measured / predicted of the medians and of each round.

Prints figures, asserts nothing. Usage:
    python scripts/bench_criteo_1tb.py [--batch 2048] [--steps 10] [--max-rows 10000] [--device cpu] [--full]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.presets import MLPERF_MULTIHOT_SIZES, get_preset
from dist_ctr.distributed.throughput import BWD_MULTIPLIER, DeviceProfile, bag_sizes, dense_matmul_params, step_cost
from dist_ctr.models import build_model
from dist_ctr.sparse.arch import materialize

LABELS = ("embedding", "interaction", "mlps", "optimizer")


def make_batch(schema, batch: int, device: torch.device, rng: np.random.Generator):
    names = schema.sparse_names
    sizes = [schema.feature(n).vocabulary_size for n in names]
    lengths = np.repeat(np.asarray(MLPERF_MULTIHOT_SIZES, dtype=np.int32), batch)  # key-major (F * B,)
    ids = np.concatenate([rng.integers(0, v, size=b * batch) for v, b in zip(sizes, MLPERF_MULTIHOT_SIZES)])
    kjt = KeyedJaggedTensor(keys=names, values=torch.from_numpy(ids).to(device),
                            lengths=torch.from_numpy(lengths).to(device))
    dense = torch.rand(batch, len(schema.dense_names), device=device)
    labels = (torch.rand(batch, 1, device=device) < 0.03).float()
    return dense, kjt, labels


def train_step(model, opt, dense, kjt, labels) -> None:
    with record_function("mlps"):
        d = model.dense_arch(dense)  # (B, D)
    with record_function("embedding"):
        e = model.sparse_arch(kjt).pooled  # (B, F, D)
    d_, e_ = d.detach().requires_grad_(), e.detach().requires_grad_()
    with record_function("interaction"):
        x = model.inter_arch(d_, e_)  # (B, (F + 1) D)
    x_ = x.detach().requires_grad_()
    with record_function("mlps"):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.over_arch(x_), labels)
        loss.backward()
    with record_function("interaction"):
        x.backward(x_.grad)
    with record_function("mlps"):
        d.backward(d_.grad)
    with record_function("embedding"):
        e.backward(e_.grad)
    with record_function("optimizer"):
        opt.step()
        opt.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()  # host sync


def measure_rates(model, dense, kjt, labels, opt, device, reps: int = 1) -> tuple[float, float]:
    """(dense FLOP/s of the matmul stages fwd+bwd, embedding bytes/s fwd+bwd+update) measured on this batch."""
    B = dense.shape[0]
    P = dense_matmul_params(model)
    t_dense = t_emb = 0.0
    for _ in range(reps):
        d = dense.clone().requires_grad_()
        sync(device); t0 = time.perf_counter()
        e = torch.randn(B, model.num_sparse_features, model.embedding_dim, device=device, requires_grad=True)
        out = model.over_arch(model.inter_arch(model.dense_arch(d), e))
        torch.nn.functional.binary_cross_entropy_with_logits(out, labels).backward()
        sync(device); t1 = time.perf_counter()
        pooled = model.sparse_arch(kjt).pooled
        pooled.backward(torch.ones_like(pooled))
        opt.step(); opt.zero_grad(set_to_none=True)
        sync(device); t2 = time.perf_counter()
        t_dense += t1 - t0
        t_emb += t2 - t1
    emb_bytes = B * sum(MLPERF_MULTIHOT_SIZES) * model.embedding_dim * 4 * (1 + BWD_MULTIPLIER)
    return 6.0 * P * B * reps / t_dense, emb_bytes * reps / t_emb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of timed steps and rate measurements")
    p.add_argument("--max-rows", type=int, default=10_000)
    p.add_argument("--full", action="store_true", help="MLPerf table sizes (about 100 GiB of fp32 weights)")
    p.add_argument("--samples", type=float, default=4_195_197_692)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    schema = get_preset("criteo-1tb-multihot", max_rows=None if args.full else args.max_rows)
    model = build_model("DLRM_DCNv2", schema, {})  # embeddings on meta, dense layers on the CPU
    model = materialize(model, device).to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.004, eps=1e-8)
    rng = np.random.default_rng(0)
    batches = [make_batch(schema, args.batch, device, rng) for _ in range(2)]
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"rows per table <= {'MLPerf' if args.full else args.max_rows}, dense matmul params "
          f"{dense_matmul_params(model):,}")
    train_step(model, opt, *batches[0])  # warm-up
    measure_rates(model, *batches[0], opt, device, reps=1)  # warm-up
    from dist_ctr.distributed.memory import ShardPlacement, TablePlacement

    tables = [TablePlacement(n, schema.feature(n).vocabulary_size, model.embedding_dim, True, "table_wise", "fused",
                             (ShardPlacement(0, 0, 0, schema.feature(n).vocabulary_size, model.embedding_dim,
                                             0, 0, 0, 0, 0, 0, "formula"),)) for n in schema.sparse_names]
    rounds = []  # (measured samples/s, predicted samples/s, dense FLOP/s, embedding B/s): interleaved, so a change
    for _ in range(args.rounds):  # of the machine's load hits both sides of a round alike
        sync(device); t0 = time.perf_counter()
        for i in range(args.steps):
            train_step(model, opt, *batches[i % 2])
        sync(device); dt = time.perf_counter() - t0
        flops, hbm = measure_rates(model, *batches[0], opt, device, reps=1)
        rates = DeviceProfile("measured", flops, hbm, 1e12, 1e12, 1, "this run")
        c = step_cost(tables, bag_sizes(schema), args.batch, 1, dense_matmul_params(model), rates)
        rounds.append((args.steps * args.batch / dt, c.samples_per_s, flops, hbm))
    sps, pred, flops, hbm = (float(np.median([r[k] for r in rounds])) for k in range(4))
    print(f"samples/s per worker: {sps:,.0f}  ({args.batch / sps * 1e3:.1f} ms/step, median of {args.rounds} rounds "
          f"of {args.steps} steps); time to {args.samples:,.0f} samples at this rate: {args.samples / sps / 3600:.1f} h")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(args.profile_steps):
            train_step(model, opt, *batches[i % 2])
        sync(device)
    times = {e.key: (e.device_time_total if device.type == "cuda" else e.cpu_time_total)
             for e in prof.key_averages() if e.key in LABELS}
    total = sum(times.values()) or 1.0
    print("time split (profiler): " + ", ".join(f"{k} {times.get(k, 0.0) / total:.0%}" for k in LABELS))
    print(f"measured rates (medians): dense {flops / 1e9:.1f} GFLOP/s, embedding {hbm / 1e9:.2f} GB/s; throughput "
          f"model predicts {pred:,.0f} samples/s; measured / predicted = {sps / pred:.2f} (per round: "
          + ", ".join(f"{m / q:.2f}" for m, q, _, _ in rounds) + ")")


if __name__ == "__main__":
    main()
