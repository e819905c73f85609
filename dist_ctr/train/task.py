"""``CTRTask``: model + loss, the module that DistributedModelParallel wraps.

Notation: ``B`` batch, ``T`` tasks.

``forward(batch) -> (loss, (reported, logits.detach(), labels, weights))``, the shape TorchRec's train
pipelines expect. Per task: BCE-with-logits for "binary", MSE for "regression", over the rows of the batch that
count (rows padded by the loader carry ``row_ids == -1`` and weigh 0); the task losses are combined with
``loss_weights`` and the model's extra losses (``CTRModel.pop_losses``: DIEN's auxiliary loss, L2 terms).

``reduction`` says how rows combine:
  - ``"mean"`` (default): each task's loss is the mean over the batch's rows.
  - ``"sum"``: the sum over the *global* batch, DeepCTR-Torch's ``reduction='sum'``. Gradients are averaged over
    ranks (DDP for dense layers, TorchRec's gradient division for embeddings), so each rank's sum is scaled by
    ``world_size``. The batch-L2 on looked-up embeddings (``EMBEDDING_L2``) is scaled with it, so that its
    weight relative to the data term is the same under both reductions; dense L2 and DIEN's auxiliary loss are
    added as they are (as DeepCTR-Torch adds them to its summed loss). Under Adagrad / Adam the two reductions
    differ only through the optimizer's eps; under SGD the summed loss takes ``B`` times larger steps.
  ``reported`` (what logs and ``history["loss"]`` show) is the per-row value either way: ``loss`` under
  ``"mean"``, ``loss / rows`` under ``"sum"`` (DeepCTR-Torch's epoch loss is its summed loss over the rows).

Under TorchRec's ``TrainPipelineSparseDist`` (see ``train/engine.py``) the pipeline FX-traces this module once
to find the input of every sharded embedding module, so that it can start the next batch's input distribution
while this batch trains. Model code (Python control flow over configs and key bookkeeping) is not symbolically
traceable, and need not be: while tracing, ``forward`` states the one fact the pipeline needs -- every sharded
embedding module of the model reads the batch's ``KeyedJaggedTensor`` as it is (``batch.sparse``; a module
selects its own keys). A model that feeds a sharded module anything else, or calls one twice in a step, sets
the class attribute ``pipelineable = False`` and trains in the plain loop.

Models whose output column is already a probability (ESMM's CTCVR = pCTR * pCVR) say so with a class attribute
``output_kind`` (a tuple of "logit" / "probability" per task); those columns use BCE on probabilities.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.data.batch import CTRBatch
>>> class Const(torch.nn.Module):
...     num_tasks = 1
...     def forward(self, dense, sparse):
...         return torch.zeros(dense.shape[0], 1)
>>> kjt = KeyedJaggedTensor.from_lengths_sync([], torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.int))
>>> b = CTRBatch(torch.zeros(2, 0), kjt, torch.tensor([[1.0], [0.0]]))
>>> loss, _ = CTRTask(Const(), ("binary",))(b)
>>> round(float(loss), 4)  # log(2)
0.6931
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from dist_ctr.data.batch import CTRBatch
from dist_ctr.models.base import EMBEDDING_L2


class CTRTask(nn.Module):
    """Loss wrapper around a model.

    Args:
        model (nn.Module): ``forward(dense, sparse) -> (B, T)``.
        task_types (Sequence[str]): "binary" | "regression" per output column.
        loss_weights (Sequence[float] | None): weight per task (default 1 each).
        reduction (str): ``"mean"`` | ``"sum"`` over rows (see the module docstring).
        world_size (int): ranks whose gradients are averaged (scales ``"sum"``).
    """

    def __init__(self, model: nn.Module, task_types: Sequence[str], loss_weights: Sequence[float] | None = None,
                 reduction: str = "mean", world_size: int = 1) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"train.loss_reduction: unknown reduction {reduction!r}; expected 'mean' or 'sum'")
        self.reduction = reduction
        self.world_size = int(world_size)
        self.model = model
        self.task_types = tuple(task_types)
        for t in self.task_types:
            if t not in ("binary", "regression"):
                raise ValueError(f"unknown task type {t!r}; expected 'binary' or 'regression'")
        T = len(self.task_types)
        kinds = tuple(getattr(model, "output_kind", ("logit",) * T))
        if len(kinds) != T:
            raise ValueError(f"model has {len(kinds)} output kinds but {T} tasks")
        self.output_kind = kinds
        w = torch.tensor(list(loss_weights) if loss_weights is not None else [1.0] * T, dtype=torch.float32)
        if w.numel() != T:
            raise ValueError(f"loss_weights has {w.numel()} values for {T} tasks")
        self.register_buffer("loss_weights", w, persistent=False)

    def per_task_loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean loss per task (the reduction is applied in ``forward``). Returns ``Tensor (T,)``."""
        denom = weights.sum().clamp(min=1.0)
        losses = []
        for t, (kind, task) in enumerate(zip(self.output_kind, self.task_types)):
            x, y = logits[:, t], labels[:, t]
            if task == "regression":
                lt = (x - y).pow(2)
            elif kind == "probability":
                lt = F.binary_cross_entropy(x.clamp(1e-7, 1 - 1e-7), y, reduction="none")
            else:
                lt = F.binary_cross_entropy_with_logits(x, y, reduction="none")
            losses.append((lt * weights).sum() / denom)
        return torch.stack(losses)  # (T,)

    @property
    def pipelineable(self) -> bool:
        """Whether ``TrainPipelineSparseDist`` may run this task (see the module docstring)."""
        return bool(getattr(self.model, "pipelineable", True))

    def _trace_sparse_inputs(self, batch: CTRBatch) -> tuple:
        """Tracing-time forward: every sharded embedding module applied to ``batch.sparse``."""
        from torchrec.distributed.types import ShardedModule

        return tuple(m(batch.sparse) for m in self.model.modules() if isinstance(m, ShardedModule))

    def forward(self, batch: CTRBatch):
        if is_fx_symbolic_tracing():
            return self._trace_sparse_inputs(batch)
        logits = self.model(batch.dense, batch.sparse).float()  # (B, T); fp32 also under bf16 autocast
        labels = batch.labels
        if logits.shape != labels.shape:
            raise ValueError(f"model output {tuple(logits.shape)} does not match labels {tuple(labels.shape)}")
        if batch.row_ids is not None:
            weights = (batch.row_ids >= 0).to(logits.dtype)  # (B,) pad rows weigh 0
        else:
            weights = torch.ones(labels.shape[0], dtype=logits.dtype, device=logits.device)
        # "sum": the per-row mean times the global rows (this rank's rows x world size, see the module docstring)
        scale = 1.0 if self.reduction == "mean" else weights.sum().clamp(min=1.0) * self.world_size
        loss = (self.per_task_loss(logits, labels, weights) * self.loss_weights).sum() * scale
        pop = getattr(self.model, "pop_losses", None)
        if pop is not None:
            for name, v in pop().items():
                loss = loss + (v * scale if name == EMBEDDING_L2 else v)
        return loss, (loss.detach() / scale, logits.detach(), labels, weights)

    def predict_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T)`` -> predictions: sigmoid for binary logit columns, identity otherwise."""
        cols = []
        for t, (kind, task) in enumerate(zip(self.output_kind, self.task_types)):
            x = logits[:, t]
            cols.append(torch.sigmoid(x) if task == "binary" and kind == "logit" else x)
        return torch.stack(cols, dim=1)  # (B, T)
