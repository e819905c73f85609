"""The ``criteo-1tb-multihot`` preset: MLPerf bag sizes and table sizes, scaling, and data generated from it."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from dist_ctr.data.presets import CRITEO_1TB_MLPERF_CARDINALITIES, MLPERF_MULTIHOT_SIZES, get_preset
from dist_ctr.schema import SchemaError, SparseFeat, VarLenSparseFeat


def test_bag_and_table_sizes_are_mlperf() -> None:
    s = get_preset("criteo-1tb-multihot")
    feats = [s.feature(n) for n in s.sparse_names]
    assert sum(MLPERF_MULTIHOT_SIZES) == 214 and len(feats) == 26
    for f, bag, rows in zip(feats, MLPERF_MULTIHOT_SIZES, CRITEO_1TB_MLPERF_CARDINALITIES):
        assert f.vocabulary_size == rows and f.embedding_dim == 128
        if bag == 1:
            assert isinstance(f, SparseFeat)
        else:
            assert isinstance(f, VarLenSparseFeat) and f.maxlen == bag and f.combiner == "sum"
    assert sum(c == 40_000_000 for c in CRITEO_1TB_MLPERF_CARDINALITIES) == 5


def test_scale_and_max_rows() -> None:
    s = get_preset("criteo-1tb-multihot", scale=0.001, max_rows=5000, embedding_dim=16)
    sizes = [s.feature(n).vocabulary_size for n in s.sparse_names]
    assert sizes == [min(max(1, int(c * 0.001)), 5000) for c in CRITEO_1TB_MLPERF_CARDINALITIES]
    assert s.feature("C1").embedding_dim == 16
    with pytest.raises(SchemaError, match="scale"):
        get_preset("criteo-1tb-multihot", scale=0)
    with pytest.raises(SchemaError, match="max_rows"):
        get_preset("criteo-1tb-multihot", max_rows=0)


def test_generated_bags_respect_sizes_and_tables(tmp_path) -> None:
    from dist_ctr.data.synthetic import generate

    s = get_preset("criteo-1tb-multihot", max_rows=1000)
    generate(str(tmp_path), s, rows=300, shards=1)
    t = pq.read_table(next(tmp_path.rglob("*.parquet")))
    assert t.num_rows == 300
    for n, bag in zip(s.sparse_names, MLPERF_MULTIHOT_SIZES):
        col = t.column(n).combine_chunks()
        if bag == 1:
            ids = col.to_numpy()
        else:
            lengths = col.value_lengths().to_numpy()
            assert lengths.max() <= bag
            ids = col.flatten().to_numpy()
        assert ids.min() >= 0 and ids.max() < s.feature(n).vocabulary_size


def test_fixed_bags_hold_exactly_the_mlperf_sizes(tmp_path) -> None:
    from dist_ctr.cli import main

    assert main(["data", "synth", str(tmp_path), "--preset", "criteo-1tb-multihot", "--rows", "200", "--shards", "1",
                 "--fixed-bags"]) == 0
    t = pq.read_table(next(tmp_path.rglob("*.parquet")))
    s = get_preset("criteo-1tb-multihot")
    total = 0
    for n, bag in zip(s.sparse_names, MLPERF_MULTIHOT_SIZES):
        col = t.column(n).combine_chunks()
        if bag > 1:
            assert (col.value_lengths().to_numpy() == bag).all()
            assert col.flatten().to_numpy().max() < s.feature(n).vocabulary_size
        total += bag
    assert total == 214
