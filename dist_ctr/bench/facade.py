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
from typing import Any, Optional

import dist_ctr.compat.inputs
import dist_ctr.compat.models
from dist_ctr.bench.breakdown import StepBreakdown, profile_steps
from dist_ctr.bench.peer import Timing, peer_model, peer_x
from dist_ctr.bench.peer_data import Data, SeqData, task_aucs
from dist_ctr.config import DenseOptimConfig, SparseOptimConfig

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

    def breakdown(self, d: Data | SeqData) -> StepBreakdown:
        """Where the time of ``fit`` on the rows ``d`` goes (see :mod:`dist_ctr.bench.breakdown`)."""
        steps = -(-len(d) // self.batch)
        return profile_steps(lambda: self._fit(d), self.model.trainer.task, steps)

    def auc(self, test: Data | SeqData) -> list[float]:
        """Test AUC per task."""
        return task_aucs(test.label, self.model.predict(peer_x(test), batch_size=8192))
