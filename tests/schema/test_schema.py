"""Feature schema: DeepCTR meanings, validation errors that name the feature, strict round trip, stable hash."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from dist_ctr.schema import (
    DenseFeat,
    FeatureSchema,
    LabelSpec,
    SchemaError,
    SparseFeat,
    VarLenSparseFeat,
    hash_one,
    stable_hash,
)


def _schema() -> FeatureSchema:
    return FeatureSchema(
        (
            SparseFeat("item", 100, 8),
            VarLenSparseFeat(SparseFeat("hist_item", 100, 8, embedding_name="item"), maxlen=5, combiner="sum",
                             length_name="hist_len"),
            SparseFeat("cat", 20, 8, use_hash=True, group_name="g1"),
            DenseFeat("price"),
            DenseFeat("vec", 3),
        ),
        (LabelSpec("click"), LabelSpec("stay", "regression")),
    )


def test_views_and_tables():
    s = _schema()
    assert s.sparse_names == ["item", "hist_item", "cat"]
    assert s.dense_names == ["price", "vec"]
    assert s.n_dense == 4
    assert s.task_types == ["binary", "regression"]
    tables = s.tables()
    assert [t.name for t in tables] == ["item", "cat"]
    assert tables[0].feature_names == ("item", "hist_item")


def test_round_trip_yaml_json(tmp_path):
    s = _schema()
    for suffix in (".yaml", ".json"):
        p = tmp_path / f"schema{suffix}"
        s.save(p)
        assert FeatureSchema.load(p) == s


def test_auto_embedding_dim():
    assert SparseFeat("a", 10_000, "auto").embedding_dim == 6 * 10  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: FeatureSchema((SparseFeat("a", 3), SparseFeat("a", 4))), "duplicate feature name 'a'"),
        (lambda: SparseFeat("b", 0), "feature 'b': vocabulary_size"),
        (lambda: FeatureSchema((SparseFeat("a", 5, 4, embedding_name="t"), SparseFeat("b", 5, 8, embedding_name="t"))),
         "feature 'b' shares table 't'"),
        (lambda: VarLenSparseFeat(SparseFeat("g", 5), maxlen=3, combiner="median"), "feature 'g': unknown combiner"),
        (lambda: VarLenSparseFeat(SparseFeat("g", 5), maxlen=0), "feature 'g': maxlen"),
        (lambda: DenseFeat("d", 0), "feature 'd': dimension"),
        (lambda: LabelSpec("y", "ranking"), "label 'y': unknown task"),
    ],
)
def test_invalid_schemas_name_the_feature(build, needle):
    with pytest.raises(SchemaError, match=needle):
        build()


def test_schema_file_with_unknown_key_names_it(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("features:\n  - {type: sparse, name: C1, vocabulary_size: 10, embeding_dim: 4}\n")
    with pytest.raises(SchemaError, match=r"features\[0\] \('C1'\).*unknown key\(s\) \['embeding_dim'\]"):
        FeatureSchema.load(p)
    p.write_text("features: []\nlabel: [y]\n")
    with pytest.raises(SchemaError, match=r"unknown key\(s\) \['label'\]"):
        FeatureSchema.load(p)


def test_stable_hash_golden_values():
    # Golden values: a change here breaks every hashed model ever trained; never update them casually.
    assert hash_one("68fd1e64", 2**40) == 913741503049
    assert hash_one(12345, 2**40) == 380806173088
    assert hash_one("", 2**40) == 6100942640
    assert hash_one("héllo", 2**40) == 137388919033


def test_stable_hash_vectorised_forms_agree():
    vals = ["68fd1e64", "", "a", "05db9164", "héllo", "x" * 40]
    expect = [hash_one(v, 1000) for v in vals]
    assert stable_hash(vals, 1000).tolist() == expect
    assert stable_hash(np.array(vals), 1000).tolist() == expect
    assert stable_hash(pa.array(vals), 1000).tolist() == expect
    assert stable_hash(pa.array(vals, pa.large_string()), 1000).tolist() == expect
    chunked = pa.chunked_array([pa.array(vals[:2]), pa.array(vals[2:])])
    assert stable_hash(chunked, 1000).tolist() == expect
    sliced = pa.array(["zz"] + vals)[1:]
    assert stable_hash(sliced, 1000).tolist() == expect
    ints = np.array([0, 1, 2**40, -5], dtype=np.int64)
    assert stable_hash(ints, 97).tolist() == stable_hash(pa.array(ints), 97).tolist()
    assert ((stable_hash(ints, 97) >= 0) & (stable_hash(ints, 97) < 97)).all()


def test_stable_hash_identical_across_python_processes():
    code = "from dist_ctr.schema import hash_one; print(hash_one('68fd1e64', 1000003), hash_one(77, 1000003))"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().split() == [str(hash_one("68fd1e64", 1000003)), str(hash_one(77, 1000003))]


def test_stable_hash_spreads_ids():
    ids = stable_hash([f"{i:08x}" for i in range(20000)], 100)
    counts = np.bincount(ids, minlength=100)
    assert counts.min() > 120 and counts.max() < 290  # ~200 each
