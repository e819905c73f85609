"""DCN (Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017) and DCN-V2 / DCN-Mix
(Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to Rank
Systems", WWW 2021).

Both run a cross network and a DNN in parallel on the same input ``x_0 = [dense, e_1, ..., e_F]`` and combine
their outputs with one linear layer, added to the linear (wide) logit as in DeepCTR-Torch.

Notation: ``B`` batch, ``N`` input width (dense values + flattened embeddings), ``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 8), DenseFeat("x")))
>>> m = materialize(DCNMix(s, DCNMixConfig(dnn_hidden_units=(8,), low_rank=4)))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.ones(4, dtype=torch.int32))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.core import DNN
from dist_ctr.layers.interaction import CrossNet, CrossNetMix
from dist_ctr.models.base import CTRModel
from dist_ctr.models.config_blocks import WideDeepArgs
from dist_ctr.models.registry import register_model
from dist_ctr.models.heads import TaskOutput, logit_layer, make_dnn
from dist_ctr.models.inputs import DeepInputs, carried_linear, deep_with_linear, linear_part
from dist_ctr.schema import FeatureSchema

__all__ = ["DCN", "DCNConfig", "DCNMix", "DCNMixConfig"]


@dataclass(frozen=True)
class DCNConfig(WideDeepArgs):
    """DeepCTR-Torch's ``DCN`` arguments (feature columns as names; ``None`` = all features)."""

    cross_num: int = 2
    cross_parameterization: str = "vector"
    dnn_hidden_units: tuple[int, ...] = (128, 128)
    l2_reg_cross: float = 1e-5


@dataclass(frozen=True)
class DCNMixConfig(WideDeepArgs):
    """DeepCTR-Torch's ``DCNMix`` arguments (feature columns as names; ``None`` = all features)."""

    cross_num: int = 2
    dnn_hidden_units: tuple[int, ...] = (128, 128)
    low_rank: int = 32
    num_experts: int = 4
    l2_reg_cross: float = 1e-5


@dataclass(frozen=True)
class CrossSpec:
    """The cross network a :class:`CrossDeep` model runs, as a small strategy object.

    Attributes:
        build (Callable[[int], nn.Module]): the cross network over inputs of the given width ``N``,
            ``Tensor (B, N) -> Tensor (B, N)``; called after the DNN is built (the init order of a seed).
        kernels (Callable[[nn.Module], list[Tensor]]): the built network's kernels that ``l2_reg_cross`` penalises.
    """

    build: Callable[[int], nn.Module]
    kernels: Callable[[nn.Module], list[torch.Tensor]]


def vector_cross(cfg: DCNConfig) -> CrossSpec:
    """DCN's :class:`CrossNet` ("vector") or DCN-V2's full-rank one ("matrix")."""
    return CrossSpec(lambda n: CrossNet(n, cfg.cross_num, cfg.cross_parameterization),
                     lambda c: [c.kernels])  # type: ignore[list-item]


def mixture_cross(cfg: DCNMixConfig) -> CrossSpec:
    """DCN-Mix's :class:`CrossNetMix`: ``num_experts`` low-rank (``low_rank``) experts per layer."""
    return CrossSpec(lambda n: CrossNetMix(n, cfg.low_rank, cfg.num_experts, cfg.cross_num),
                     lambda c: [c.U_list, c.V_list, c.C_list])  # type: ignore[list-item]


class CrossDeep(CTRModel):
    """``logit = linear(x) + w^T [DNN(x_0), Cross(x_0)] + b`` (either tower may be absent); the cross network is
    given by ``cross`` (:class:`CrossSpec`).

    Args:
        schema (FeatureSchema): features and labels.
        cfg (DCNConfig | DCNMixConfig): the shared arguments (``cross_num``, DNN, linear, regularisation).
        name (str): model name for error messages.
        cross (CrossSpec): the cross network.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, cfg: Union[DCNConfig, DCNMixConfig], name: str,
                 cross: CrossSpec) -> None:
        super().__init__(schema)
        self.config = cfg
        if cfg.cross_num < 0:
            raise ValueError(f"{name}: cross_num must be >= 0, got {cfg.cross_num}")
        inputs = DeepInputs(schema, cfg.dnn_feature_names, carried_linear(schema, cfg))
        self.linear = linear_part(self, cfg.linear_feature_names, cfg.l2_reg_linear, shared=inputs.sparse)
        if not (len(cfg.dnn_hidden_units) > 0 or cfg.cross_num > 0):
            raise ValueError(f"{name}: either dnn_hidden_units or cross_num must be > 0")
        if inputs.output_dim == 0:
            raise ValueError(f"{name}: dnn_feature_names select no feature")
        self.inputs = inputs
        N = inputs.output_dim
        self.dnn: Optional[DNN] = make_dnn(N, cfg) if len(cfg.dnn_hidden_units) > 0 else None
        self.crossnet: Optional[nn.Module] = cross.build(N) if cfg.cross_num > 0 else None
        width = (self.dnn.output_dim if self.dnn is not None else 0) + (N if self.crossnet is not None else 0)
        self.dnn_linear = logit_layer(self, width, cfg.l2_reg_dnn, self.dnn.weights() if self.dnn is not None else [])
        if self.crossnet is not None:
            self.register_l2(cfg.l2_reg_cross, cross.kernels(self.crossnet))
        self.out = TaskOutput(self.num_tasks, shared=True)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        _, x0, logit = deep_with_linear(self, self.inputs, self.linear, self.config.l2_reg_embedding, dense, sparse)
        towers = []
        if self.dnn is not None:
            towers.append(self.dnn(x0))  # (B, H)
        if self.crossnet is not None:
            towers.append(self.crossnet(x0))  # (B, N)
        stack = torch.cat(towers, dim=1) if len(towers) > 1 else towers[0]  # (B, H + N)
        logit = logit + self.dnn_linear(stack)  # (B, T)
        return self.out(logit)  # (B, T)


@register_model("DCN", DCNConfig)
class DCN(CrossDeep):
    """Deep & Cross Network; ``cross_parameterization`` "vector" is DCN, "matrix" is DCN-V2's full-rank cross.

    Args:
        schema (FeatureSchema): features and labels.
        config (DCNConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: DCNConfig = DCNConfig()) -> None:
        super().__init__(schema, config, "DCN", vector_cross(config))


@register_model("DCNMix", DCNMixConfig)
class DCNMix(CrossDeep):
    """DCN-Mix: the cross network is a mixture of ``num_experts`` low-rank (``low_rank``) cross experts.

    Args:
        schema (FeatureSchema): features and labels.
        config (DCNMixConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: DCNMixConfig = DCNMixConfig()) -> None:
        super().__init__(schema, config, "DCNMix", mixture_cross(config))
