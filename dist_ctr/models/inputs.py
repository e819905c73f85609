"""The input blocks the models share: feature selection with clear errors, the DNN input (DeepCTR's
``dnn_feature_columns``), dense column selection, per-feature linear weights on TorchRec tables, and the
history inputs of the behaviour-sequence models (DIN, DIEN, BST, DSIN).

Notation: ``B`` batch, ``F`` sparse features, ``D`` embedding dim, ``K`` outputs per feature, ``N`` DNN input
width (dense values + flattened embeddings), ``L`` history length, ``E`` width of one behaviour.

>>> from dist_ctr.schema import FeatureSchema, SparseFeat, DenseFeat
>>> s = FeatureSchema((SparseFeat("a", 10, 4), DenseFeat("x"), SparseFeat("b", 10, 4)))
>>> split_features(s, None, "NFM")
(['a', 'b'], ['x'])
>>> common_dim(s, ["a", "b"], "NFM")
4
>>> DeepInputs(s).output_dim
9

**How a target finds its history.** The config names the target features (``history_feature_list``, DeepCTR's
argument, e.g. ``("item_id", "cate_id")``). The history of a target is the ``VarLenSparseFeat`` that reads the same
embedding table (same ``embedding_name``): ``SparseFeat("item_id", V, D)`` and
``VarLenSparseFeat(SparseFeat("hist_item_id", V, D, embedding_name="item_id"), maxlen=L)``. No name prefix is
looked at; no or several candidates is an error naming the target, and ``history_features`` (target -> history)
names them explicitly. History features become TorchRec ``EmbeddingCollection`` sequences ``(B, L, D)``; all other
sparse features are pooled as usual and, with the dense values, feed the DNN.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.schema import FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import SparseArch, SparseOutput
from dist_ctr.sparse.arch import LINEAR_DIM, LinearArch, mark_linear_tables

# Re-exported by ``dist_ctr.models`` as before (they were public in wdl.py and din.py); the rest is plumbing.
if TYPE_CHECKING:
    from dist_ctr.models.base import CTRModel

__all__ = ["DeepInputs", "HistoryInputs", "SequenceBatch", "check_feature_names", "default_history_targets",
           "find_history", "linear_part"]


def check_feature_names(schema: FeatureSchema, names: Optional[Iterable[str]], what: str) -> list[str]:
    """Feature names of a config argument (``None`` = every feature of the schema), each checked to exist."""
    all_names = [f.name for f in schema.features]
    if names is None:
        return all_names
    names = list(names)
    unknown = [n for n in names if n not in set(all_names)]
    if unknown:
        raise ValueError(f"{what}: unknown feature(s) {unknown}; the schema has {all_names}")
    return names


def linear_part(model: "CTRModel", names: Optional[Iterable[str]], l2_reg_linear: float,
                shared: Optional[SparseArch] = None) -> LinearArch:
    """DeepCTR's linear part of ``model`` over ``names`` (``None`` = every feature; unknown names are an error
    naming ``linear_feature_names``), started from the model's ``init_std``, its dense weight under
    ``l2_reg_linear``; the features ``shared`` carries in its embedding rows get no table of their own."""
    arch = LinearArch(model.schema, check_feature_names(model.schema, names, "linear_feature_names"),
                      init_std=model.embedding_init_std, shared=shared)
    if arch.dense_weight is not None:
        model.register_l2(l2_reg_linear, arch.dense_weight.parameters())
    return arch


def deep_with_linear(model: "CTRModel", inputs: "DeepInputs", linear: LinearArch, l2_reg_embedding: float,
                     dense: torch.Tensor, sparse: KeyedJaggedTensor
                     ) -> tuple[Optional[SparseOutput], torch.Tensor, torch.Tensor]:
    """The wide-and-deep models' shared start: the DNN input, the linear logit (with the weights the embedding
    rows carry) and the L2 on the looked-up embeddings. Returns ``(emb, x (B, N), logit (B, 1))``."""
    emb, x = inputs(dense, sparse)
    logit = linear(dense, sparse, emb.linear if emb is not None else None)  # (B, 1)
    if emb is not None:
        model.add_embedding_l2(l2_reg_embedding, emb.pooled_flat)
    return emb, x, logit


def carried_linear(schema: FeatureSchema, config: object) -> list[str]:
    """The linear part's features to offer the deep embedding arch (``SparseArch(linear_features=...)``): all of
    ``config.linear_feature_names`` when ``config.linear_in_embedding_tables`` is set, else none."""
    if not getattr(config, "linear_in_embedding_tables", False):
        return []
    return check_feature_names(schema, getattr(config, "linear_feature_names", None), "linear_feature_names")


def split_features(schema: FeatureSchema, names: Optional[Sequence[str]], model: str,
                   key: str = "dnn_feature_names") -> tuple[list[str], list[str]]:
    """Sparse and dense feature names among ``names`` (default: every feature), in schema order.

    Raises:
        ValueError: a name is not a feature of the schema (the message names the model, the config key and it).
    """
    known = {f.name for f in schema.features}
    if names is not None:
        for n in names:
            if n not in known:
                raise ValueError(f"{model}: {key} names {n!r}, which is not a feature of the schema "
                                 f"(features: {[f.name for f in schema.features]})")
    chosen = set(names) if names is not None else known
    sparse = [n for n in schema.sparse_names if n in chosen]
    dense = [n for n in schema.dense_names if n in chosen]
    return sparse, dense


def require_sparse(sparse: Sequence[str], model: str, minimum: int = 1) -> None:
    """Raise a clear error when a model gets fewer sparse features than it needs."""
    if len(sparse) < minimum:
        what = "any sparse feature" if minimum == 1 else f"at least {minimum} sparse features (to form pairs)"
        raise ValueError(f"{model} needs {what}; got {list(sparse)}")


def common_dim(schema: FeatureSchema, sparse: Sequence[str], model: str) -> int:
    """The one ``embedding_dim`` all ``sparse`` features share; the error names the first feature that differs."""
    require_sparse(sparse, model)
    dims = {n: int(schema.feature(n).embedding_dim) for n in sparse}  # type: ignore[union-attr]
    if len(set(dims.values())) > 1:
        odd = next(n for n in sparse if dims[n] != dims[sparse[0]])
        raise ValueError(f"{model} needs one embedding_dim for all its sparse features; feature {odd!r} differs "
                         f"(embedding_dim per feature: {dims})")
    return dims[sparse[0]]


class DenseColumns(nn.Module):
    """Selects the columns of chosen dense features from the schema's ``(B, n_dense)`` tensor.

    Call: ``forward(dense: Tensor (B, n_dense)) -> Tensor (B, width)``.
    """

    def __init__(self, schema: FeatureSchema, dense_names: Sequence[str]) -> None:
        super().__init__()
        cols: list[int] = []
        start = 0
        for f in schema.dense_features:
            if f.name in set(dense_names):
                cols.extend(range(start, start + f.dimension))
            start += f.dimension
        self.width = len(cols)
        self._all = cols == list(range(schema.n_dense))
        self.register_buffer("_cols", torch.tensor(cols, dtype=torch.long), persistent=False)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense if self._all else dense.index_select(1, self._cols)  # (B, width)


def _widened(schema: FeatureSchema, width: int) -> FeatureSchema:
    """The schema with every sparse feature re-declared at ``embedding_dim = width`` (same ids, tables,
    combiners; all of them, so that features sharing a table still agree)."""
    feats = []
    for f in schema.features:
        if isinstance(f, VarLenSparseFeat):
            f = dataclasses.replace(f, sparsefeat=dataclasses.replace(f.sparsefeat, embedding_dim=width))
        elif isinstance(f, SparseFeat):
            f = dataclasses.replace(f, embedding_dim=width)
        feats.append(f)
    return FeatureSchema(tuple(feats), schema.labels)


class FeatureWeights(nn.Module):
    """Per-feature linear weights ``w_f[id_f]`` with ``K`` outputs each, on TorchRec tables.

    DeepCTR's dim-1 linear embedding, kept in the schema's order per feature (IFM / DIFM re-weight each feature's
    linear term; MLR needs ``K`` independent linear learners). Like :class:`~dist_ctr.sparse.LinearArch`, each
    scalar is stored as ``LINEAR_DIM`` = 4 values that are averaged (FBGEMM needs widths divisible by 4; the mean
    trains like a dim-1 weight under Adagrad / Adam, and starts from ``N(0, init_std ** 2)``); the tables
    are ``K * 4`` wide and named ``table_prefix + embedding_name``, so distinct prefixes give distinct (and
    distinctly initialised) tables.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Sequence[str]): sparse features (non-empty).
        num_outputs (int): ``K``.
        table_prefix (str): TorchRec table-name prefix, unique within the model.

    Call: ``forward(features: KeyedJaggedTensor) -> Tensor (B, F, K)``.
    """

    def __init__(self, schema: FeatureSchema, feature_names: Sequence[str], num_outputs: int = 1,
                 table_prefix: str = "linear__") -> None:
        super().__init__()
        names = list(feature_names)
        self.num_features = len(names)
        self.num_outputs = int(num_outputs)
        self.arch = SparseArch(_widened(schema, LINEAR_DIM * self.num_outputs), names, table_prefix=table_prefix)
        mark_linear_tables(self.arch)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        flat = self.arch(features).pooled_flat  # (B, F * K * 4)
        return flat.view(-1, self.num_features, self.num_outputs, LINEAR_DIM).mean(dim=-1)  # (B, F, K)


class DeepInputs(nn.Module):
    """DeepCTR's ``dnn_feature_columns``: pooled embeddings of the sparse ones, values of the dense ones.

    Args:
        schema (FeatureSchema): the features.
        feature_names (Iterable[str] | None): the DNN features (default: all).
        linear_features (Iterable[str]): the linear part's features to carry in the embedding rows
            (:func:`carried_linear`; see :class:`~dist_ctr.sparse.SparseArch`).

    Attributes:
        sparse (SparseArch | None): ``None`` when no sparse feature is selected.
        num_fields (int): ``F``; ``embedding_dim`` (int | None): ``D`` when all fields agree, else ``None``.
        output_dim (int): ``N = n_dense_selected + sum_f D_f``.

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> (SparseOutput | None, Tensor (B, N))``; the flat
    tensor is the selected dense values followed by the pooled embeddings in feature order.
    """

    def __init__(self, schema: FeatureSchema, feature_names: Optional[Iterable[str]] = None,
                 linear_features: Iterable[str] = ()) -> None:
        super().__init__()
        names = check_feature_names(schema, feature_names, "dnn_feature_names")
        sparse_set, dense_set = set(schema.sparse_names), set(schema.dense_names)
        sparse = [n for n in names if n in sparse_set]
        self.sparse: Optional[SparseArch] = (SparseArch(schema, sparse, linear_features=linear_features)
                                             if sparse else None)
        self.sparse_names = sparse
        self.dense_cols = DenseColumns(schema, [n for n in names if n in dense_set])
        self.dense_dim = self.dense_cols.width
        self.num_fields = self.sparse.num_pooled if self.sparse is not None else 0
        self.embedding_dim: Optional[int] = self.sparse.uniform_dim if self.sparse is not None else None
        self.output_dim = self.dense_dim + (sum(self.sparse.pooled_dims) if self.sparse is not None else 0)

    def require_equal_dims(self, model: str) -> None:
        """Raise a clear error when the sparse fields have different embedding dims (FM, CIN need one ``D``)."""
        if self.sparse is not None and self.embedding_dim is None:
            dims = dict(zip(self.sparse.pooled_names, self.sparse.pooled_dims))
            raise ValueError(f"{model} needs one embedding_dim for all sparse DNN features, got {dims}")

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> tuple[Optional[SparseOutput], torch.Tensor]:
        x = self.dense_cols(dense)  # (B, n_dense_selected)
        if self.sparse is None:
            return None, x
        out = self.sparse(sparse)
        flat = torch.cat([x, out.pooled_flat], dim=1) if self.dense_dim else out.pooled_flat  # (B, N)
        return out, flat


def find_history(schema: FeatureSchema, target: str, model: str, explicit: Optional[Mapping[str, str]] = None,
                 exclude: Iterable[str] = ()) -> str:
    """The history feature of ``target``: ``explicit[target]`` when given, else the one ``VarLenSparseFeat`` on
    the target's embedding table (features in ``exclude`` are not candidates).

    Raises:
        ValueError: the target is not a single-valued sparse feature, the history does not share its table, or
            there is no or more than one candidate (the message names the model, the target and the candidates).
    """
    names = [f.name for f in schema.features]
    if target not in names:
        raise ValueError(f"{model}: target feature {target!r} (history_feature_list) is not in the schema "
                         f"(features: {names})")
    tf = schema.feature(target)
    if not isinstance(tf, SparseFeat):
        raise ValueError(f"{model}: target feature {target!r} must be a single-valued SparseFeat, got "
                         f"{type(tf).__name__}")
    if explicit is not None and target in explicit:
        h = explicit[target]
        if h not in names:
            raise ValueError(f"{model}: history_features[{target!r}] = {h!r} is not a feature of the schema")
        hf = schema.feature(h)
        if not isinstance(hf, VarLenSparseFeat):
            raise ValueError(f"{model}: history feature {h!r} of target {target!r} must be a VarLenSparseFeat")
        if hf.embedding_name != tf.embedding_name:
            raise ValueError(f"{model}: history feature {h!r} reads table {hf.embedding_name!r} but its target "
                             f"{target!r} reads {tf.embedding_name!r}; they must share one table (embedding_name)")
        return h
    skip = set(exclude)
    cands = [f.name for f in schema.varlen_features
             if f.embedding_name == tf.embedding_name and f.name not in skip]
    if len(cands) != 1:
        what = "no VarLenSparseFeat" if not cands else f"several VarLenSparseFeats {cands}"
        raise ValueError(f"{model}: target feature {target!r} (table {tf.embedding_name!r}) has {what} on its "
                         f"table to serve as its history; name it with history_features={{{target!r}: ...}}")
    return cands[0]


def default_history_targets(schema: FeatureSchema) -> tuple[str, ...]:
    """For examples and the registry-wide tests: the first single-valued feature (schema order) whose table is
    read by exactly one ``VarLenSparseFeat``, as a one-element ``history_feature_list`` (empty when none)."""
    for f in schema.single_sparse:
        if sum(v.embedding_name == f.embedding_name for v in schema.varlen_features) == 1:
            return (f.name,)
    return ()


def target_columns(arch: SparseArch, targets: Sequence[str]) -> tuple[list[int], int]:
    """Columns of the ``targets``' pooled embeddings in ``arch``'s ``pooled_flat`` (target order), and its width."""
    dims = dict(zip(arch.pooled_names, arch.pooled_dims))
    offsets, start = {}, 0
    for n in arch.pooled_names:
        offsets[n] = start
        start += dims[n]
    return [i for t in targets for i in range(offsets[t], offsets[t] + dims[t])], start


class SequenceBatch(NamedTuple):
    """What :class:`HistoryInputs` returns.

    Attributes:
        dense (Tensor): ``(B, n_dense)`` dense values.
        pooled (Tensor): ``(B, P)`` pooled embeddings of the other sparse features (targets included).
        query (Tensor): ``(B, 1, E)`` the target features' embeddings, concatenated.
        keys (Tensor): ``(B, L, E)`` the history features' embeddings, concatenated; zero at padded positions.
        lengths (Tensor): ``(B,)`` true history lengths (of the first history feature).
        extra (dict[str, Tensor]): other requested sequences ``(B, L_x, D)`` (e.g. DIEN's negatives).
    """

    dense: torch.Tensor
    pooled: torch.Tensor
    query: torch.Tensor
    keys: torch.Tensor
    lengths: torch.Tensor
    extra: dict[str, torch.Tensor]


class HistoryInputs(nn.Module):
    """The inputs of a behaviour-sequence model: targets, their histories, the other features.

    Args:
        schema (FeatureSchema): features.
        targets (Sequence[str]): target features (``history_feature_list``), non-empty.
        model (str): model name for error messages.
        history_features (Mapping[str, str] | None): explicit target -> history links.
        extra_sequences (Sequence[str]): more var-len features kept as sequences and excluded from the DNN input
            and from the history search (DIEN's negative sequences).

    Attributes:
        histories (list[str]): the history feature of each target, in target order.
        maxlen (int): ``L``; query_dim (int): ``E``; pooled_dim (int): ``P``; n_dense (int).

    Call: ``forward(dense: Tensor (B, n_dense), sparse: KJT) -> SequenceBatch``.
    """

    def __init__(self, schema: FeatureSchema, targets: Sequence[str], model: str,
                 history_features: Optional[Mapping[str, str]] = None, extra_sequences: Sequence[str] = ()) -> None:
        super().__init__()
        targets = list(targets)
        if not targets:
            raise ValueError(f"{model} needs history_feature_list: the target features whose histories it attends "
                             f"over (e.g. ('item_id',)); the schema's features are {[f.name for f in schema.features]}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"{model}: history_feature_list has duplicates: {targets}")
        if history_features is not None:
            unknown = sorted(set(history_features) - set(targets))
            if unknown:
                raise ValueError(f"{model}: history_features names target(s) {unknown} that are not in "
                                 f"history_feature_list {targets}")
        extra = list(extra_sequences)
        self.histories = [find_history(schema, t, model, history_features, exclude=extra) for t in targets]
        if len(set(self.histories)) != len(self.histories):
            raise ValueError(f"{model}: two targets share one history feature: {dict(zip(targets, self.histories))}")
        maxlens = {h: schema.feature(h).maxlen for h in self.histories}  # type: ignore[union-attr]
        if len(set(maxlens.values())) != 1:
            raise ValueError(f"{model}: history features must have one maxlen, got {maxlens}")
        self.targets = targets
        self.extra_names = extra
        self.maxlen = next(iter(maxlens.values()))
        seq_set = set(self.histories) | set(extra)
        pooled = [n for n in schema.sparse_names if n not in seq_set]
        self.sparse = SparseArch(schema, pooled, sequence_features=self.histories + extra)
        cols, self.pooled_dim = target_columns(self.sparse, targets)
        self.register_buffer("_target_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self.query_dim = len(cols)
        self.n_dense = schema.n_dense

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> SequenceBatch:
        out = self.sparse(sparse)
        B = dense.shape[0]
        query = out.pooled_flat.index_select(1, self._target_cols).view(B, 1, self.query_dim)  # (B, 1, E)
        seqs = [out.sequences[h] for h in self.histories]
        keys = torch.cat(seqs, dim=-1) if len(seqs) > 1 else seqs[0]  # (B, L, E)
        lengths = out.seq_lengths[self.histories[0]].long()  # (B,)
        extra = {n: out.sequences[n] for n in self.extra_names}
        return SequenceBatch(dense, out.pooled_flat, query, keys, lengths, extra)
