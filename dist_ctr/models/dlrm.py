"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation Systems", 2019)
and DLRM-DCNv2 (MLPerf Training's recommendation benchmark: DLRM with DCN-V2's low-rank cross network, Wang et
al., WWW 2021), as TorchRec's ``DLRM`` and ``DLRM_DCN``:

    dense (B, n_dense) -> bottom MLP (ReLU) -> d (B, D) --+
                                                          +-> interaction -> top MLP (ReLU, last Linear bare) -> (B, T)
    sparse KJT -> EmbeddingBagCollection -> e (B, F, D) --+

DLRM's interaction is the pairwise dot products of ``[d, e_1, ..., e_F]`` next to ``d``; DLRM-DCNv2's is a
low-rank cross network over the flat ``[d, e_1, ..., e_F]``. Every sparse feature has the embedding dim ``D`` that
the bottom MLP ends with; the model needs dense and sparse features (TorchRec's does too).

Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``T`` tasks.

>>> import torch
>>> from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
>>> from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat
>>> from dist_ctr.sparse import materialize
>>> s = FeatureSchema((SparseFeat("a", 10, 4), SparseFeat("b", 5, 4), DenseFeat("x")))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 4]), torch.ones(4, dtype=torch.int32))
>>> m = materialize(DLRM(s, DLRMConfig(dense_arch_layer_sizes=(8, 4), over_arch_layer_sizes=(8, 1))))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
>>> m = materialize(DLRM_DCNv2(s, DLRM_DCNv2Config.small(4)))
>>> tuple(m(torch.randn(2, 1), kjt).shape)
(2, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.layers.dlrm import DotInteraction, LowRankCrossNet, mlp
from dist_ctr.models.base import CTRModel
from dist_ctr.models.registry import register_model
from dist_ctr.schema import FeatureSchema
from dist_ctr.sparse import SparseArch

__all__ = ["DLRM", "DLRMConfig", "DLRM_DCNv2", "DLRM_DCNv2Config"]


@dataclass(frozen=True)
class DLRMConfig:
    """TorchRec's ``DLRM`` arguments (defaults: TorchRec's DLRM example on Criteo, ``D = 64``).

    ``dense_arch_layer_sizes[-1]`` must equal every sparse feature's ``embedding_dim``;
    ``over_arch_layer_sizes[-1]`` is the number of tasks ``T``.
    """

    dense_arch_layer_sizes: tuple[int, ...] = (512, 256, 64)
    over_arch_layer_sizes: tuple[int, ...] = (512, 512, 256, 1)

    @classmethod
    def small(cls, embedding_dim: int, num_tasks: int = 1) -> "DLRMConfig":
        """A tiny config for ``embedding_dim`` (tests, examples)."""
        return cls((8, embedding_dim), (8, num_tasks))


@dataclass(frozen=True)
class DLRM_DCNv2Config:
    """TorchRec's ``DLRM_DCN`` arguments; the defaults are MLPerf Training's DLRM-DCNv2 (``D = 128``)."""

    dense_arch_layer_sizes: tuple[int, ...] = (512, 256, 128)
    over_arch_layer_sizes: tuple[int, ...] = (1024, 1024, 512, 256, 1)
    dcn_num_layers: int = 3
    dcn_low_rank_dim: int = 512

    @classmethod
    def small(cls, embedding_dim: int, num_tasks: int = 1) -> "DLRM_DCNv2Config":
        """A tiny config for ``embedding_dim`` (tests, examples)."""
        return cls((8, embedding_dim), (8, num_tasks), dcn_num_layers=2, dcn_low_rank_dim=4)


def dot_interaction(F: int, D: int) -> tuple[nn.Module, int]:
    """DLRM's interaction for ``F`` sparse features of dim ``D``: the dense vector and every pairwise dot product;
    returns the module and its output width ``D + F (F + 1) / 2``."""
    inter = DotInteraction(F)
    return inter, D + inter.num_pairs


def dcn_interaction(cfg: DLRM_DCNv2Config) -> Callable[[int, int], tuple[nn.Module, int]]:
    """DLRM-DCNv2's interaction builder: a low-rank cross network over ``[d, e_1, ..., e_F]`` (width
    ``(F + 1) D``)."""

    def build(F: int, D: int) -> tuple[nn.Module, int]:
        width = (F + 1) * D
        return _DCNInteraction(LowRankCrossNet(width, cfg.dcn_num_layers, cfg.dcn_low_rank_dim)), width

    return build


class _DLRMBase(CTRModel):
    """Shared arches: sparse (one EBC over every sparse feature), dense (bottom MLP), over (top MLP).

    The interaction comes in as a builder, ``interaction(F, D) -> (module over (d (B, D), e (B, F, D)), width)``.
    """

    schema_requirements = ("sparse", "dense")
    config_cls: type = DLRMConfig

    def __init__(self, schema: FeatureSchema, cfg: Union[DLRMConfig, DLRM_DCNv2Config], name: str,
                 interaction: Callable[[int, int], tuple[nn.Module, int]]) -> None:
        super().__init__(schema)
        self.config = cfg
        if schema.n_dense == 0:
            raise ValueError(f"{name} needs at least one dense feature (its bottom MLP maps them to the embedding "
                             f"space); the schema has none")
        if not schema.sparse_names:
            raise ValueError(f"{name} needs at least one sparse feature; the schema has none")
        if len(cfg.dense_arch_layer_sizes) == 0 or len(cfg.over_arch_layer_sizes) == 0:
            raise ValueError(f"{name}: dense_arch_layer_sizes and over_arch_layer_sizes must be non-empty")
        D = int(cfg.dense_arch_layer_sizes[-1])
        for n in schema.sparse_names:
            dim = int(schema.feature(n).embedding_dim)  # type: ignore[union-attr]
            if dim != D:
                raise ValueError(f"{name}: sparse feature {n!r} has embedding_dim {dim}, but the bottom MLP ends at "
                                 f"{D} (dense_arch_layer_sizes[-1]); every sparse feature needs embedding_dim {D}")
        if cfg.over_arch_layer_sizes[-1] != self.num_tasks:
            raise ValueError(f"{name}: over_arch_layer_sizes[-1] is {cfg.over_arch_layer_sizes[-1]}, but the schema "
                             f"has {self.num_tasks} task(s)")
        self.embedding_dim = D
        self.num_sparse_features = len(schema.sparse_names)
        self.sparse_arch = SparseArch(schema)
        self.dense_arch = mlp(schema.n_dense, cfg.dense_arch_layer_sizes)
        self.inter_arch, width = interaction(self.num_sparse_features, D)
        self.over_arch = mlp(width, cfg.over_arch_layer_sizes, last_activation=False)

    @classmethod
    def example_config(cls, schema: FeatureSchema) -> Union[DLRMConfig, DLRM_DCNv2Config]:
        """A tiny config fitting ``schema`` (its first sparse feature's dim; zoo-wide tests use it)."""
        first = schema.feature(schema.sparse_names[0]) if schema.sparse_names else None
        dim = int(first.embedding_dim) if first is not None else 4  # type: ignore[union-attr]
        return cls.config_cls.small(dim, max(1, len(schema.labels)))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        d = self.dense_arch(dense)  # (B, D)
        e = self.sparse_arch(sparse).pooled  # (B, F, D)
        return self.over_arch(self.inter_arch(d, e))  # (B, T)


class _DCNInteraction(nn.Module):
    """DLRM-DCNv2's interaction: the cross network over ``[d, e_1, ..., e_F]`` flattened.

    Call: ``forward(dense: Tensor (B, D), sparse: Tensor (B, F, D)) -> Tensor (B, (F + 1) D)``.
    """

    def __init__(self, crossnet: LowRankCrossNet) -> None:
        super().__init__()
        self.crossnet = crossnet

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat((dense.unsqueeze(1), sparse), dim=1).flatten(1)  # (B, (F + 1) D)
        return self.crossnet(x0)  # (B, (F + 1) D)


@register_model("DLRM", DLRMConfig)
class DLRM(_DLRMBase):
    """DLRM: bottom MLP, pairwise dot interaction, top MLP (TorchRec's ``DLRM``).

    Args:
        schema (FeatureSchema): features and labels (dense and sparse features, every sparse dim ``D``).
        config (DLRMConfig): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    def __init__(self, schema: FeatureSchema, config: DLRMConfig = DLRMConfig()) -> None:
        super().__init__(schema, config, "DLRM", dot_interaction)


@register_model("DLRM_DCNv2", DLRM_DCNv2Config)
class DLRM_DCNv2(_DLRMBase):
    """DLRM-DCNv2: bottom MLP, low-rank DCN-V2 cross network, top MLP (TorchRec's ``DLRM_DCN``, MLPerf's model).

    Args:
        schema (FeatureSchema): features and labels (dense and sparse features, every sparse dim ``D``).
        config (DLRM_DCNv2Config): see the dataclass.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> Tensor (B, T)`` logits.
    """

    config_cls = DLRM_DCNv2Config

    def __init__(self, schema: FeatureSchema, config: DLRM_DCNv2Config = DLRM_DCNv2Config()) -> None:
        super().__init__(schema, config, "DLRM_DCNv2", dcn_interaction(config))
