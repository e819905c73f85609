"""Warm start from a parent checkpoint: weights and optimizer state carried, a grown table keeps its old rows
bit for bit (1 and 2 processes), any other schema change is one clear error naming the table / feature."""

from __future__ import annotations

import pytest
import torch

from dist_ctr.data.synthetic import generate
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.launch.spawn import spawn
from dist_ctr.train.export import export_checkpoint
from dist_ctr.train.job import run_job
from dist_ctr.train.warm_start import SchemaMismatch
from tests.pipeline.warm_start_jobs import tiny_job, tiny_schema, warm_and_save


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    data = str(root / "data")
    generate(data, tiny_schema(), rows=3000, partitions=["2026-11-01"], seed=1)
    job = tiny_job(root, data, tiny_schema(), name="parent")
    env = DistEnv.from_environ()
    init_process_group(env)
    res = run_job(job, env, verbose=False)
    return {"root": root, "data": data, "url": res.checkpoint}


def _weights(url, tmp_path, name):
    blob = torch.load(export_checkpoint(url, str(tmp_path / f"{name}.pt")), weights_only=True)
    return blob["state_dict"]


@pytest.mark.parametrize("world", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_grown_vocabulary_keeps_old_rows_bit_for_bit(parent, tmp_path, world):
    job = tiny_job(tmp_path, parent["data"], tiny_schema(u_rows=320), name="child")
    if world == 1:
        out = warm_and_save(DistEnv.from_environ(), job, parent["url"], str(tmp_path / "ck"))
    else:
        out = spawn(warm_and_save, 2, job, parent["url"], str(tmp_path / "ck"))[0]
    assert out["grown"] == {"u": (200, 320)}
    assert out["step"] == 0  # the parent's step / cursor are not carried
    old, new = _weights(parent["url"], tmp_path, "old"), _weights(out["url"], tmp_path, "new")
    assert set(old) == set(new)
    for k, v in old.items():
        if v.shape == new[k].shape:
            assert torch.equal(v, new[k]), k
        else:  # the grown table and its linear part: old rows identical, new rows initialised, not copied
            assert torch.equal(new[k][: v.shape[0]], v), k
            assert new[k].shape[0] == 320
    # optimizer state carried: a fused row-wise Adagrad momentum of the parent is non-zero on trained rows
    from dist_ctr.train import checkpoint as ckpt

    md = ckpt.read_dcp_metadata(out["url"]).state_dict_metadata
    key = next(k for k in md if k.endswith(".u.momentum1"))
    a = {key: torch.empty(tuple(ckpt.read_dcp_metadata(parent["url"]).state_dict_metadata[key].size))}
    b = {key: torch.empty(tuple(md[key].size))}
    ckpt.load_checkpoint(parent["url"], a, no_dist=True)
    ckpt.load_checkpoint(out["url"], b, no_dist=True)
    assert a[key].abs().sum() > 0
    assert torch.equal(b[key][:200], a[key]) and torch.all(b[key][200:] == 0)


@pytest.mark.parametrize("change, match", [
    ({"dim": True}, "feature 'u': embedding_dim 8 in the parent, 16 in the job"),
    ({"drop": True}, "feature 'c' is not in the job's schema"),
    ({"model": "LogisticRegression"}, "holds model 'DeepFM'"),
    ({"hidden": 32}, "model config of DeepFM differs"),
])
def test_other_schema_changes_are_one_clear_error(parent, tmp_path, change, match):
    from dist_ctr.schema import DenseFeat, FeatureSchema, SparseFeat

    schema = tiny_schema()
    if change.get("dim"):
        schema = FeatureSchema((SparseFeat("u", 200, 16), SparseFeat("i", 100, 16), SparseFeat("c", 50, 16),
                                DenseFeat("x"), DenseFeat("y")))
    if change.get("drop"):
        schema = FeatureSchema((SparseFeat("u", 200, 8), SparseFeat("i", 100, 8), DenseFeat("x"), DenseFeat("y")))
    job = tiny_job(tmp_path, parent["data"], schema, name="bad", model=change.get("model", "DeepFM"),
                   dim_hidden=change.get("hidden", 16))
    with pytest.raises(SchemaMismatch, match=match) as e:
        warm_and_save(DistEnv.from_environ(), job, parent["url"], str(tmp_path / "ck"))
    assert parent["url"] in str(e.value)
