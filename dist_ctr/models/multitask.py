"""Multi-task models with DeepCTR-Torch's names and arguments: ``SharedBottom``, ``ESMM``, ``MMOE``, ``PLE``.

Notation: ``B`` batch, ``N`` DNN input width (dense values + pooled embeddings of every feature), ``K`` experts,
``H`` expert output width, ``T`` tasks.

The tasks are the schema's labels (``LabelSpec(name, task)``), in order: output column ``t`` is label ``t``.
``task_types`` / ``task_names`` mirror DeepCTR-Torch; left ``None`` they are the schema's, and when given they must
equal the schema's (a mismatch is an error naming both). Every model returns logits ``(B, T)``; the loss (BCE with
logits for "binary", MSE for "regression", one per task) lives in ``CTRTask``.

Experts, gates and towers are groups of same-shaped MLPs computed in one batched matmul per layer
(:mod:`dist_ctr.layers.multitask`).

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), DenseFeat("x")), (LabelSpec("click"), LabelSpec("buy")))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a"], torch.tensor([1, 2]), torch.ones(2, dtype=torch.int32))
>>> m = materialize(MMOE(s, MMOEConfig(expert_dnn_hidden_units=(8,), gate_dnn_hidden_units=(), tower_dnn_hidden_units=(4,))))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 2)
>>> e = materialize(ESMM(s, ESMMConfig(tower_dnn_hidden_units=(8,)))).eval()
>>> x = torch.randn(2, 1)
>>> (ctr, cvr), z = e.tower_logits(x, kjt), e(x, kjt)
>>> torch.allclose(torch.sigmoid(z), torch.stack([torch.sigmoid(ctr), torch.sigmoid(ctr) * torch.sigmoid(cvr)], 1))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.multitask import Gates, ParallelDNN, ParallelLinear, mix_experts
from dist_ctr.models.heads import TaskOutput
from dist_ctr.models.base import CTRModel
from dist_ctr.models.config_blocks import MultiTaskArgs
from dist_ctr.models.registry import register_model
from dist_ctr.models.inputs import DeepInputs
from dist_ctr.schema import FeatureSchema

__all__ = ["ESMM", "ESMMConfig", "MMOE", "MMOEConfig", "PLE", "PLEConfig", "SharedBottom", "SharedBottomConfig",
           "ctcvr_logit"]


def ctcvr_logit(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> torch.Tensor:
    """The logit of ``sigmoid(a) * sigmoid(b)``, exactly and stably: ``-logsumexp(-a, -b, -a - b)``.

    (``p / (1 - p) = 1 / (e^-a + e^-b + e^(-a-b))`` for ``p = sigmoid(a) sigmoid(b)``.)

    >>> a, b = torch.tensor([0.3, -2.0, 40.0]), torch.tensor([1.2, 0.5, 40.0])
    >>> torch.allclose(torch.sigmoid(ctcvr_logit(a, b)), torch.sigmoid(a) * torch.sigmoid(b))
    True
    """
    terms = torch.stack([-ctr_logit, -cvr_logit, -(ctr_logit + cvr_logit)], dim=0)  # (3, ...)
    return -torch.logsumexp(terms, dim=0)


class _MultiTask(CTRModel):
    """Shared plumbing: task checks against the schema, the DNN input, per-task towers and the output bias."""

    schema_requirements: tuple[str, ...] = ("multitask",)
    model_name = "MultiTask"

    def _setup(self, cfg: object, min_tasks: int = 2) -> None:
        name, schema = self.model_name, self.schema
        T = len(schema.labels)
        if T < min_tasks:
            raise ValueError(f"{name} needs at least {min_tasks} labels (tasks) in the schema, got "
                             f"{schema.label_names}")
        types = getattr(cfg, "task_types")
        names = getattr(cfg, "task_names")
        if types is not None and tuple(types) != tuple(schema.task_types):
            raise ValueError(f"{name}: config task_types {tuple(types)} do not match the schema's labels "
                             f"{schema.label_names} with tasks {tuple(schema.task_types)}")
        if names is not None and tuple(names) != tuple(schema.label_names):
            raise ValueError(f"{name}: config task_names {tuple(names)} do not match the schema's label names "
                             f"{tuple(schema.label_names)}")
        self.task_types = tuple(schema.task_types)
        self.task_names = tuple(schema.label_names)
        self.inputs = DeepInputs(schema, None)
        if self.inputs.output_dim == 0:
            raise ValueError(f"{name} needs at least one feature")

    def _towers(self, inputs_dim: int, cfg: object) -> None:
        """``T`` tower MLPs, each followed by a bias-free linear to one logit, and a bias per task."""
        c = cfg
        self.towers = ParallelDNN(inputs_dim, self.num_tasks, c.tower_dnn_hidden_units, c.dnn_activation,  # type: ignore[attr-defined]
                                  c.dnn_dropout, c.dnn_use_bn, c.init_std)  # type: ignore[attr-defined]
        self.tower_final = ParallelLinear(self.towers.output_dim, self.num_tasks, 1, bias=False)
        self.out = TaskOutput(self.num_tasks)

    def _dnn_input(self, dense: torch.Tensor, sparse: KeyedJaggedTensor, l2_reg_embedding: float) -> torch.Tensor:
        emb, x = self.inputs(dense, sparse)  # x: (B, N)
        if emb is not None:
            self.add_embedding_l2(l2_reg_embedding, emb.pooled_flat)
        return x

    def _tower_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x: Tensor (B, N) | (B, T, N) -> Tensor (B, T)`` logits, before the output bias."""
        return self.tower_final(self.towers(x)).squeeze(-1)  # (B, T)


@dataclass(frozen=True)
class SharedBottomConfig(MultiTaskArgs):
    """DeepCTR-Torch's ``SharedBottom`` arguments (``task_types`` / ``task_names`` default to the schema's)."""

    bottom_dnn_hidden_units: tuple[int, ...] = (256, 128)
    tower_dnn_hidden_units: tuple[int, ...] = (64,)


@register_model("SharedBottom", SharedBottomConfig)
class SharedBottom(_MultiTask):
    """Shared-bottom multi-task (Caruana, "Multitask Learning", 1997): one bottom MLP, one tower per task.

    ``logit_t = w_t^T tower_t(bottom(x)) + b_t``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    model_name = "SharedBottom"

    def __init__(self, schema: FeatureSchema, config: SharedBottomConfig = SharedBottomConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self._setup(cfg)
        self.bottom = DNN(self.inputs.output_dim, cfg.bottom_dnn_hidden_units, cfg.dnn_activation, cfg.dnn_dropout,
                          cfg.dnn_use_bn, cfg.init_std)
        self._towers(self.bottom.output_dim, cfg)
        self.register_l2(cfg.l2_reg_dnn, self.bottom.weights() + self.towers.weights() + [self.tower_final.weight])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self._dnn_input(dense, sparse, self.config.l2_reg_embedding)  # (B, N)
        return self.out(self._tower_logits(self.bottom(x)))  # (B, T)


@dataclass(frozen=True)
class ESMMConfig(MultiTaskArgs):
    """DeepCTR-Torch's ``ESMM`` arguments (two binary tasks: CTR, then CTCVR)."""

    tower_dnn_hidden_units: tuple[int, ...] = (256, 128)


@register_model("ESMM", ESMMConfig)
class ESMM(_MultiTask):
    """Entire Space Multi-task Model (Ma et al., "Entire Space Multi-Task Model: An Effective Approach for
    Estimating Post-Click Conversion Rate", SIGIR 2018).

    Two towers over the shared embeddings give a CTR logit ``a`` and a CVR logit ``b`` (each with its bias).
    The schema must have exactly two binary labels: label 0 is the click, label 1 is click-and-conversion
    (CTCVR), both over all impressions. The output columns are both **logits** (``output_kind`` is
    ``("logit", "logit")``, the default, so ``CTRTask`` needs nothing special):

    - column 0: ``a``, with ``sigmoid(a) = pCTR``; trained with BCE-with-logits on label 0;
    - column 1: ``logit(pCTR * pCVR) = -logsumexp(-a, -b, -a - b)`` (:func:`ctcvr_logit`), with
      ``sigmoid = pCTCVR = pCTR * pCVR`` exactly; trained with BCE-with-logits on label 1.

    The CVR tower is learnt only through the CTCVR product, as in the paper; :meth:`tower_logits` returns
    ``(a, b)`` for reading pCVR ``= sigmoid(b)``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, 2)`` logits.
    """

    model_name = "ESMM"
    output_kind = ("logit", "logit")

    def __init__(self, schema: FeatureSchema, config: ESMMConfig = ESMMConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self._setup(cfg)
        if len(schema.labels) != 2 or any(t != "binary" for t in schema.task_types):
            raise ValueError(f"ESMM needs exactly two binary labels (CTR, then CTCVR), got "
                             f"{list(zip(schema.label_names, schema.task_types))}")
        self._towers(self.inputs.output_dim, cfg)
        self.register_l2(cfg.l2_reg_dnn, self.towers.weights() + [self.tower_final.weight])

    def tower_logits(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CTR and CVR logits ``(Tensor (B,), Tensor (B,))`` (with their biases)."""
        x = self._dnn_input(dense, sparse, self.config.l2_reg_embedding)  # (B, N)
        z = self.out(self._tower_logits(x))  # (B, 2)
        return z[:, 0], z[:, 1]

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        ctr, cvr = self.tower_logits(dense, sparse)
        return torch.stack([ctr, ctcvr_logit(ctr, cvr)], dim=1)  # (B, 2)


@dataclass(frozen=True)
class MMOEConfig(MultiTaskArgs):
    """DeepCTR-Torch's ``MMOE`` arguments (``task_types`` / ``task_names`` default to the schema's)."""

    num_experts: int = 3
    expert_dnn_hidden_units: tuple[int, ...] = (256, 128)
    gate_dnn_hidden_units: tuple[int, ...] = (64,)
    tower_dnn_hidden_units: tuple[int, ...] = (64,)


@register_model("MMOE", MMOEConfig)
class MMOE(_MultiTask):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): ``K`` shared experts, one softmax gate per task.

    ``logit_t = w_t^T tower_t(sum_k g_t(x)_k expert_k(x)) + b_t``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    model_name = "MMOE"

    def __init__(self, schema: FeatureSchema, config: MMOEConfig = MMOEConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self._setup(cfg)
        if cfg.num_experts < 1:
            raise ValueError(f"MMOE: num_experts must be >= 1, got {cfg.num_experts}")
        N = self.inputs.output_dim
        self.experts = ParallelDNN(N, cfg.num_experts, cfg.expert_dnn_hidden_units, cfg.dnn_activation,
                                   cfg.dnn_dropout, cfg.dnn_use_bn, cfg.init_std)
        self.gates = Gates(N, self.num_tasks, cfg.num_experts, cfg.gate_dnn_hidden_units, cfg.dnn_activation,
                           cfg.dnn_dropout, cfg.dnn_use_bn, cfg.init_std)
        self._towers(self.experts.output_dim, cfg)
        self.register_l2(cfg.l2_reg_dnn, self.experts.weights() + self.gates.weights() + self.towers.weights()
                         + [self.tower_final.weight])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self._dnn_input(dense, sparse, self.config.l2_reg_embedding)  # (B, N)
        mixed = mix_experts(self.gates(x), self.experts(x))  # (B, T, K) x (B, K, H) -> (B, T, H)
        return self.out(self._tower_logits(mixed))  # (B, T)


@dataclass(frozen=True)
class PLEConfig(MultiTaskArgs):
    """DeepCTR-Torch's ``PLE`` arguments (``task_types`` / ``task_names`` default to the schema's)."""

    shared_expert_num: int = 1
    specific_expert_num: int = 1
    num_levels: int = 2
    expert_dnn_hidden_units: tuple[int, ...] = (256, 128)
    gate_dnn_hidden_units: tuple[int, ...] = (64,)
    tower_dnn_hidden_units: tuple[int, ...] = (64,)


class _PLELevel(nn.Module):
    """One extraction network of PLE (CGC): ``s`` specific experts per task, ``m`` shared experts, a gate per
    task over its own and the shared experts and, except at the last level, a shared gate over all experts.

    Call: ``forward(task_in: Tensor (B, N) | (B, T, N), shared_in: Tensor (B, N))
    -> (Tensor (B, T, H), Tensor (B, H) | None)``.
    """

    def __init__(self, inputs_dim: int, num_tasks: int, cfg: PLEConfig, last: bool) -> None:
        super().__init__()
        T, s, m = num_tasks, cfg.specific_expert_num, cfg.shared_expert_num
        self.T, self.s, self.m = T, s, m
        opts = (cfg.dnn_activation, cfg.dnn_dropout, cfg.dnn_use_bn, cfg.init_std)
        self.specific = ParallelDNN(inputs_dim, T * s, cfg.expert_dnn_hidden_units, *opts)
        self.shared = ParallelDNN(inputs_dim, m, cfg.expert_dnn_hidden_units, *opts)
        self.output_dim = self.specific.output_dim
        self.task_gates = Gates(inputs_dim, T, s + m, cfg.gate_dnn_hidden_units, *opts)
        self.shared_gate: Optional[Gates] = None if last else Gates(inputs_dim, 1, T * s + m,
                                                                     cfg.gate_dnn_hidden_units, *opts)

    def weights(self) -> list[torch.Tensor]:
        ws = self.specific.weights() + self.shared.weights() + self.task_gates.weights()
        return ws + (self.shared_gate.weights() if self.shared_gate is not None else [])

    def forward(self, task_in: torch.Tensor, shared_in: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        T, s = self.T, self.s
        x = task_in if task_in.dim() == 2 or s == 1 else task_in.repeat_interleave(s, dim=1)  # (B, N) | (B, T s, N)
        spec = self.specific(x)  # (B, T s, H), task t's experts at t s .. t s + s - 1
        shared = self.shared(shared_in)  # (B, m, H)
        g = self.task_gates(task_in)  # (B, T, s + m): task t's own experts, then the shared ones
        # Task t mixes its own experts and the shared ones: the two partial sums, without a (B, T, s + m, H) copy.
        task_out = mix_experts(g[..., :s], spec.unflatten(1, (T, s))) + mix_experts(g[..., s:], shared)  # (B, T, H)
        if self.shared_gate is None:
            return task_out, None
        gs = self.shared_gate(shared_in)  # (B, 1, T s + m): every specific expert, then the shared ones
        shared_out = mix_experts(gs[..., :T * s], spec) + mix_experts(gs[..., T * s:], shared)  # (B, 1, H)
        return task_out, shared_out.squeeze(1)


@register_model("PLE", PLEConfig)
class PLE(_MultiTask):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): ``num_levels`` stacked extraction networks with
    task-specific and shared experts, then one tower per task.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    model_name = "PLE"

    def __init__(self, schema: FeatureSchema, config: PLEConfig = PLEConfig()) -> None:
        super().__init__(schema)
        cfg = self.config = config
        self._setup(cfg)
        if cfg.num_levels < 1 or cfg.specific_expert_num < 1 or cfg.shared_expert_num < 1:
            raise ValueError(f"PLE: num_levels, specific_expert_num and shared_expert_num must be >= 1, got "
                             f"{cfg.num_levels}, {cfg.specific_expert_num}, {cfg.shared_expert_num}")
        levels, dim = [], self.inputs.output_dim
        for i in range(cfg.num_levels):
            lvl = _PLELevel(dim, self.num_tasks, cfg, last=i == cfg.num_levels - 1)
            levels.append(lvl)
            dim = lvl.output_dim
        self.levels = nn.ModuleList(levels)
        self._towers(dim, cfg)
        ws = [w for lvl in levels for w in lvl.weights()]
        self.register_l2(cfg.l2_reg_dnn, ws + self.towers.weights() + [self.tower_final.weight])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        x = self._dnn_input(dense, sparse, self.config.l2_reg_embedding)  # (B, N)
        task_in, shared_in = x, x
        for lvl in self.levels:
            task_in, shared = lvl(task_in, shared_in)  # (B, T, H), (B, H) | None
            if shared is not None:
                shared_in = shared
        return self.out(self._tower_logits(task_in))  # (B, T)
