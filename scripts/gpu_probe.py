"""Measure the kernel rates the throughput model uses, on whatever device is here (pure torch, no TorchRec).

    python scripts/gpu_probe.py [--device cuda] [--batch 6912] [--quick] [--json OUT.json]

Prints, for this device:
- dense matmul rate (TFLOP/s) at the MLPerf DLRM-DCNv2 tower's shapes, fp32 / tf32 / bf16;
- memory bandwidth (GB/s) of a large device-to-device copy;
- the DLRM-DCNv2 dense part (bottom MLP 13-512-256-128, low-rank cross net 3 x rank 512 over 27 x 128,
  top MLP 1024-1024-512-256-1) forward + backward + Adagrad step at the per-device batch: samples/s in fp32,
  bf16 autocast (fp32 master weights) and, with ``--compile``, torch.compile;
- two pooled-embedding proxies over 26 tables with MLPerf's multi-hot bag sizes (214 ids per row), samples/s:
  one ``nn.EmbeddingBag`` (sum) per table with dense gradients (torch's autograd path), and a table-batched
  step in the manner of FBGEMM's TBE (all tables in one weight, one pooled lookup, the backward as a row-wise
  Adagrad update of the rows looked up, in place) — torch kernels, not FBGEMM's fused ones.

Per-device batch 6912 = MLPerf v4.0's global batch 55,296 over 8 GPUs.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import torch
from torch import nn

from dist_ctr.layers.dlrm import LowRankCrossNet, mlp

BAG_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()  # host sync: timing


def _time(fn: Callable[[], None], device: torch.device, iters: int, warmup: int = 3) -> float:
    """Median seconds per call of ``fn`` over ``iters`` timed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_tflops(device: torch.device, m: int, k: int, n: int, dtype: torch.dtype, tf32: bool, iters: int) -> float:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    reps = 20

    def run() -> None:
        for _ in range(reps):
            torch.mm(a, b)

    dt = _time(run, device, iters) / reps
    torch.backends.cuda.matmul.allow_tf32 = False
    return 2 * m * k * n / dt / 1e12


def copy_gbps(device: torch.device, mib: int, iters: int) -> float:
    x = torch.empty(mib * 2**20 // 4, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    dt = _time(lambda: y.copy_(x), device, iters)
    return 2 * x.numel() * 4 / dt / 1e9  # read + write


class DenseDCNv2(nn.Module):
    """The DLRM-DCNv2 dense part: (dense (B, 13), e (B, 26, 128)) -> logits (B, 1)."""

    def __init__(self, n_dense: int = 13, n_sparse: int = 26, dim: int = 128) -> None:
        super().__init__()
        self.bottom = mlp(n_dense, (512, 256, dim))
        self.cross = LowRankCrossNet((n_sparse + 1) * dim, num_layers=3, low_rank=512)
        self.top = mlp((n_sparse + 1) * dim, (1024, 1024, 512, 256, 1), last_activation=False)

    def forward(self, dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        d = self.bottom(dense)  # (B, D)
        x = torch.cat([d, emb.flatten(1)], dim=1)  # (B, (F + 1) * D)
        return self.top(self.cross(x))  # (B, 1)


def dense_step_rate(device: torch.device, batch: int, mode: str, iters: int) -> float:
    torch.manual_seed(0)
    model = DenseDCNv2().to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.004, eps=1e-8)
    dense = torch.randn(batch, 13, device=device)
    emb = torch.randn(batch, 26, 128, device=device, requires_grad=True)
    labels = torch.randint(0, 2, (batch, 1), device=device).float()
    fwd = torch.compile(model) if mode == "compile_bf16" else model
    use_bf16 = mode in ("bf16", "compile_bf16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = fwd(dense, emb)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        opt.step()

    return batch / _time(step, device, iters, warmup=5 if mode.startswith("compile") else 3)


def dense_flops_per_sample(model: DenseDCNv2) -> float:
    """Forward + backward matmul FLOPs per sample (3 x 2 x weights of every Linear)."""
    return float(sum(6 * m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)))


def embedding_rate(device: torch.device, batch: int, rows: int, dim: int, iters: int) -> tuple[float, float]:
    """(samples/s, GB/s of embedding rows read in forward) for 26 EmbeddingBags with MLPerf bag sizes."""
    torch.manual_seed(0)
    bags = [nn.EmbeddingBag(rows, dim, mode="sum").to(device) for _ in BAG_SIZES]
    inputs = [(torch.randint(0, rows, (batch * s,), device=device),
               torch.arange(0, batch * s, s, device=device)) for s in BAG_SIZES]

    def step() -> None:
        outs = [bag(ids, offs) for bag, (ids, offs) in zip(bags, inputs)]
        torch.stack(outs, 1).sum().backward()  # (B, 26, D) -> scalar

    dt = _time(step, device, iters)
    ids_per_row = sum(BAG_SIZES)
    return batch / dt, batch * ids_per_row * dim * 4 / dt / 1e9


def fused_embedding_rate(device: torch.device, batch: int, rows: int, dim: int, iters: int,
                         lr: float = 0.01, eps: float = 1e-8) -> tuple[float, float]:
    """(samples/s, GB/s of rows read + written) of a table-batched lookup + row-wise Adagrad step, all tables in one
    ``(26 * rows, D)`` weight."""
    torch.manual_seed(0)
    n_tables = len(BAG_SIZES)
    weight = torch.randn(n_tables * rows, dim, device=device) * 0.01
    state = torch.zeros(n_tables * rows, device=device)
    lengths = torch.tensor(BAG_SIZES, device=device).repeat(batch)  # (B * 26,) bag sizes, sample-major
    ids = torch.randint(0, rows, (int(lengths.sum()),), device=device)  # host sync: size
    table_of_id = torch.arange(n_tables, device=device).repeat(batch).repeat_interleave(lengths)
    ids = ids + table_of_id * rows  # global row ids
    offsets = torch.cumsum(lengths, 0) - lengths  # (B * 26,)
    bag_of_id = torch.arange(batch * n_tables, device=device).repeat_interleave(lengths)

    def step() -> None:
        pooled = nn.functional.embedding_bag(ids, weight, offsets, mode="sum")  # (B * 26, D)
        grad = pooled * 1e-3  # stands in for d loss / d pooled, (B * 26, D)
        g = grad.index_select(0, bag_of_id)  # (B * 214, D) gradient per looked-up row
        state.index_add_(0, ids, g.pow(2).mean(1))
        weight.index_add_(0, ids, -lr * g / (state.index_select(0, ids).sqrt() + eps).unsqueeze(1))

    dt = _time(step, device, iters)
    n_ids = batch * sum(BAG_SIZES)
    return batch / dt, 3 * n_ids * dim * 4 / dt / 1e9  # rows read in forward, read + written in the update


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=6912)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows per embedding table (proxy)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the dense part (bf16)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    batch, rows, iters = (256, 10_000, 3) if a.quick else (a.batch, a.rows, 20)
    out: dict[str, object] = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "batch": batch}
    m, k, n = (256, 256, 256) if a.quick else (batch, 3456, 1024)
    out["matmul_tflops"] = {
        "fp32": matmul_tflops(device, m, k, n, torch.float32, False, iters),
        "tf32": matmul_tflops(device, m, k, n, torch.float32, True, iters) if device.type == "cuda" else None,
        "bf16": matmul_tflops(device, m, k, n, torch.bfloat16, False, iters),
    }
    out["copy_gbps"] = copy_gbps(device, 16 if a.quick else 2048, iters)
    out["dense_flops_per_sample"] = dense_flops_per_sample(DenseDCNv2())
    modes = ["fp32", "bf16"] + (["compile_bf16"] if a.compile else [])
    out["dense_step_samples_per_s"] = {md: dense_step_rate(device, batch, md, iters) for md in modes}
    sps, gbps = embedding_rate(device, batch, rows, 128, iters)
    out["embedding_bag_proxy"] = {"samples_per_s": sps, "fwd_row_read_gbps": gbps, "rows_per_table": rows}
    sps, gbps = fused_embedding_rate(device, batch, rows, 128, iters)
    out["table_batched_proxy"] = {"samples_per_s": sps, "row_traffic_gbps": gbps, "rows_per_table": rows}
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
