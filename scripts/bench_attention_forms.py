"""AutoInt's field attention in two forms on this machine: the interacting layer's two batched matmuls over all
heads (``dist_ctr.layers.field_attention.InteractingLayer``) against torch's ``scaled_dot_product_attention`` per
head (its CPU flash kernel), the same layer weights, forward and backward.

Prints figures; asserts nothing. CPU milliseconds of a forward + backward at ``--batch`` rows of ``--fields``
fields, ``--rounds`` interleaved rounds of ``--steps`` calls each, and the median paired ratio (> 1: the layer's
form is faster). It also prints the largest difference between the two outputs.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_attention_forms.py [--batch 1024] [--fields 26]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from dist_ctr.layers.field_attention import InteractingLayer


def sdpa_forward(layer: InteractingLayer, inputs: torch.Tensor) -> torch.Tensor:
    """The layer's maths with each head through ``scaled_dot_product_attention``: ``(B, F, D) -> (B, F, D)``."""
    B, Fn, D = inputs.shape
    H, d = layer.head_num, layer.att_embedding_size
    weights = [layer.W_Query, layer.W_key, layer.W_Value] + ([layer.W_Res] if layer.W_Res is not None else [])
    q, k, v, *res = (inputs @ torch.cat(weights, dim=1)).split(D, dim=2)  # (B, F, D) each
    q, k, v = (t.view(B, Fn, H, d).transpose(1, 2) for t in (q, k, v))  # (B, H, F, d) each
    scale = d**-0.5 if layer.scaling else 1.0
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (B, H, F, d)
    out = out.transpose(1, 2).reshape(B, Fn, D)  # (B, F, D) heads concatenated in order
    if res:
        out = out + res[0]
    return F.relu(out)


def timed(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--fields", type=int, default=26)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    layer = InteractingLayer(args.dim, args.heads, use_res=True, scaling=False)
    x = torch.randn(args.batch, args.fields, args.dim, requires_grad=True)
    g = torch.randn(args.batch, args.fields, args.dim)
    with torch.no_grad():
        diff = float((sdpa_forward(layer, x) - layer(x)).abs().max())

    def two_bmm() -> None:
        layer(x).backward(g)

    def sdpa() -> None:
        sdpa_forward(layer, x).backward(g)

    for step in (two_bmm, sdpa, two_bmm, sdpa):
        step()
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(timed(two_bmm, args.steps))
        theirs.append(timed(sdpa, args.steps))
    print(f"machine: {torch.get_num_threads()} intra-op threads; torch {torch.__version__}")
    print(f"AutoInt attention, batch {args.batch}, {args.fields} fields, dim {args.dim}, {args.heads} heads, "
          f"forward + backward, ms per call over {args.rounds} rounds of {args.steps}:")
    print(f"  two batched matmuls (InteractingLayer): median {statistics.median(ours):.2f}")
    print(f"  scaled_dot_product_attention per head: median {statistics.median(theirs):.2f}")
    ratio = statistics.median(t / o for o, t in zip(ours, theirs))
    print(f"  median paired ratio sdpa / two-bmm: {ratio:.2f}; largest output difference {diff:.1e}")


if __name__ == "__main__":
    main()
