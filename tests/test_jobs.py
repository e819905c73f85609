"""Every shipped job file loads strictly and its model builds from its schema (torchtune validates recipes so)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dist_ctr.config import load_job, load_schema
from dist_ctr.models import build_model
from dist_ctr.strict import ConfigError

JOBS = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_job_loads_and_builds(path):
    import yaml

    if "retrain" in (yaml.safe_load(path.read_text()) or {}):  # a retraining pipeline: a job plus `retrain:`
        from dist_ctr.pipeline.config import load_pipeline

        job = load_pipeline(path).job()
        assert build_model(job.model.name, load_schema(job.schema), job.model.config).num_tasks >= 1
        return
    job = load_job(path)
    schema = load_schema(job.schema)
    model = build_model(job.model.name, schema, job.model.config)
    assert model.num_tasks >= 1
    if job.data.train.get("url") is None:
        assert job.data.synth is not None, f"{path.name}: no train URL and no synthetic data"


def test_unknown_job_key_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\ntrain: {epochs: 1, checkpoint: {every_step: 5}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.checkpoint: unknown key 'every_step'"):
        load_job(p)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\noptim: {sparse: {lr: fast}}\n")
    with pytest.raises(ConfigError, match=r"optim.sparse.lr: expected a number"):
        load_job(p)


def test_unknown_model_key_is_named():
    from dist_ctr.models import ModelConfigError
    from dist_ctr.schema import FeatureSchema, SparseFeat

    with pytest.raises(ModelConfigError, match=r"model 'LogisticRegression': unknown config key\(s\) \['l2_reg'\]"):
        build_model("LogisticRegression", FeatureSchema((SparseFeat("a", 3),)), {"l2_reg": 1.0})


def test_loss_reduction_reaches_the_trainer_and_bad_values_are_named(tmp_path):
    from dist_ctr.distributed.env import DistEnv, init_process_group
    from dist_ctr.train.job import make_trainer

    p = tmp_path / "job.yaml"
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\ntrain: {loss_reduction: sum}\n"
                 "model: {name: LogisticRegression}\n")
    job = load_job(p)
    assert job.train.loss_reduction == "sum"
    env = DistEnv()
    init_process_group(env)
    trainer = make_trainer(job, load_schema(job.schema), env)
    assert trainer.task.reduction == "sum" and trainer.task.world_size == 1
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\ntrain: {loss_reduction: total}\n")
    with pytest.raises(ConfigError, match=r"train.loss_reduction"):
        load_job(p)


def test_model_config_is_checked_at_load_time_with_its_key_path(tmp_path):
    from dist_ctr.models import ModelConfigError

    p = tmp_path / "bad_model.yaml"
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\nmodel:\n  name: DeepFM\n  config:\n    dnn_hidden_units: [8, x]\n")
    with pytest.raises(ModelConfigError, match=r"model\.config\.dnn_hidden_units\[1\]: expected an integer, got 'x'"):
        load_job(p)
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\nmodel:\n  name: DeepFM\n  config:\n    dnn_hiden_units: [8]\n")
    with pytest.raises(ModelConfigError, match=r"model\.config: model 'DeepFM': unknown config key\(s\) \['dnn_hiden_units'\]"):
        load_job(p)
    p.write_text("name: x\nschema: {preset: criteo-kaggle}\ndata: {}\nmodel:\n  name: DeepFM\n  config:\n    dnn_hidden_units: [8, 4]\n")
    assert load_job(p).model.config == {"dnn_hidden_units": [8, 4]}


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-5`` as text; a float field takes it as the number (files and ``--set`` alike)."""
    from dist_ctr.config import load_job

    job = load_job(Path("jobs/demo.yaml"), {"optim.sparse.lr": "1e-5", "optim.dense.lr": "2.5E-4"})
    assert job.optim.sparse.lr == 1e-5 and job.optim.dense.lr == 2.5e-4
