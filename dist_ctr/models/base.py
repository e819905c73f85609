"""``CTRModel``: the contract every model keeps.

``forward(dense: Tensor (B, n_dense), sparse: KeyedJaggedTensor) -> logits Tensor (B, T)``. Embeddings live in
TorchRec modules (:class:`~dist_ctr.sparse.SparseArch`, :class:`~dist_ctr.sparse.LinearArch`) built on ``meta``;
dense layers are ordinary modules. Extra loss terms computed during ``forward`` (DIEN's auxiliary loss, L2 on the
batch's embeddings) are recorded with :meth:`add_loss` and collected by ``CTRTask`` right after the call.

Regularisation follows DeepCTR's ``l2_reg_*`` arguments with one deliberate difference for scale:
``l2_reg_embedding`` (and, in IFM and MLR, ``l2_reg_linear`` on their per-feature linear weights) penalise the
embeddings *looked up in the batch* (``l2 * sum(e ** 2) / B``) instead of decaying every row of every table each
step, which a sharded table of billions of rows cannot afford. The other models' ``l2_reg_linear`` penalises the
dense weights of their linear part only. Dense weights are penalised in full, as in DeepCTR.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.schema import FeatureSchema


EMBEDDING_L2 = "l2_embedding"  # the loss name of the batch L2 on looked-up embeddings (CTRTask scales it under "sum")


class CTRModel(nn.Module):
    """Base class. Subclasses build their modules in ``__init__`` and implement ``forward``.

    Args:
        schema (FeatureSchema): features and labels; ``T = max(1, len(schema.labels))`` unless ``num_tasks``.
        num_tasks (int | None): output width ``T``.
    """

    def __init__(self, schema: FeatureSchema, num_tasks: int | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.num_tasks = num_tasks if num_tasks is not None else max(1, len(schema.labels))
        self._losses: dict[str, torch.Tensor] = {}
        self._dense_l2: list[tuple[float, list[torch.Tensor]]] = []

    @property
    def embedding_init_std(self) -> float | None:
        """Std of the ``N(0, std ** 2)`` embedding init (the config's DeepCTR ``init_std``); ``None``: uniform.

        Read by :func:`dist_ctr.sparse.init.embedding_init_std` when tables are materialised or sharded.
        """
        return getattr(getattr(self, "config", None), "init_std", None)

    # ---- extra losses -------------------------------------------------------------------------------------
    def add_loss(self, name: str, value: torch.Tensor) -> None:
        """Record a scalar loss term during ``forward`` (summed into the training loss by ``CTRTask``)."""
        self._losses[name] = self._losses[name] + value if name in self._losses else value

    def add_embedding_l2(self, l2: float, *embeddings: torch.Tensor) -> None:
        """L2 on looked-up embeddings ``(B, ...)``, averaged over the batch (see module docstring)."""
        if l2 > 0 and self.training:
            for e in embeddings:
                self.add_loss(EMBEDDING_L2, l2 * e.pow(2).sum() / max(1, e.shape[0]))

    def register_l2(self, l2: float, params: Iterable[torch.Tensor]) -> None:
        """Penalise dense parameters with ``l2 * sum(w ** 2)`` each training step (DeepCTR semantics)."""
        if l2 > 0:
            self._dense_l2.append((l2, list(params)))

    def pop_losses(self) -> dict[str, torch.Tensor]:
        """Losses recorded since the last call, plus the dense L2 terms; clears the record."""
        out = self._losses
        self._losses = {}
        if self.training and self._dense_l2:
            reg = sum(l2 * sum(p.pow(2).sum() for p in ps) for l2, ps in self._dense_l2)
            out["l2_dense"] = reg  # type: ignore[assignment]
        return out

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:  # pragma: no cover
        """Abstract: every registered model returns logits ``(B, T)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward")
