"""Optimizers: fused sparse optimizers applied in backward, dense optimizers for the rest.

Embedding tables are updated inside the backward pass by FBGEMM's fused TBE kernels once DMP shards them
(``apply_optimizer_in_backward`` marks the parameters before sharding; DMP turns the marks into fused params).
Everything else (the dense part, DDP-wrapped above world size 1) gets a torch optimizer; both are combined into one
``CombinedOptimizer`` whose ``state_dict`` holds the sparse state as sharded tensors (checkpointed with DCP).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from dist_ctr.config import DenseOptimConfig, SparseOptimConfig


def sparse_optimizer_spec(cfg: SparseOptimConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """(optimizer class, kwargs) understood by ``apply_optimizer_in_backward`` and TorchRec's fused TBE."""
    if cfg.name == "rowwise_adagrad":
        return RowWiseAdagrad, {"lr": cfg.lr, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.name == "adagrad":
        return torch.optim.Adagrad, {"lr": cfg.lr, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.name == "adam":
        return torch.optim.Adam, {"lr": cfg.lr, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.name == "sgd":
        return torch.optim.SGD, {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    raise ValueError(f"optim.sparse.name: unknown optimizer {cfg.name!r}")


def _collections(module: nn.Module) -> list[nn.Module]:
    """Every TorchRec EmbeddingBagCollection / EmbeddingCollection in ``module``."""
    from torchrec import EmbeddingBagCollection, EmbeddingCollection

    return [m for m in module.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))]


def embedding_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of every TorchRec EmbeddingBagCollection / EmbeddingCollection in ``module``."""
    return [p for m in _collections(module) for p in m.parameters()]


def mark_fused_sparse(module: nn.Module, cfg: SparseOptimConfig) -> None:
    """Attach the fused optimizer to every embedding parameter (before DMP)."""
    cls, kwargs = sparse_optimizer_spec(cfg)
    params = embedding_parameters(module)
    if params:
        apply_optimizer_in_backward(cls, params, kwargs)


# torch optimizers with a fused (one kernel over all parameters) implementation on CPU and CUDA.
FUSED_DENSE = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad,
               "sgd": torch.optim.SGD}
DENSE = {**FUSED_DENSE, "rmsprop": torch.optim.RMSprop}


def dense_optimizer(params: Iterable[tuple[str, nn.Parameter]], cfg: DenseOptimConfig) -> KeyedOptimizerWrapper:
    """The dense optimizer over ``params``: the fused implementation where torch has one (Adam, AdamW, Adagrad,
    SGD), else the multi-tensor (``foreach``) one; same update rule as the per-parameter loop, one pass over
    all tensors per step instead of a few small kernels per parameter."""
    named = dict(params)
    if cfg.name not in DENSE:
        raise ValueError(f"optim.dense.name: unknown optimizer {cfg.name!r}")
    cls = DENSE[cfg.name]
    fast = {"fused": True} if cfg.name in FUSED_DENSE else {"foreach": True}

    def make(ps: Any) -> torch.optim.Optimizer:
        return cls(ps, lr=cfg.lr, weight_decay=cfg.weight_decay, **fast)

    return KeyedOptimizerWrapper(named, make)


def combined_optimizer(dmp: nn.Module, cfg: DenseOptimConfig) -> CombinedOptimizer:
    """Fused sparse optimizer of the DMP + a dense optimizer over the non-fused parameters."""
    dense = dense_optimizer(in_backward_optimizer_filter(dmp.named_parameters(), include=False), cfg)
    materialize_state(dense)
    return CombinedOptimizer([("sparse", dmp.fused_optimizer), ("dense", dense)])  # type: ignore[attr-defined]


def materialize_state(opt: KeyedOptimizerWrapper) -> None:
    """Create the optimizer's state up front, equal to a fresh optimizer's (zeros, step 0).

    Checkpoint loading fills tensors that exist in the target state dict; torch optimizers create their state
    lazily, so without this a restored job would silently restart Adam's moments.
    """
    params = [p for p in opt.params.values()]
    saved = [p.detach().clone() for p in params]
    opt.init_state()
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
            p.grad = None
    for st in opt.state.values():
        if "step" in st:
            st["step"] = torch.zeros_like(st["step"]) if isinstance(st["step"], torch.Tensor) else 0
