"""The facade side of the DeepCTR-Torch peer benchmark: the peer's own program with ``deepctr_torch`` swapped for
``dist_ctr.compat``.

:data:`COMPAT` stands where the peer's module does, so :func:`dist_ctr.bench.peer.peer_columns` and
:func:`dist_ctr.bench.peer.peer_model` build our model with exactly the calls that build the peer's
(``SparseFeat(name, vocabulary_size=V, embedding_dim=D)``, ``DenseFeat(name, 1)``, ``DeepFM(linear_cols,
dnn_cols, seed=..., device="cpu")``). The runner then does what a DeepCTR-Torch program does:
``compile("adagrad", "binary_crossentropy")`` (DeepCTR-Torch's Adagrad, lr 0.01; another lr goes in as a
``DenseOptimConfig`` plus an exact fused Adagrad on the embeddings) and ``fit(x, y, batch_size, epochs=1,
verbose=0, shuffle=False)`` per chunk of rows, then ``predict``.
"""

from __future__ import annotations

import time
import types
from typing import Any, Callable, Optional

import torch

import dist_ctr.compat.inputs
import dist_ctr.compat.models
from dist_ctr.bench.breakdown import StepBreakdown, profile_steps
from dist_ctr.bench.limit import ModelLookups, dense_part_step
from dist_ctr.bench.peer import Timing, peer_model, peer_x
from dist_ctr.bench.peer_data import Data, SeqData, task_aucs
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig
from dist_ctr.data.batch import CTRBatch

__all__ = ["COMPAT", "FacadeRunner"]

# ``import deepctr_torch as dc`` with the prefix swapped: ``dc.inputs``, ``dc.models``.
COMPAT = types.SimpleNamespace(inputs=dist_ctr.compat.inputs, models=dist_ctr.compat.models,
                               __version__="dist_ctr.compat")


class FacadeRunner:
    """One training run through the facade, as a DeepCTR-Torch program makes it.

    Args:
        name (str): model class name.
        cols (list): the facade's columns (``peer_columns(COMPAT, ...)``).
        lr (float): Adagrad learning rate (0.01 is ``compile("adagrad")``).
        seed (int): the model's ``seed`` argument.
        batch (int): ``fit``'s ``batch_size``.
        dnn_cols (list | None): DNN columns when they differ from ``cols`` (AFM, CCPM).
        eps (float): eps of the embeddings' Adagrad when ``lr`` is not 0.01.
    """

    def __init__(self, name: str, cols: list[Any], lr: float, seed: int, batch: int,
                 dnn_cols: Optional[list[Any]] = None, eps: float = 1e-10) -> None:
        self._args = (name, cols, lr, seed, batch, dnn_cols, eps)
        self.model = peer_model(COMPAT, name, cols, seed, dnn_cols)  # type: ignore[arg-type]
        if lr == 0.01:
            self.model.compile("adagrad", "binary_crossentropy", metrics=[])
        else:
            self.model.compile(DenseOptimConfig("adagrad", lr=lr), "binary_crossentropy", metrics=[],
                               sparse_optimizer=SparseOptimConfig("adagrad", lr=lr, eps=eps))
        self.stamps: list[float] = []
        self.model.trainer.dmp.register_forward_pre_hook(lambda *_: self.stamps.append(time.perf_counter()))
        self.batch = batch
        self.timing = Timing()

    def _fit(self, d: Data | SeqData) -> None:
        self.model.fit(peer_x(d), d.label, batch_size=self.batch, epochs=1, verbose=0, shuffle=False)

    def warm(self, d: Data | SeqData) -> None:
        if len(d):
            self._fit(d)

    def train_chunk(self, d: Data | SeqData) -> float:
        self.stamps.clear()
        t0 = time.perf_counter()
        self._fit(d)
        dt = time.perf_counter() - t0
        steps = [*self.stamps[1:], t0 + dt]  # forward starts: step i ends where step i + 1 begins
        self.timing.add(len(d), dt, [t0, *steps])
        return dt

    def breakdown(self, d: Data | SeqData, top_ops: int = 0) -> StepBreakdown:
        """Where the time of ``fit`` on the rows ``d`` goes (see :mod:`dist_ctr.bench.breakdown`), with the
        ``top_ops`` costliest ops."""
        steps = -(-len(d) // self.batch)
        return profile_steps(lambda: self._fit(d), self.model.trainer.task, steps, top_ops)

    def limit_steps(self, d: Data | SeqData) -> tuple[Callable[[CTRBatch], Any], Callable[[CTRBatch], Any],
                                                      list[CTRBatch]]:
        """This model's two bare steps (:mod:`dist_ctr.bench.limit`) and the rows ``d`` as whole batches of the
        runner's size, prepared by the facade.

        The bare embedding step runs the model's own lookup modules under this runner's sparse optimizer; the bare
        dense step runs on a second model built and compiled as this one, so this one keeps training.

        Returns:
            tuple: ``(embedding step, dense step, batches)``; each step takes one ``CTRBatch``.
        """
        from dist_ctr.compat.base import make_env
        from dist_ctr.models import build_model
        from dist_ctr.train.engine import Trainer

        m, B = self.model, self.batch
        prepared = m._prepare(peer_x(d), d.label)
        batches = [prepared.batch(slice(lo, lo + B)) for lo in range(0, len(d) - B + 1, B)]
        dense_step = dense_part_step(FacadeRunner(*self._args).model.model, batches[0])
        dense_cfg, sparse_cfg = m._optim
        torch.manual_seed(m.seed)
        lookups = ModelLookups(build_model(m.model_name, m.schema, m.config))
        emb = Trainer(lookups, make_env("cpu"), sparse_optim=sparse_cfg, dense_optim=dense_cfg, batch_size=B,
                      loss_reduction=m.loss_reduction)
        return emb.train_step, dense_step, batches

    def auc(self, test: Data | SeqData) -> list[float]:
        """Test AUC per task."""
        return task_aucs(test.label, self.model.predict(peer_x(test), batch_size=8192))
