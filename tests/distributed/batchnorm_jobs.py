"""Worker function for tests/distributed/test_batchnorm.py (importable by spawned processes)."""

from __future__ import annotations

from typing import Any

import torch

from dist_ctr.distributed.batchnorm import convert_global_batchnorm
from dist_ctr.distributed.env import DistEnv


def make_net(channels: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, channels), torch.nn.BatchNorm1d(channels, momentum=0.3),
                               torch.nn.Tanh(), torch.nn.Linear(channels, 1))


def global_inputs(shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*shape, generator=g) * 3 + 1 for _ in range(steps)]


def run(env: DistEnv, shape: tuple[int, ...], steps: int, global_bn: bool = True) -> dict[str, Any]:
    """``steps`` SGD steps of a Linear-BN-Linear net on rank rows of fixed global inputs; ranks split dim 0.

    Inputs ``(B, 4)`` or ``(B, L, 4)`` (then the BN sees ``(B, C, L)``). Returns outputs, parameter gradients
    (DDP-style averaged over ranks) and the BN's running statistics after the last step. ``global_bn=False``
    keeps torch's per-rank ``BatchNorm1d`` (the control).
    """
    C = 5
    net = make_net(C)
    if global_bn:
        convert_global_batchnorm(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    B = shape[0]
    per = B // env.world_size
    lo, hi = env.rank * per, (env.rank + 1) * per
    outs, grads = [], []
    for x in global_inputs(shape, steps):
        xr = x[lo:hi]
        h = net[0](xr)
        if h.dim() == 3:
            h = net[1](h.transpose(1, 2)).transpose(1, 2)
        else:
            h = net[1](h)
        y = net[3](net[2](h))
        loss = y.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        for p in net.parameters():
            if env.world_size > 1:
                torch.distributed.all_reduce(p.grad)
                p.grad /= env.world_size
        grads.append([p.grad.clone() for p in net.parameters()])
        opt.step()
        full = [torch.zeros_like(y) for _ in range(env.world_size)]
        if env.world_size > 1:
            torch.distributed.all_gather(full, y.detach().contiguous())
        else:
            full = [y.detach()]
        outs.append(torch.cat(full))
    bn = net[1]
    # Plain lists cross the process boundary (tensors would go through shared memory owned by the worker).
    return {"outs": [o.tolist() for o in outs], "grads": [[g.tolist() for g in gs] for gs in grads],
            "running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist(),
            "tracked": int(bn.num_batches_tracked), "type": type(bn).__name__}
