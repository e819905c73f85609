"""Sparse arch: every embedding of a schema in TorchRec modules, built on ``meta``.

Notation: ``B`` batch, ``F`` pooled sparse features, ``D`` embedding dim, ``L`` sequence length (``maxlen``).

Tables go to one of two TorchRec modules, decided once at construction:

- ``ebc`` (``EmbeddingBagCollection``): tables whose features are all pooled with SUM or MEAN (single-valued
  features, multi-hot bags). One fused lookup per batch once DMP shards it.
- ``ec`` (``EmbeddingCollection``): tables read by a *sequence* feature (kept unpooled as ``(B, L, D)`` for
  attention / RNN models), by a ``max`` combiner (EBC has no MAX pooling), or by features with mixed combiners.
  A single-valued feature on such a table (a DIN target item sharing its table with the history) is pooled
  from the EC output.

DMP shards both modules and wraps the rest of the model in DDP (above world size 1); nothing here touches devices
or processes.

>>> from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat, DenseFeat
>>> s = FeatureSchema((SparseFeat("a", 10, 4), VarLenSparseFeat(SparseFeat("b", 7, 4), maxlen=3), DenseFeat("x")))
>>> arch = materialize(SparseArch(s))
>>> kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2, 3, 1]), torch.tensor([1, 1, 2, 0]))
>>> out = arch(kjt)
>>> tuple(out.pooled.shape)
(2, 2, 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Optional

import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    PoolingType,
)
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse.init import table_init, table_inits

META = torch.device("meta")
LINEAR_DIM = 4  # width of the linear (wide) tables; see LinearArch
# Init std multiplier of the linear tables: the mean of LINEAR_DIM columns drawn N(0, (2 s)^2) is N(0, s^2).
LINEAR_INIT_STD_SCALE = LINEAR_DIM**0.5


def mark_linear_tables(module: nn.Module) -> None:
    """Tag every TorchRec collection in ``module`` as holding linear (``LINEAR_DIM``-wide, column-mean) tables."""
    for m in module.modules():
        if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection)):
            m.init_std_scale = LINEAR_INIT_STD_SCALE  # read by dist_ctr.sparse.init.table_inits


@dataclass
class SparseOutput:
    """Output of :class:`SparseArch`.

    Attributes:
        pooled (Tensor | None): ``(B, F, D)`` pooled features in schema order; ``None`` when dims differ.
        pooled_flat (Tensor): ``(B, sum_f D_f)`` the same values, concatenated in schema order.
        sequences (dict[str, Tensor]): sequence feature -> ``(B, L, D)``, zero beyond each row's length.
        seq_lengths (dict[str, Tensor]): sequence feature -> ``(B,)`` int lengths (``<= L``).
        linear (Tensor | None): ``(B, F_c, LINEAR_DIM)`` the linear weights carried in the embedding rows, in
            ``SparseArch.linear_names`` order (each weight is the mean of its ``LINEAR_DIM`` columns); ``None`` when
            the arch carries none.
    """

    pooled: Optional[torch.Tensor]
    pooled_flat: torch.Tensor
    sequences: dict[str, torch.Tensor] = field(default_factory=dict)
    seq_lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    linear: Optional[torch.Tensor] = None


def _combiner(f: SparseFeat | VarLenSparseFeat) -> Optional[str]:
    """Pooling a feature needs; ``None`` for single-valued features (any pooling gives the same vector)."""
    return f.combiner if isinstance(f, VarLenSparseFeat) else None


def _table_pooling(feats: list[SparseFeat | VarLenSparseFeat]) -> Optional[PoolingType]:
    """SUM / MEAN when every multi-valued feature of a table agrees on it, else ``None`` (needs the EC)."""
    combiners = {c for c in (_combiner(f) for f in feats) if c is not None}
    if not combiners:
        return PoolingType.SUM
    if combiners == {"sum"}:
        return PoolingType.SUM
    if combiners == {"mean"}:
        return PoolingType.MEAN
    return None


def _pool_jagged(jt: JaggedTensor, combiner: str, batch_size: int) -> torch.Tensor:
    """Pool a ``JaggedTensor`` of ``(N, D)`` values with ``lengths (B,)`` into ``(B, D)``; empty rows give 0."""
    values = jt.values()  # (N, D)
    lengths = jt.lengths().long()  # (B,)
    seg = torch.repeat_interleave(torch.arange(batch_size, device=values.device), lengths)  # (N,)
    out = values.new_zeros(batch_size, values.shape[1])  # (B, D)
    if combiner == "max":
        out = out.index_reduce(0, seg, values, "amax", include_self=False)
        return out
    out = out.index_add(0, seg, values)
    if combiner == "mean":
        out = out / lengths.clamp(min=1).unsqueeze(1).to(out.dtype)
    return out


class _Layout(NamedTuple):
    """Where :class:`SparseArch`'s output columns go, for one order of produced features.

    Attributes:
        perm (Tensor | None): flat column index of the embedding columns in schema order (``None``: in order).
        lin (Tensor | None): columns of the carried linear weights (``None``: none carried).
        interleaved (bool): every feature carries, all of one dim, in schema order (:class:`_SplitCarried`).
    """

    perm: Optional[torch.Tensor]
    lin: Optional[torch.Tensor]
    interleaved: bool


class _SplitCarried(torch.autograd.Function):
    """Rows ``[e_f | w_f]`` ``(B, F * (D + LINEAR_DIM))`` -> embeddings ``(B, F * D)`` and carried linear columns
    ``(B, F, LINEAR_DIM)``, both contiguous; the backward writes the rows' gradient in one pass."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor, F: int, D: int) -> tuple[torch.Tensor, torch.Tensor]:
        B = flat.shape[0]
        rows = flat.view(B, F, D + LINEAR_DIM)
        ctx.shape = (F, D)
        emb = rows[:, :, :D].reshape(B, F * D)  # (B, F * D)
        return emb, rows[:, :, D:].contiguous()  # (B, F, LINEAR_DIM)

    @staticmethod
    def backward(ctx: Any, g_emb: torch.Tensor, g_linear: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        F, D = ctx.shape
        B = g_emb.shape[0]
        return torch.cat([g_emb.view(B, F, D), g_linear], dim=2).view(B, F * (D + LINEAR_DIM)), None, None


class SparseArch(nn.Module):
    """All embedding tables of a schema; pooled ``(B, F, D)`` plus unpooled sequences.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Iterable[str] | None): sparse features this arch embeds (default: all of the schema's).
        sequence_features (Iterable[str]): var-len features kept unpooled as ``(B, L, D)``.
        table_prefix (str): prefix of TorchRec table names (two archs in one model need distinct names).
        linear_features (Iterable[str]): the features of the model's DeepCTR linear part, to carry in the embedding
            rows: a pooled (EBC) table read here by exactly the linear part's features of that table gets
            ``LINEAR_DIM`` more columns, which hold their weight as :class:`LinearArch` would (column mean, the init
            of its table ``linear_prefix + table``), so one lookup per id serves both parts. ``linear_names`` lists
            the features carried.
        linear_prefix (str): the :class:`LinearArch` table name prefix whose init the extra columns take.

    Call: ``forward(features: KeyedJaggedTensor) -> SparseOutput``. Extra KJT keys are ignored.

    The extra columns change no arithmetic under an element-wise sparse optimizer (exact Adagrad, Adam, SGD: every
    column keeps its own state), and the sharded engine refuses them under row-wise Adagrad, whose state is per row.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        feature_names: Iterable[str] | None = None,
        sequence_features: Iterable[str] = (),
        table_prefix: str = "",
        linear_features: Iterable[str] = (),
        linear_prefix: str = "linear__",
    ) -> None:
        super().__init__()
        wanted = list(feature_names) if feature_names is not None else schema.sparse_names
        feats = [schema.feature(n) for n in wanted]
        for f in feats:
            if not isinstance(f, (SparseFeat, VarLenSparseFeat)):
                raise ValueError(f"feature {f.name!r} is not sparse; SparseArch embeds sparse features only")
        seq = list(sequence_features)
        for n in seq:
            if not isinstance(schema.feature(n), VarLenSparseFeat):
                raise ValueError(f"sequence feature {n!r} must be a VarLenSparseFeat")
            if n not in wanted:
                wanted.append(n)
                feats.append(schema.feature(n))
        self.schema = schema
        self.sequence_names: list[str] = seq
        self.pooled_names: list[str] = [f.name for f in feats if f.name not in seq]
        self.maxlen: dict[str, int] = {n: schema.feature(n).maxlen for n in seq}  # type: ignore[union-attr]

        by_table: dict[str, list[SparseFeat | VarLenSparseFeat]] = {}
        for f in feats:
            by_table.setdefault(f.embedding_name, []).append(f)  # type: ignore[arg-type]
        specs = {t.name: t for t in schema.tables()}
        bag_cfgs: list[EmbeddingBagConfig] = []
        seq_cfgs: list[EmbeddingConfig] = []
        ec_pooled: list[str] = []
        linear_by_table: dict[str, set[str]] = {}
        for n in linear_features:
            f = schema.feature(n)
            if isinstance(f, (SparseFeat, VarLenSparseFeat)):
                linear_by_table.setdefault(f.embedding_name, set()).add(n)
        tails: dict[str, tuple[str, int, float]] = {}
        self.linear_names: list[str] = []
        for tname, tfeats in by_table.items():
            spec = specs[tname]
            pooling = _table_pooling(tfeats)
            on_ec = pooling is None or any(f.name in seq for f in tfeats)
            names = [f.name for f in tfeats]
            if on_ec:
                seq_cfgs.append(EmbeddingConfig(num_embeddings=spec.num_embeddings, embedding_dim=spec.embedding_dim,
                                                name=table_prefix + tname, feature_names=names))
                ec_pooled.extend(n for n in names if n not in seq)
            else:
                width = spec.embedding_dim
                if linear_by_table.get(tname) == set(names):
                    width += LINEAR_DIM
                    tails[table_prefix + tname] = (linear_prefix + tname, LINEAR_DIM, LINEAR_INIT_STD_SCALE)
                    self.linear_names.extend(names)
                bag_cfgs.append(EmbeddingBagConfig(num_embeddings=spec.num_embeddings, embedding_dim=width,
                                                   name=table_prefix + tname, feature_names=names, pooling=pooling))
        self.ebc: Optional[EmbeddingBagCollection] = (
            EmbeddingBagCollection(tables=bag_cfgs, device=META) if bag_cfgs else None
        )
        if self.ebc is not None and tails:
            self.ebc.column_tails = tails  # read by dist_ctr.sparse.init.table_inits
        self.ec: Optional[EmbeddingCollection] = EmbeddingCollection(tables=seq_cfgs, device=META) if seq_cfgs else None
        self.ec_pooled_names: list[str] = ec_pooled
        self.combiners: dict[str, str] = {
            f.name: (_combiner(f) or "sum") for f in feats  # type: ignore[misc]
        }
        # Column permutation from the order features are produced in (EBC output keys, then EC-pooled) to schema
        # order, and the weights summing the carried linear columns. A sharded EBC returns its keys in plan order,
        # not config order, so both are built from the output's own keys on first sight of each key order and cached.
        self._dims: dict[str, int] = {f.name: f.embedding_dim for f in feats}
        carried = set(self.linear_names)
        self._widths: dict[str, int] = {n: d + (LINEAR_DIM if n in carried else 0) for n, d in self._dims.items()}
        self._layout_cache: dict[tuple[str, ...], _Layout] = {}
        dims = self._dims
        pooled_dims = {dims[n] for n in self.pooled_names}
        self.uniform_dim: Optional[int] = pooled_dims.pop() if len(pooled_dims) == 1 else None
        self.pooled_dims: list[int] = [dims[n] for n in self.pooled_names]

    @property
    def num_pooled(self) -> int:
        """``F``: pooled features."""
        return len(self.pooled_names)

    def _layout_for(self, produced: tuple[str, ...], device: torch.device) -> "_Layout":
        """How the features produced in ``produced`` order map to schema order and to the carried linear weights."""
        layout = self._layout_cache.get(produced)
        if layout is None:
            offsets, start = {}, 0
            for n in produced:
                offsets[n] = start
                start += self._widths[n]
            cols = [i for n in self.pooled_names for i in range(offsets[n], offsets[n] + self._dims[n])]
            perm = None if cols == list(range(start)) else torch.tensor(cols, dtype=torch.long, device=device)
            lin_cols = [i for n in self.linear_names
                        for i in range(offsets[n] + self._dims[n], offsets[n] + self._dims[n] + LINEAR_DIM)]
            lin = torch.tensor(lin_cols, dtype=torch.long, device=device) if lin_cols else None
            interleaved = (produced == tuple(self.pooled_names) and self.uniform_dim is not None
                           and set(self.linear_names) == set(self.pooled_names))
            layout = self._layout_cache[produced] = _Layout(perm, lin, interleaved)
        return layout

    def forward(self, features: KeyedJaggedTensor) -> SparseOutput:
        B = features.stride()
        parts: list[torch.Tensor] = []
        produced: list[str] = []
        if self.ebc is not None:
            kt = self.ebc(features)  # KeyedTensor; key order = the (possibly sharded) module's output order
            produced.extend(kt.keys())
            parts.append(kt.values())  # (B, sum D_ebc)
        sequences: dict[str, torch.Tensor] = {}
        lengths: dict[str, torch.Tensor] = {}
        if self.ec is not None:
            jts = self.ec(features)  # dict[str, JaggedTensor]
            for n in self.ec_pooled_names:
                parts.append(_pool_jagged(jts[n], self.combiners[n], B))  # (B, D)
                produced.append(n)
            for n in self.sequence_names:
                jt = jts[n]
                L = self.maxlen[n]
                sequences[n] = jt.to_padded_dense(desired_length=L, padding_value=0.0)  # (B, L, D)
                lengths[n] = jt.lengths().clamp(max=L)  # (B,)
        linear: Optional[torch.Tensor] = None
        if parts:
            flat = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, W): W = sum D (+ carried columns)
            layout = self._layout_for(tuple(produced), flat.device)
            if layout.interleaved:  # every feature carried, in schema order: rows [e_f | w_f]
                flat, linear = _SplitCarried.apply(flat, self.num_pooled, self.uniform_dim)
            else:
                if layout.lin is not None:
                    linear = flat.index_select(1, layout.lin).view(B, -1, LINEAR_DIM)  # (B, F_c, LINEAR_DIM)
                if layout.perm is not None:
                    flat = flat.index_select(1, layout.perm)  # (B, sum D) schema order
        else:
            flat = torch.zeros(B, 0, device=features.device())
        pooled = flat.view(B, self.num_pooled, self.uniform_dim) if self.uniform_dim is not None else None  # (B, F, D)
        return SparseOutput(pooled=pooled, pooled_flat=flat, sequences=sequences, seq_lengths=lengths, linear=linear)


class LinearArch(nn.Module):
    """DeepCTR's linear (wide) part: dim-1 tables per sparse feature plus a weight per dense value.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Iterable[str] | None): linear feature columns (default: all features of the schema).
        table_prefix (str): prefix of the table names (distinct prefixes give distinct tables and initial weights).
        init_std (float | None): the dense weight starts from ``N(0, init_std ** 2)`` as in DeepCTR's ``Linear``
            (models pass their config's ``init_std``); ``None``: torch's default ``nn.Linear`` init.
        shared (SparseArch | None): an arch carrying some of these features' weights in its embedding rows
            (its ``linear_names``); they get no table here, and ``forward`` takes them as ``carried``.

    Call: ``forward(dense: Tensor (B, n_dense), features: KeyedJaggedTensor, carried: Tensor (B, F_c, 4) | None)
    -> Tensor (B, 1)``; ``carried`` is the shared arch's ``SparseOutput.linear`` (required when it carries any).
    Multi-valued features are pooled with their combiner (``max`` is taken as ``mean`` for the linear tables).

    FBGEMM's fused kernels need table widths divisible by 4, so each "dim-1" weight is stored as a width-4 row
    whose four values are averaged (``LINEAR_DIM``; memory ``4 / D`` of the main tables). The mean, not the sum,
    keeps the training dynamics of DeepCTR's dim-1 weight under scale-invariant optimizers (Adagrad, row-wise
    Adagrad, Adam): each column's gradient is ``g / 4`` and its normalised step equals the dim-1 weight's, so the
    mean moves exactly as that weight would (a sum would move 4x faster). Columns start from ``N(0, (2 s) ** 2)``
    so the mean is DeepCTR's ``N(0, s ** 2)`` (``s`` = ``init_std``). (Plain SGD, not scale-invariant, moves the
    mean at 1/4 of the dim-1 weight's speed.)
    """

    def __init__(self, schema: FeatureSchema, feature_names: Iterable[str] | None = None,
                 table_prefix: str = "linear__", init_std: Optional[float] = None,
                 shared: Optional[SparseArch] = None) -> None:
        super().__init__()
        names = list(feature_names) if feature_names is not None else [f.name for f in schema.features]
        carried = set(shared.linear_names) if shared is not None else set()
        self.carried_names = [n for n in names if n in carried]
        sparse = [n for n in names if n in set(schema.sparse_names) and n not in carried]
        dense = [n for n in names if n in set(schema.dense_names)]
        by_table: dict[str, list[SparseFeat | VarLenSparseFeat]] = {}
        for n in sparse:
            f = schema.feature(n)
            by_table.setdefault(f.embedding_name, []).append(f)  # type: ignore[union-attr,arg-type]
        specs = {t.name: t for t in schema.tables()}
        cfgs = []
        for tname, tfeats in by_table.items():
            pooling = _table_pooling(tfeats) or PoolingType.MEAN
            cfgs.append(EmbeddingBagConfig(num_embeddings=specs[tname].num_embeddings, embedding_dim=LINEAR_DIM,
                                           name=table_prefix + tname, feature_names=[f.name for f in tfeats],
                                           pooling=pooling))
        self.ebc: Optional[EmbeddingBagCollection] = EmbeddingBagCollection(tables=cfgs, device=META) if cfgs else None
        if self.ebc is not None:
            mark_linear_tables(self.ebc)
        # Column mask selecting the chosen dense features out of the schema's dense tensor.
        cols: list[int] = []
        start = 0
        for f in schema.dense_features:
            if f.name in dense:
                cols.extend(range(start, start + f.dimension))
            start += f.dimension
        self.register_buffer("_dense_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self._all_dense = cols == list(range(schema.n_dense))
        self.dense_weight: Optional[nn.Linear] = nn.Linear(len(cols), 1, bias=False) if cols else None
        if self.dense_weight is not None and init_std is not None:
            nn.init.normal_(self.dense_weight.weight, mean=0.0, std=init_std)

    def forward(self, dense: torch.Tensor, features: KeyedJaggedTensor,
                carried: Optional[torch.Tensor] = None) -> torch.Tensor:
        B = dense.shape[0]  # a KJT with no keys has stride 0
        if self.carried_names:
            if carried is None:
                raise RuntimeError(f"LinearArch: the weights of {self.carried_names} ride in the embedding rows; pass "
                                   "the embedding arch's SparseOutput.linear as carried")
            # (B, 1): summed as this arch sums its own tables' (B, F * 4) output
            logit = carried.reshape(B, -1).sum(dim=1, keepdim=True) * (1.0 / LINEAR_DIM)
        else:
            logit = dense.new_zeros(B, 1)  # (B, 1)
        if self.ebc is not None:
            w = self.ebc(features).values()  # (B, F * 4)
            logit = logit + w.sum(dim=1, keepdim=True) * (1.0 / LINEAR_DIM)  # (B, 1): sum over F of the column means
        if self.dense_weight is not None:
            x = dense if self._all_dense else dense.index_select(1, self._dense_cols)  # (B, n)
            logit = logit + self.dense_weight(x)  # (B, 1)
        return logit


def materialize(module: nn.Module, device: torch.device | str = "cpu", seed: int = 0) -> nn.Module:
    """Allocate and initialise the meta-built embedding tables of ``module`` on ``device`` (unsharded use).

    Only TorchRec embedding modules are built on ``meta`` (dense layers are ordinary CPU modules). Tables get
    :func:`dist_ctr.sparse.init.table_init` with ``seed`` and each table's init (the model's ``init_std``, see
    :func:`dist_ctr.sparse.init.table_inits`): the same weights the sharded engine starts from.
    """
    dev = torch.device(device)
    inits = table_inits(module)
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection) and any(p.is_meta for p in m.parameters()):
            m.to_empty(device=dev)
            with torch.no_grad():
                for c in m.embedding_bag_configs():
                    m.embedding_bags[c.name].weight.copy_(
                        table_init(seed, c.name, c.num_embeddings, c.embedding_dim, 0, c.num_embeddings, *inits[c.name]))
        elif isinstance(m, EmbeddingCollection) and any(p.is_meta for p in m.parameters()):
            m.to_empty(device=dev)
            with torch.no_grad():
                for c in m.embedding_configs():
                    m.embeddings[c.name].weight.copy_(
                        table_init(seed, c.name, c.num_embeddings, c.embedding_dim, 0, c.num_embeddings, *inits[c.name]))
    return module.to(dev)
