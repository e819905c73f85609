"""Transforms against their definitions: ids, hashing, vocabularies, dense fill / log / min-max, lists, labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dist_ctr.data.config import DenseTransformConfig
from dist_ctr.data.errors import BadValueError, DataError, SchemaMismatchError
from dist_ctr.data.transforms import Columns, TableTransform, load_vocabulary
from dist_ctr.schema import DenseFeat, FeatureSchema, LabelSpec, SparseFeat, VarLenSparseFeat, stable_hash
from dist_ctr.strict import ConfigError, from_dict


def _schema(**kw) -> FeatureSchema:
    return FeatureSchema(
        features=(
            SparseFeat("C1", 10),
            VarLenSparseFeat(SparseFeat("hist", 100, use_hash=True), maxlen=2),
            SparseFeat("C2", 1000, use_hash=True),
            DenseFeat("I1"),
            DenseFeat("v", dimension=2),
        ),
        labels=kw.get("labels", (LabelSpec("click"), LabelSpec("dwell", "regression"))),
    )


def _table(**over) -> pa.Table:
    cols = {
        "C1": pa.array([0, 9, 3], pa.int32()),
        "hist": pa.array([[1, 2, 3], None, [7]], pa.list_(pa.int64())),
        "C2": pa.array(["68fd1e64", None, "ffffffff"]),
        "I1": pa.array([-3.0, None, float(np.e - 1)]),
        "v": pa.array([[1.0, 2.0], [3.0, 4.0], None], pa.list_(pa.float32())),
        "click": pa.array([1, 0, 1], pa.int8()),
        "dwell": pa.array([0.5, 2.0, -1.0]),
    }
    cols.update(over)
    return pa.table(cols)


def test_columns_and_kjt_layout():
    s = _schema()
    t = TableTransform(s, DenseTransformConfig(transform="none", per_feature={"I1": "log"}, fill_na=0.5))
    cols = t.transform(_table(), file="f.parquet", row_group=0)
    assert cols.ids.dtype == np.int64 and cols.ids.shape == (3, 2)  # (N, F1)
    assert cols.ids[:, 0].tolist() == [0, 9, 3]
    assert cols.ids[:, 1].tolist() == stable_hash(pa.array(["68fd1e64", None, "ffffffff"]), 1000).tolist()
    assert cols.ids[1, 1] == stable_hash([""], 1000)[0]  # a null string hashes as ""
    off, vals = cols.lists[0]
    assert off.tolist() == [0, 2, 2, 3]  # truncated to maxlen 2, null list -> empty bag
    assert vals.tolist() == stable_hash(np.array([1, 2, 7]), 100).tolist()
    # dense: I1 log(1 + max(x, 0)) after fill 0.5; v filled with 0.5 for the null row, no transform
    assert np.allclose(cols.dense[:, 0], [0.0, np.log1p(0.5), 1.0])
    assert cols.dense[:, 1:].tolist() == [[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]]
    assert cols.labels.dtype == np.float32 and cols.labels.tolist() == [[1, 0.5], [0, 2.0], [1, -1.0]]
    b = cols.to_batch(t.layout)
    kjt = b.sparse
    assert kjt.keys() == ["C1", "hist", "C2"]
    assert kjt.values().dtype == torch.int64 and kjt.lengths().dtype == torch.int32
    assert kjt.lengths().tolist() == [1, 1, 1, 2, 0, 1, 1, 1, 1]  # key-major
    assert kjt.values().tolist() == [0, 9, 3] + vals.tolist() + cols.ids[:, 1].tolist()
    assert b.dense.shape == (3, 3) and b.dense.dtype == torch.float32
    assert b.labels.shape == (3, 2)


def test_take_slice_concat_keep_rows_together():
    s = _schema()
    t = TableTransform(s)
    cols = t.transform(_table())
    both = Columns.concat([cols, cols.slice(1, 3)])
    assert len(both) == 5
    perm = np.array([4, 0, 2])
    sub = both.take(perm)
    ref = [(both.ids[i].tolist(), both.dense[i].tolist()) for i in perm]
    assert [(sub.ids[j].tolist(), sub.dense[j].tolist()) for j in range(3)] == ref
    off, vals = both.lists[0]
    full = [vals[off[i]:off[i + 1]].tolist() for i in range(5)]
    o2, v2 = sub.lists[0]
    assert [v2[o2[j]:o2[j + 1]].tolist() for j in range(3)] == [full[i] for i in perm]


def test_minmax_with_stats_and_missing_stats():
    s = FeatureSchema((DenseFeat("x"),), labels=())
    t = TableTransform(s, DenseTransformConfig(transform="minmax", stats={"x": [10.0, 20.0]}))
    out = t.transform(pa.table({"x": [5.0, 15.0, 25.0, None]})).dense[:, 0]
    assert out.tolist() == [0.0, 0.5, 1.0, 0.0]
    with pytest.raises(DataError, match="'x' uses 'minmax' but data.dense.stats has no"):
        TableTransform(s, DenseTransformConfig(transform="minmax"))


def test_scale_multiplies_every_transformed_dense_value():
    """``scale`` comes after fill-NA and each feature's own transform (log, min-max, none), on the all-log fast
    path and on the per-feature one; a scale that is not > 0 is refused naming the key."""
    s = FeatureSchema((DenseFeat("a"), DenseFeat("b"), DenseFeat("c")), labels=())
    table = pa.table({"a": [0.0, np.e - 1, None], "b": [10.0, 15.0, 20.0], "c": [-3.0, 2.0, 4.0]})
    mixed = DenseTransformConfig(per_feature={"b": "minmax", "c": "none"}, stats={"b": [10.0, 20.0]}, fill_na=1.0)
    plain = TableTransform(s, mixed).transform(table).dense
    scaled = TableTransform(s, DenseTransformConfig(**{**mixed.__dict__, "scale": 0.1})).transform(table).dense
    np.testing.assert_allclose(scaled, 0.1 * plain, rtol=1e-6)
    np.testing.assert_allclose(scaled[:, 0], [0.0, 0.1, 0.1 * np.log(2.0)], rtol=1e-6)  # null -> 1 -> log 2
    assert scaled[:, 2].tolist() == pytest.approx([-0.3, 0.2, 0.4])
    all_log = TableTransform(s, DenseTransformConfig(scale=0.5)).transform(pa.table({"a": [np.e - 1], "b": [0.0],
                                                                                       "c": [3.0]})).dense
    np.testing.assert_allclose(all_log[0], [0.5, 0.0, 0.5 * np.log(4.0)], rtol=1e-6)


def test_scale_must_be_positive_and_is_named():
    with pytest.raises(ConfigError, match="scale"):
        from_dict(DenseTransformConfig, {"scale": 0.0})


def test_id_range_errors_name_file_row_group_column():
    t = TableTransform(_schema())
    with pytest.raises(BadValueError, match=r"f\.parquet, row group 4, column 'C1': id 10 >= vocabulary_size 10"):
        t.transform(_table(C1=pa.array([0, 10, 1])), file="f.parquet", row_group=4)
    with pytest.raises(BadValueError, match=r"column 'C1': negative id -1"):
        t.transform(_table(C1=pa.array([0, -1, 1])), file="f.parquet", row_group=4)
    with pytest.raises(BadValueError, match=r"column 'C1': 1 null id"):
        t.transform(_table(C1=pa.array([0, None, 1])), file="f.parquet", row_group=4)


def test_label_checks():
    t = TableTransform(_schema())
    with pytest.raises(BadValueError, match=r"column 'click': binary label must be 0 or 1, got 0.5"):
        t.transform(_table(click=pa.array([1.0, 0.5, 0.0])))
    with pytest.raises(BadValueError, match=r"column 'dwell': 1 null label"):
        t.transform(_table(dwell=pa.array([1.0, None, 0.0])))


def test_schema_type_checks():
    t = TableTransform(_schema())
    t.check_schema("f", _table().schema)
    with pytest.raises(SchemaMismatchError, match="f, column 'C1': has type string"):
        t.check_schema("f", _table(C1=pa.array(["a", "b", "c"])).schema)
    with pytest.raises(SchemaMismatchError, match="column 'hist': has type int64, but a VarLenSparseFeat needs a list"):
        t.check_schema("f", _table(hist=pa.array([1, 2, 3])).schema)
    with pytest.raises(SchemaMismatchError, match="column 'click': missing column"):
        t.check_schema("f", _table().drop_columns(["click"]).schema)


def test_vocabulary_file(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("apple\nbanana\n42\n")
    voc = load_vocabulary(str(p))
    s = FeatureSchema((SparseFeat("fruit", 4), SparseFeat("code", 4)), labels=())
    t = TableTransform(s, vocabularies={"fruit": voc, "code": voc})
    cols = t.transform(pa.table({"fruit": ["banana", "kiwi", None, "apple"], "code": pa.array([42, 7, 42, 1])}))
    assert cols.ids[:, 0].tolist() == [2, 0, 0, 1]
    assert cols.ids[:, 1].tolist() == [3, 0, 3, 0]
    with pytest.raises(DataError, match="needs vocabulary_size >= 4"):
        TableTransform(FeatureSchema((SparseFeat("fruit", 3),), labels=()), vocabularies={"fruit": voc})
    p.write_text("a\na\n")
    with pytest.raises(DataError, match="duplicate"):
        load_vocabulary(str(p))


def test_hex_strings_hash_equals_schema_hash_on_large_column():
    rng = np.random.default_rng(0)
    raw = [f"{v:08x}" for v in rng.integers(0, 2**32, 5000)]
    s = FeatureSchema((SparseFeat("C", 1 << 20, use_hash=True),), labels=())
    ids = TableTransform(s).transform(pa.table({"C": raw})).ids[:, 0]
    from dist_ctr.schema import hash_one

    assert [hash_one(x, 1 << 20) for x in raw[:50]] == ids[:50].tolist()
    assert ids.min() >= 0 and ids.max() < (1 << 20)


def test_blocked_row_major_fill_matches_per_column_reference():
    """Rows spanning several scratch blocks (and a sliced table): ids / dense equal a column-by-column reference."""
    from dist_ctr.data import transforms

    n = 2 * transforms._BLOCK_ROWS + 777
    rng = np.random.default_rng(3)
    s = FeatureSchema(
        features=(SparseFeat("A", 1000), DenseFeat("x"), SparseFeat("B", 50), DenseFeat("y"), DenseFeat("z")),
        labels=(LabelSpec("click"),),
    )
    a = rng.integers(0, 1000, n).astype(np.int32)
    b = rng.integers(0, 50, n)
    x = rng.exponential(3.0, n).astype(np.float32)
    x[::7] = np.nan
    y = rng.normal(size=n)
    z = rng.integers(-5, 100, n).astype(np.int16)
    null_x, null_z = rng.random(n) < 0.1, rng.random(n) < 0.2
    table = pa.table({"A": a, "x": pa.array(x, mask=null_x), "B": b, "y": y, "z": pa.array(z, mask=null_z),
                      "click": (rng.random(n) < 0.3).astype(np.int8)}).slice(5)
    cfg = DenseTransformConfig(transform="none", per_feature={"x": "log", "y": "minmax"}, stats={"y": (-1.0, 2.0)},
                               fill_na=0.25)
    cols = TableTransform(s, cfg).transform(table)
    sl = slice(5, n)
    assert cols.ids.dtype == np.int64 and cols.ids.flags.c_contiguous
    assert np.array_equal(cols.ids, np.stack([a[sl], b[sl]], axis=1))
    ref_x = np.where(null_x | np.isnan(x), np.float32(0.25), x)[sl]
    ref_x = np.log1p(np.maximum(ref_x, 0))
    ref_y = np.clip((y[sl].astype(np.float32) - np.float32(-1.0)) * np.float32(1.0 / 3.0), 0.0, 1.0)
    ref_z = np.where(null_z, 0.25, z).astype(np.float32)[sl]
    assert cols.dense.dtype == np.float32 and cols.dense.shape == (n - 5, 3)
    assert np.allclose(cols.dense[:, 0], ref_x, rtol=0, atol=1e-6)
    assert np.allclose(cols.dense[:, 1], ref_y, rtol=0, atol=1e-6)
    assert np.array_equal(cols.dense[:, 2], ref_z)
