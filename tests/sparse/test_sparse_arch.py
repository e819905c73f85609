"""SparseArch / LinearArch: TorchRec modules on meta, outputs equal to hand lookups, schema order."""

from __future__ import annotations

import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat, VarLenSparseFeat
from dist_ctr.sparse import LinearArch, SparseArch, materialize


@pytest.fixture()
def schema() -> FeatureSchema:
    return FeatureSchema((
        SparseFeat("a", 10, 4, embedding_name="t"),
        VarLenSparseFeat(SparseFeat("b", 7, 4), maxlen=3, combiner="max"),
        SparseFeat("c", 10, 4, embedding_name="t"),
        VarLenSparseFeat(SparseFeat("h", 10, 4, embedding_name="u"), maxlen=3),
        SparseFeat("d", 10, 4, embedding_name="u"),
        VarLenSparseFeat(SparseFeat("m", 9, 4), maxlen=4, combiner="mean"),
        DenseFeat("x", 2),
    ))


def _kjt() -> KeyedJaggedTensor:
    # B = 2; per key lengths (row0, row1)
    keys = ["a", "b", "c", "h", "d", "m"]
    lengths = [1, 1, 3, 0, 1, 1, 4, 0, 1, 1, 2, 0]
    values = [1, 2, 3, 1, 5, 4, 4, 1, 2, 3, 4, 7, 8, 2, 8]
    return KeyedJaggedTensor.from_lengths_sync(keys, torch.tensor(values), torch.tensor(lengths, dtype=torch.int32))


def test_built_on_meta_in_torchrec_modules(schema):
    arch = SparseArch(schema, sequence_features=["h"])
    assert isinstance(arch.ebc, EmbeddingBagCollection) and isinstance(arch.ec, EmbeddingCollection)
    assert all(p.is_meta for p in arch.parameters())
    assert not any(isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and m is not None
                   for m in arch.children())
    # t (sum) and m (mean) are bags; b (max) and u (sequence) live in the EC.
    assert sorted(c.name for c in arch.ebc.embedding_bag_configs()) == ["m", "t"]
    assert sorted(c.name for c in arch.ec.embedding_configs()) == ["b", "u"]


def test_outputs_equal_hand_lookups(schema):
    arch = materialize(SparseArch(schema, sequence_features=["h"]), seed=0)
    out = arch(_kjt())
    assert arch.pooled_names == ["a", "b", "c", "d", "m"]
    assert out.pooled.shape == (2, 5, 4)
    assert out.pooled_flat.shape == (2, 20)
    T = arch.ebc.embedding_bags["t"].weight
    M = arch.ebc.embedding_bags["m"].weight
    Bw = arch.ec.embeddings["b"].weight
    U = arch.ec.embeddings["u"].weight
    torch.testing.assert_close(out.pooled[0, 0], T[1])
    torch.testing.assert_close(out.pooled[1, 0], T[2])
    torch.testing.assert_close(out.pooled[0, 1], Bw[[3, 1, 5]].max(0).values)  # max combiner
    torch.testing.assert_close(out.pooled[1, 1], torch.zeros(4))  # empty bag -> 0
    torch.testing.assert_close(out.pooled[0, 2], T[4])
    torch.testing.assert_close(out.pooled[0, 3], U[7])  # target sharing the sequence table, from the EC
    torch.testing.assert_close(out.pooled[0, 4], M[[2, 8]].mean(0))  # mean combiner
    torch.testing.assert_close(out.pooled[1, 4], torch.zeros(4))
    torch.testing.assert_close(out.sequences["h"][0], U[[1, 2, 3]])
    torch.testing.assert_close(out.sequences["h"][1], torch.zeros(3, 4))
    assert out.seq_lengths["h"].tolist() == [3, 0]


def test_mixed_dims_give_flat_only():
    s = FeatureSchema((SparseFeat("a", 5, 4), SparseFeat("b", 5, 8)))
    arch = materialize(SparseArch(s))
    kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.tensor([1, 2]), torch.tensor([1, 1], dtype=torch.int32))
    out = arch(kjt)
    assert out.pooled is None and out.pooled_flat.shape == (1, 12)


def test_batch_of_one_and_extra_keys(schema):
    arch = materialize(SparseArch(schema, feature_names=["a", "m"]))
    kjt = KeyedJaggedTensor.from_lengths_sync(["a", "m", "zzz"], torch.tensor([3, 1, 2, 0]),
                                              torch.tensor([1, 2, 1], dtype=torch.int32))
    out = arch(kjt)
    assert out.pooled.shape == (1, 2, 4)


def test_linear_arch_equals_sum_of_weights(schema):
    lin = materialize(LinearArch(schema), seed=0)
    dense = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    got = lin(dense, _kjt())
    # each id's scalar weight is the mean of its 4 stored columns
    w = {c.name: lin.ebc.embedding_bags[c.name].weight.mean(1) for c in lin.ebc.embedding_bag_configs()}
    row0 = (w["linear__t"][1] + w["linear__b"][[3, 1, 5]].mean() + w["linear__t"][4] + w["linear__u"][[1, 2, 3, 4]].mean()
            + w["linear__u"][7] + w["linear__m"][[2, 8]].mean())
    row0 = row0 + dense[0] @ lin.dense_weight.weight[0]
    torch.testing.assert_close(got[0, 0], row0)
    assert got.shape == (2, 1)


def test_sequence_feature_must_be_varlen(schema):
    with pytest.raises(ValueError, match="sequence feature 'a'"):
        SparseArch(schema, sequence_features=["a"])


def test_materialize_is_deterministic_and_in_range(schema):
    a = materialize(SparseArch(schema, sequence_features=["h"]), seed=3)
    b = materialize(SparseArch(schema, sequence_features=["h"]), seed=3)
    c = materialize(SparseArch(schema, sequence_features=["h"]), seed=4)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
        assert not torch.equal(p, r), n
        bound = (1.0 / p.shape[0]) ** 0.5
        assert p.abs().max() <= bound and p.std() > bound / 4, n


class _WithInitStd(torch.nn.Module):
    def __init__(self, schema: FeatureSchema, std: float) -> None:
        super().__init__()
        self.embedding_init_std = std
        self.sparse = SparseArch(schema)
        self.linear = LinearArch(schema)


def test_linear_weights_start_from_deepctr_init_std():
    """The scalar a linear row holds (mean of 4 columns) is N(0, init_std^2), like the main tables' values."""
    schema = FeatureSchema((SparseFeat("a", 20_000, 8),))
    m = materialize(_WithInitStd(schema, 0.01), seed=0)
    scalar = m.linear.ebc.embedding_bags["linear__a"].weight.mean(1)  # (20000,)
    main = m.sparse.ebc.embedding_bags["a"].weight  # (20000, 8)
    assert abs(float(scalar.std()) - 0.01) < 0.0005 and abs(float(main.std()) - 0.01) < 0.0005


def test_linear_arch_trains_like_a_dim1_weight_under_adagrad():
    """Adagrad on the 4 stored columns moves their mean exactly as Adagrad moves DeepCTR's dim-1 weight."""
    schema = FeatureSchema((SparseFeat("a", 30, 4), SparseFeat("b", 20, 4)))
    lin = materialize(LinearArch(schema), seed=1)
    tables = {c.name: lin.ebc.embedding_bags[c.name].weight for c in lin.ebc.embedding_bag_configs()}
    ref = {n: torch.nn.Parameter(w.detach().mean(1).clone()) for n, w in tables.items()}  # (V,) dim-1 weights
    opt = torch.optim.Adagrad(list(tables.values()), lr=0.3)
    opt_ref = torch.optim.Adagrad(list(ref.values()), lr=0.3)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        a, b = torch.randint(0, 30, (16,), generator=g), torch.randint(0, 20, (16,), generator=g)
        y = torch.randn(16, generator=g)
        kjt = KeyedJaggedTensor.from_lengths_sync(["a", "b"], torch.cat([a, b]), torch.ones(32, dtype=torch.int32))
        loss = (lin(torch.zeros(16, 0), kjt)[:, 0] - y).pow(2).mean()
        loss_ref = (ref["linear__a"][a] + ref["linear__b"][b] - y).pow(2).mean()
        torch.testing.assert_close(loss, loss_ref)
        for o, l in ((opt, loss), (opt_ref, loss_ref)):
            o.zero_grad()
            l.backward()
            o.step()
    for n, w in tables.items():
        torch.testing.assert_close(w.detach().mean(1), ref[n].detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(w.detach().mean(1), w.detach()[:, 0])  # the columns really differ
