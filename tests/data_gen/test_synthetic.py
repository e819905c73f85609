"""Synthetic generator: determinism, layout, planted signal (Bayes ceiling above what a first-order model reaches)."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dist_ctr.data.presets import (
    CRITEO_1TB_CARDINALITIES,
    CRITEO_1TB_MLPERF_CARDINALITIES,
    criteo_1tb_schema,
    criteo_kaggle_schema,
    get_preset,
)
from dist_ctr.data.synthetic import PlantedModel, PlantedSignal, exact_auc, generate, synth_table
from dist_ctr.schema import DenseFeat, FeatureSchema, SchemaError, SparseFeat, VarLenSparseFeat

SMALL = FeatureSchema((DenseFeat("I1"), DenseFeat("I2"), SparseFeat("C1", 200, 4), SparseFeat("C2", 50, 4),
                       SparseFeat("C3", 1000, 4)))


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


# ---- presets ------------------------------------------------------------------------------------------------------
def test_presets_have_criteo_layout_and_mlperf_cardinalities():
    k = get_preset("criteo-kaggle")
    assert k.dense_names == [f"I{i}" for i in range(1, 14)]
    assert k.sparse_names == [f"C{i}" for i in range(1, 27)]
    assert k.label_names == ["label"]
    assert max(f.vocabulary_size for f in k.sparse_features) == 50_000
    assert min(f.vocabulary_size for f in k.sparse_features) >= 3
    t = get_preset("criteo_1tb", embedding_dim=64)
    assert [f.vocabulary_size for f in t.sparse_features] == list(CRITEO_1TB_MLPERF_CARDINALITIES)
    assert {f.embedding_dim for f in t.sparse_features} == {64}
    assert sum(CRITEO_1TB_MLPERF_CARDINALITIES) == 204_184_588
    assert sum(CRITEO_1TB_CARDINALITIES) == 177_944_275
    assert max(CRITEO_1TB_MLPERF_CARDINALITIES) == 40_000_000
    assert criteo_1tb_schema(capped=False).feature("C1").vocabulary_size == 45_833_188
    assert criteo_kaggle_schema(use_hash=True).feature("C5").use_hash


def test_preset_errors_name_the_problem():
    with pytest.raises(SchemaError, match="unknown schema preset 'criteo-2tb'"):
        get_preset("criteo-2tb")
    with pytest.raises(SchemaError, match="26 vocabulary sizes"):
        criteo_kaggle_schema(vocab_sizes=[10] * 3)
    with pytest.raises(SchemaError, match="criteo-kaggle"):
        get_preset("criteo-kaggle", nonsense=1)


# ---- AUC ----------------------------------------------------------------------------------------------------------
def test_exact_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, 500).astype(np.float64)  # many ties
    y = (rng.random(500) < 0.3).astype(np.int8)
    assert exact_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(exact_auc([0.1, 0.2], [1, 1]))


# ---- files, determinism, layout -------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
    kw = dict(rows=3000, shards=2, row_group_rows=500)
    generate(str(tmp_path / "a"), SMALL, seed=3, **kw)
    generate(str(tmp_path / "b"), SMALL, seed=3, **kw)
    generate(str(tmp_path / "c"), SMALL, seed=4, **kw)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert [f.name for f in fa] == ["part-00000.parquet", "part-00001.parquet"]
    assert [f.read_bytes() for f in fa] == [f.read_bytes() for f in fb]
    ta, tc = pq.read_table(fa[0]), pq.read_table(fc[0])
    assert not ta.column("C1").equals(tc.column("C1"))
    assert ta.column("row_id").equals(tc.column("row_id"))


def test_row_ids_unique_shard_and_row_group_counts(tmp_path):
    rep = generate(str(tmp_path), SMALL, rows=10_001, shards=3, row_group_rows=1000, seed=0, row_id_start=500)
    files = _files(tmp_path)
    assert len(files) == 3 and rep.files == [f.name for f in files]
    rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
    assert rows == [3334, 3334, 3333]
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in files] == [4, 4, 4]
    assert {pq.ParquetFile(f).metadata.row_group(0).num_rows for f in files} == {1000}
    ids = np.concatenate([pq.read_table(f, columns=["row_id"]).column(0).to_numpy() for f in files])
    assert np.array_equal(np.sort(ids), np.arange(500, 500 + 10_001))
    assert rep.rows == 10_001 and rep.bytes == sum(f.stat().st_size for f in files)


def test_chunks_pipelined_across_files_and_processes_give_the_same_bytes(tmp_path, monkeypatch):
    """Several chunks per file (the last one partial) encoded on the writer thread while the next is drawn, across
    files: the bytes equal those written by two worker processes, and rows / row groups are in order."""
    import dist_ctr.data.synthetic.write as synthetic

    monkeypatch.setattr(synthetic, "_WRITE_CHUNK_ROWS", 1000)
    kw = dict(rows=10_500, shards=3, row_group_rows=500, seed=2)
    one = generate(str(tmp_path / "one"), SMALL, **kw)
    two = generate(str(tmp_path / "two"), SMALL, workers=2, **kw)
    f1, f2 = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert [f.read_bytes() for f in f1] == [f.read_bytes() for f in f2]
    assert one.bytes == two.bytes == sum(f.stat().st_size for f in f1)
    assert (one.bayes_auc, one.positive_rate) == (two.bayes_auc, two.positive_rate)
    ids = np.concatenate([pq.read_table(f, columns=["row_id"]).column(0).to_numpy() for f in f1])
    assert np.array_equal(ids, np.arange(10_500))
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in f1] == [7, 7, 7]


def test_an_encoding_error_is_raised_and_the_writer_thread_stops(tmp_path, monkeypatch):
    import threading

    import dist_ctr.data.synthetic.write as synthetic

    calls = []

    def failing(writer, table, row_group_rows, close=None):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full (test)")
        synthetic_encode(writer, table, row_group_rows, close)

    synthetic_encode = synthetic._encode
    monkeypatch.setattr(synthetic, "_WRITE_CHUNK_ROWS", 1000)
    monkeypatch.setattr(synthetic, "_encode", failing)
    with pytest.raises(OSError, match="disk full"):
        generate(str(tmp_path), SMALL, rows=6000, shards=2, row_group_rows=1000)
    assert not [t for t in threading.enumerate() if t.name.startswith("synth-write")]


def test_partitions_are_hive_directories(tmp_path):
    generate(str(tmp_path), SMALL, rows=4000, shards=2, seed=0, partitions=["2026-11-20", "2026-11-21", "region=eu"])
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert dirs == ["date=2026-11-20", "date=2026-11-21", "region=eu"]
    assert len(_files(tmp_path / "date=2026-11-20")) == 2
    d = ds.dataset(str(tmp_path / "date=2026-11-20"), format="parquet")
    assert d.count_rows() == 667 + 667  # 4000 rows over 6 files: 667, 667, 667, 667, 666, 666
    both = ds.dataset([str(p) for p in _files(tmp_path)][:4], format="parquet", partitioning="hive",
                      partition_base_dir=str(tmp_path))
    dates = set(both.to_table(columns=["date"]).column("date").to_pylist())
    assert dates == {"2026-11-20", "2026-11-21"}
    ids = ds.dataset(str(tmp_path), format="parquet", exclude_invalid_files=True).to_table(columns=["row_id"])
    assert len(set(ids.column(0).to_pylist())) == 4000


def test_schema_yaml_and_info_written(tmp_path):
    rep = generate(str(tmp_path), SMALL, rows=2000, seed=0)
    s = FeatureSchema.load(tmp_path / "schema.yaml")
    assert s.sparse_names == SMALL.sparse_names and s.dense_names == SMALL.dense_names
    info = json.loads((tmp_path / "_synth.json").read_text())
    assert info["complete"] is True and info["rows"] == 2000
    assert info["bayes_auc"] == pytest.approx(rep.bayes_auc)
    assert "storage_options" not in json.dumps(info)


def test_refuses_a_directory_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by the generator"):
        generate(str(tmp_path), SMALL, rows=100)
    generate(str(tmp_path), SMALL, rows=100, overwrite=True)
    generate(str(tmp_path), SMALL, rows=200, shards=1)  # our own output: replaced without asking
    assert pq.ParquetFile(tmp_path / "part-00000.parquet").metadata.num_rows == 200


def test_memory_url_round_trip():
    url = "memory://dist_ctr_synth_test/out"
    try:
        rep = generate(url, SMALL, rows=1500, shards=2, seed=1)
        fs = fsspec.filesystem("memory")
        paths = sorted(p for p in fs.find("/dist_ctr_synth_test/out") if p.endswith(".parquet"))
        assert len(paths) == 2
        n = sum(pq.ParquetFile(fs.open(p, "rb")).metadata.num_rows for p in paths)
        assert n == rep.rows == 1500
        assert fs.exists("/dist_ctr_synth_test/out/schema.yaml")
    finally:
        fsspec.filesystem("memory").rm("/dist_ctr_synth_test", recursive=True)


# ---- the planted signal -------------------------------------------------------------------------------------------
def test_generate_writes_synth_table_rows_and_reports_its_bayes_auc(tmp_path):
    rep = generate(str(tmp_path), "criteo-kaggle", rows=20_000, shards=1, seed=5)
    st = synth_table("criteo-kaggle", 20_000, seed=5)
    written = pq.read_table(tmp_path / "part-00000.parquet")
    assert written.equals(st.table)
    y = written.column("label").to_numpy()
    assert rep.bayes_auc == pytest.approx(exact_auc(st.probs[0], y), abs=1e-9)
    assert rep.bayes_auc > 0.7
    assert rep.first_order_auc < rep.bayes_auc - 0.03
    assert rep.positive_rate[0] == pytest.approx(0.25, abs=0.015)
    for f in st.schema.sparse_features:
        v = written.column(f.name).to_numpy()
        assert v.min() >= 0 and v.max() < f.vocabulary_size, f.name
    dense = written.column("I1")
    assert dense.null_count >= 0 and np.nanmin(dense.to_numpy(zero_copy_only=False)) >= 0
    nulls = [written.column(n).null_count for n in st.schema.dense_names]
    assert max(nulls) > 0  # some dense columns have missing values


def test_positive_rate_is_calibrated():
    for rate in (0.25, 0.08):
        st = synth_table(SMALL, 20_000, seed=2, positive_rate=rate)
        assert st.table.column("label").to_numpy().mean() == pytest.approx(rate, abs=0.012)


def test_ids_are_zipf_like():
    st = synth_table(FeatureSchema((SparseFeat("C", 10_000, 4),)), 50_000, seed=0)
    counts = np.sort(np.bincount(st.table.column("C").to_numpy(), minlength=10_000))[::-1]
    assert counts[0] > 20 * counts[100] > 0  # a heavy head
    assert (counts > 0).sum() > 3000  # and a long tail


def test_planted_model_depends_on_model_seed_not_row_seed():
    a = synth_table(SMALL, 500, seed=1)
    b = synth_table(SMALL, 500, seed=2)
    assert np.array_equal(a.model.bias, b.model.bias)
    assert np.array_equal(a.model.cats["C1"].w_table, b.model.cats["C1"].w_table)
    c = synth_table(SMALL, 500, seed=1, model_seed=9)
    assert not np.array_equal(a.model.cats["C1"].w_table, c.model.cats["C1"].w_table)


def _one_hot(table, names, vocab):
    from scipy import sparse

    n = table.num_rows
    cols, off = [], 0
    for name in names:
        cols.append(table.column(name).to_numpy().astype(np.int64) + off)
        off += vocab
    rows = np.repeat(np.arange(n), len(names))
    data = np.ones(rows.size)
    return sparse.csr_matrix((data, (rows, np.stack(cols, 1).ravel())), shape=(n, off))


def test_pairwise_signal_is_invisible_to_first_order_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    v = 12
    schema = FeatureSchema(tuple(SparseFeat(f"C{i}", v, 4) for i in range(4)))
    sig = PlantedSignal(first_order_scale=0.4, n_pairs=3, pair_scale=1.0)
    train = synth_table(schema, 30_000, seed=0, signal=sig)
    test = synth_table(schema, 20_000, seed=1, signal=sig)
    names = schema.sparse_names
    y_tr = train.table.column("label").to_numpy()
    y_te = test.table.column("label").to_numpy()
    lr = LogisticRegression(C=1.0, max_iter=500).fit(_one_hot(train.table, names, v), y_tr)
    lr_auc = exact_auc(lr.decision_function(_one_hot(test.table, names, v)), y_te)
    bayes = exact_auc(test.probs[0], y_te)
    first = exact_auc(test.first_order_probs, y_te)
    assert bayes > lr_auc + 0.05  # the pairwise part is out of a first-order model's reach
    assert lr_auc == pytest.approx(first, abs=0.02)  # ... which gets what the additive part allows
    # and the pairwise signal is real: crossing the planted pairs recovers most of the gap.
    crosses = {}
    for p in train.model.pairs:
        a, b = p.left.cat, p.right.cat
        crosses[f"{a}x{b}"] = (a, b)

    def with_crosses(t):
        import pyarrow as pa

        extra = {k: pa.array(t.column(a).to_numpy().astype(np.int64) * v + t.column(b).to_numpy())
                 for k, (a, b) in crosses.items()}
        tt = t.select(names)
        for k, arr in extra.items():
            tt = tt.append_column(k, arr)
        return tt

    full = list(names) + list(crosses)
    lr2 = LogisticRegression(C=1.0, max_iter=500).fit(_one_hot(with_crosses(train.table), full, v * v), y_tr)
    lr2_auc = exact_auc(lr2.decision_function(_one_hot(with_crosses(test.table), full, v * v)), y_te)
    assert lr2_auc > lr_auc + 0.04
    assert lr2_auc < bayes + 0.005


def test_multitask_labels_are_correlated(tmp_path):
    rep = generate(str(tmp_path), SMALL, rows=20_000, seed=0, tasks=3, positive_rate=[0.25, 0.25, 0.1])
    t = pq.read_table(tmp_path / "part-00000.parquet")
    assert t.column_names[:4] == ["row_id", "label", "label_1", "label_2"]
    assert len(rep.bayes_aucs) == 3 and all(a > 0.6 for a in rep.bayes_aucs)
    y = np.stack([t.column(n).to_numpy().astype(np.float64) for n in ("label", "label_1", "label_2")])
    c = np.corrcoef(y)
    assert c[0, 1] > 0.1 and c[0, 2] > 0.05 and c[0, 1] < 0.95
    assert rep.label_correlation == pytest.approx(c[0, 1])
    assert y[2].mean() == pytest.approx(0.1, abs=0.015)
    assert FeatureSchema.load(tmp_path / "schema.yaml").label_names == ["label", "label_1", "label_2"]


def test_sequences_are_lists_up_to_maxlen_linked_to_the_target(tmp_path):
    generate(str(tmp_path), SMALL, rows=20_000, seed=0, sequences=True, seq_maxlen=7, seq_vocab=5000)
    t = pq.read_table(tmp_path / "part-00000.parquet")
    s = FeatureSchema.load(tmp_path / "schema.yaml")
    hist = s.feature("hist_item_id")
    assert isinstance(hist, VarLenSparseFeat) and hist.maxlen == 7 and hist.embedding_name == "item_id"
    col = t.column("hist_item_id").combine_chunks()
    lengths = np.diff(col.offsets.to_numpy())
    assert lengths.max() <= 7 and (lengths == 0).any() and (lengths == 7).any()
    vals = col.values.to_numpy()
    assert vals.min() >= 0 and vals.max() < 5000
    # The label depends on the history: rows whose history shares the target's category click more.
    st = synth_table(SMALL, 20_000, seed=0, sequences=True, seq_maxlen=7, seq_vocab=5000)
    n_cat = st.model.histories[0].n_cat
    tgt = t.column("item_id").to_numpy()
    rows = np.repeat(np.arange(t.num_rows), lengths)
    share = np.bincount(rows, weights=(vals % n_cat) == (tgt % n_cat)[rows], minlength=t.num_rows)
    share = share / np.maximum(lengths, 1)
    y = t.column("label").to_numpy()
    has = lengths > 2
    assert y[has & (share > 0.6)].mean() > y[has & (share < 0.2)].mean() + 0.1


def test_chained_tasks_nest_their_labels_and_multiply_their_probabilities():
    sig = PlantedSignal(chained_tasks=True)
    st = synth_table(SMALL, 20_000, seed=0, tasks=2, positive_rate=[0.25, 0.3], signal=sig)
    click, ctcvr = (st.table.column(n).to_numpy() for n in ("label", "label_1"))
    assert (ctcvr <= click).all()  # conversion implies click
    # sigmoid(z_1) averages 0.3 over all rows; correlated with the click, it is higher among clicks.
    assert click.mean() == pytest.approx(0.25, abs=0.015) and 0.25 * 0.3 < ctcvr.mean() < 0.25 * 0.6
    assert (st.probs[1] <= st.probs[0] + 1e-6).all() and ctcvr.mean() == pytest.approx(st.probs[1].mean(), abs=0.01)
    free = synth_table(SMALL, 20_000, seed=0, tasks=2, positive_rate=[0.25, 0.3])  # the same rows, unchained
    assert (free.table.column("label").to_numpy() == click).all()
    with pytest.raises(ValueError, match="chained_tasks needs binary labels"):
        from dist_ctr.schema import LabelSpec

        PlantedModel(FeatureSchema(SMALL.features, (LabelSpec("a"), LabelSpec("b", "regression"))), signal=sig)


def test_history_categories_and_min_length_are_knobs():
    sig = PlantedSignal(history_categories=10, history_min_length=2, history_zipf=0.0)
    st = synth_table(SMALL, 5000, seed=0, sequences=True, seq_maxlen=6, seq_vocab=200, signal=sig)
    assert st.model.histories[0].n_cat == 10
    inner = st.model.histories[0].inner.pmf()  # items within a category: uniform
    assert inner.shape == (20,) and np.allclose(inner, 1 / 20)
    lengths = np.diff(st.table.column("hist_item_id").combine_chunks().offsets.to_numpy())
    assert lengths.min() == 2 and lengths.max() == 6
    with pytest.raises(ValueError, match="history_min_length"):
        synth_table(SMALL, 10, sequences=True, seq_maxlen=6, signal=PlantedSignal(history_min_length=7))


def test_multi_hot_bags_and_regression_labels():
    from dist_ctr.schema import LabelSpec

    schema = FeatureSchema((SparseFeat("C1", 30, 4), VarLenSparseFeat(SparseFeat("genres", 20, 4), maxlen=5)),
                           (LabelSpec("click"), LabelSpec("watch_time", "regression")))
    st = synth_table(schema, 3000, seed=0)
    col = st.table.column("genres").combine_chunks()
    lengths = np.diff(col.offsets.to_numpy())
    assert lengths.max() == 5 and lengths.min() == 0
    assert col.values.to_numpy().max() < 20
    assert st.table.column("click").type.bit_width == 8
    wt = st.table.column("watch_time").to_numpy()
    assert wt.dtype == np.float32 and abs(float(wt.mean())) < 0.2  # centred continuous target
    z = st.logits[1].astype(np.float64)
    assert float(np.std(wt - z)) == pytest.approx(1.0, abs=0.05)  # target = truth + N(0, 1) noise
    assert np.corrcoef(wt, z)[0, 1] == pytest.approx(z.std() / np.sqrt(z.var() + 1.0), abs=0.05)


def test_raw_hex_for_use_hash_features():
    schema = FeatureSchema((SparseFeat("C1", 1000, 4, use_hash=True), SparseFeat("C2", 10, 4)))
    st = synth_table(schema, 300, seed=0, raw_hex=True)
    hexes = st.table.column("C1").to_pylist()
    assert all(len(h) == 8 and int(h, 16) >= 0 for h in hexes)
    assert st.table.column("C2").type.bit_width == 32  # not use_hash: still ids
    with pytest.raises(ValueError, match="no feature of the schema has use_hash"):
        generate("memory://never", SMALL, rows=10, raw_hex=True)


def test_criteo_1tb_preset_uses_hashed_weights_for_huge_vocabularies():
    st = synth_table("criteo-1tb", 2000, seed=0)
    c1 = st.table.column("C1").to_numpy()
    assert c1.max() < 40_000_000 and c1.max() > 1_000_000  # the permutation spreads popular ids out
    assert st.model.cats["C1"].w_table is None and st.model.cats["C6"].w_table is not None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rows \\(3\\) must be at least the number of files \\(4"):
        generate("memory://never", SMALL, rows=3, shards=4)
    with pytest.raises(ValueError, match="positive_rate"):
        PlantedModel(SMALL, positive_rate=1.5)
    with pytest.raises(SchemaError, match="dimension 1 only"):
        PlantedModel(FeatureSchema((DenseFeat("x", 3), SparseFeat("C", 5, 2))))
    with pytest.raises(SchemaError, match="unknown schema"):
        generate("memory://never", "no-such-preset", rows=10)


def test_cli_synth_prints_the_summary(tmp_path, capsys):
    from dist_ctr.cli import main

    rc = main(["data", "synth", str(tmp_path / "o"), "--rows", "3000", "--shards", "2", "--dates",
               "2026-11-20..2026-11-21", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "wrote 3,000 rows in 4 file(s)" in out and "Bayes AUC" in out and "rows/s" in out
    assert (tmp_path / "o" / "date=2026-11-21" / "part-00001.parquet").exists()
