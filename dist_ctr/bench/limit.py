"""A model's limit on this machine: the serial sum of its own two bare steps at the same batch.

- The bare fused embedding step (:class:`ModelLookups`): the model's own lookup modules (every ``SparseArch`` /
  ``LinearArch``, so the same tables and the same fused sparse optimizer), loss = sum of their outputs.
- The bare dense step (:func:`dense_part_step`): the model's own forward with every lookup replaced by fixed
  tensors (one real batch's lookup outputs, as leaves that take gradients), BCE, backward, fused Adam on the dense
  parameters: the interaction layers, towers and heads with nothing of the engine around them.

``limit = 1 / (1 / emb_rate + 1 / dense_rate)`` (:func:`limit_rate`), so a model's samples/s as a fraction of it
means the same for a model with an interaction layer as for one without.

>>> limit_rate(100.0, 100.0)
50.0
"""

from __future__ import annotations

from typing import Callable

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.data.batch import CTRBatch
from dist_ctr.models.base import CTRModel
from dist_ctr.sparse import LinearArch, SparseArch, SparseOutput

__all__ = ["ModelLookups", "dense_part_step", "limit_rate"]


def limit_rate(emb_rate: float, dense_rate: float) -> float:
    """Samples/s of the two bare steps run one after the other."""
    return 1.0 / (1.0 / emb_rate + 1.0 / dense_rate)


class ModelLookups(CTRModel):
    """Bare embedding step of a model: its own lookup modules, loss = sum of their outputs.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, 1)``.
    """

    def __init__(self, model: CTRModel) -> None:
        super().__init__(model.schema)
        self.arches = torch.nn.ModuleList(m for m in model.modules() if isinstance(m, (SparseArch, LinearArch)))
        self.scale = torch.nn.Parameter(torch.tensor(1e-3))  # one dense parameter for the dense optimizer

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        logit = dense.new_zeros(dense.shape[0], 1)  # (B, 1)
        for m in self.arches:
            if isinstance(m, LinearArch):  # its carried weights count with their SparseArch below
                logit = logit + m(dense, sparse, dense.new_zeros(dense.shape[0], 1) if m.carried_names else None)
            else:
                out = m(sparse)
                logit = logit + out.pooled_flat.sum(1, keepdim=True) * self.scale
                if out.linear is not None:  # the linear weights carried in the embedding rows
                    logit = logit + out.linear.sum(dim=(1, 2)).unsqueeze(1)
                for seq in out.sequences.values():
                    logit = logit + seq.sum(dim=(1, 2)).unsqueeze(1) * self.scale  # (B, 1)
        return logit


def _leaf(x: object) -> object:
    """``x`` detached as a leaf that takes gradients (recursing into :class:`SparseOutput`)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.is_floating_point())
    if isinstance(x, SparseOutput):
        return SparseOutput(_leaf(x.pooled), _leaf(x.pooled_flat), {k: _leaf(v) for k, v in x.sequences.items()},
                            dict(x.seq_lengths), _leaf(x.linear))
    return x


def dense_part_step(model: CTRModel, batch: CTRBatch) -> Callable[[CTRBatch], None]:
    """A step of ``model``'s dense part alone (see the module docstring).

    ``model`` sits in a Trainer (its lookups are sharded modules): their outputs on ``batch`` are captured once,
    then every ``SparseArch`` / ``LinearArch`` of ``model`` returns those fixed tensors, so ``model`` cannot train
    through the engine after this.
    """
    captured: dict[int, object] = {}
    arches = [m for m in model.modules() if isinstance(m, (SparseArch, LinearArch))]
    hooks = [m.register_forward_hook(lambda mod, _a, out: captured.__setitem__(id(mod), out)) for m in arches]
    with torch.no_grad():
        model(batch.dense, batch.sparse)
    for h in hooks:
        h.remove()
    for m in arches:
        fixed = _leaf(captured[id(m)])
        m.forward = lambda *_a, _fixed=fixed, **_k: _fixed  # type: ignore[method-assign]
    params = [p for p in model.parameters() if p.device.type != "meta" and not hasattr(p, "_in_backward_optimizers")]
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3, fused=True)
    model.train()

    def step(b: CTRBatch) -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b.dense, b.sparse), b.labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step
