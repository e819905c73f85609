"""Engine at world size 1: determinism, exact resume from a checkpoint, clear errors, commit marker."""

from __future__ import annotations

import pytest
import torch

from dist_ctr.data.batch import CTRBatch
from dist_ctr.distributed.env import DistEnv, init_process_group
from dist_ctr.models import build_model
from dist_ctr.train import checkpoint as ckpt
from dist_ctr.train.engine import Trainer
from tests.distributed.equivalence_jobs import global_batches, tiny_schema


@pytest.fixture(scope="module")
def env() -> DistEnv:
    e = DistEnv()
    init_process_group(e)
    return e


def _trainer(env: DistEnv, model: str = "LogisticRegression", seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    return Trainer(build_model(model, tiny_schema(), None), env, seed=seed)


def _losses(h) -> list[float]:
    return [s["loss"] for s in h.steps if "loss" in s]


def test_seeded_runs_are_identical_and_learn(env):
    data = global_batches(tiny_schema(), 8, 32)
    h1 = _trainer(env).fit(data, epochs=3, progress=False, log_every=1)
    h2 = _trainer(env).fit(data, epochs=3, progress=False, log_every=1)
    assert _losses(h1) == _losses(h2)
    assert h1.history["loss"][-1] < h1.history["loss"][0]  # memorises the random labels a little
    h3 = _trainer(env, seed=1).fit(data, epochs=1, progress=False, log_every=1)
    assert _losses(h3)[0] != _losses(h1)[0]


def test_checkpoint_resume_is_exact(env, tmp_path):
    data = global_batches(tiny_schema(), 6, 16)
    ref = _trainer(env)
    ref_h = ref.fit(data, epochs=2, progress=False, log_every=1)
    a = _trainer(env)
    a.fit(data, epochs=1, progress=False, log_every=1, checkpoint_root=str(tmp_path / "ck"))
    latest = ckpt.latest_checkpoint(str(tmp_path / "ck"))
    assert latest is not None and latest.step == 6 and latest.meta["epoch_done"]
    b = _trainer(env, seed=0)
    b.load(latest.url)
    assert b.global_step == 6 and b.epoch == 1
    h = b.fit(data, epochs=2, progress=False, log_every=1)
    assert _losses(h) == pytest.approx(_losses(ref_h)[6:], abs=1e-6)


def test_uncommitted_checkpoint_is_ignored(env, tmp_path):
    t = _trainer(env)
    t.fit(global_batches(tiny_schema(), 2, 8), epochs=1, progress=False, checkpoint_root=str(tmp_path))
    good = ckpt.latest_checkpoint(str(tmp_path))
    # a crash mid-write: a newer step directory without the COMMITTED marker
    (tmp_path / "step_00000099").mkdir()
    (tmp_path / "step_00000099" / ".metadata").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(str(tmp_path)).url == good.url
    with pytest.raises(FileNotFoundError, match="not a committed checkpoint"):
        ckpt.load_checkpoint(str(tmp_path / "step_00000099"), t.app_state())


def test_nan_label_loss_is_a_clear_error(env):
    data = global_batches(tiny_schema(), 2, 8)
    bad = CTRBatch(data[0].dense, data[0].sparse, torch.full_like(data[0].labels, float("nan")))
    from dist_ctr.train.engine import TrainingError

    with pytest.raises(TrainingError, match="step 1"):
        _trainer(env).fit([bad], epochs=1, progress=False, log_every=1)


def test_bf16_precision_autocasts_the_forward_and_keeps_fp32_state(env):
    """``precision="bf16"``: the dense matmuls run in bf16 (the model's logits differ from fp32 by bf16 rounding,
    not more), the task's logits and loss are fp32, and weights and optimizer state stay fp32."""
    data = global_batches(tiny_schema(), 4, 32)
    ref = Trainer(_model("DeepFM"), env, seed=0)
    half = Trainer(_model("DeepFM"), env, seed=0, precision="bf16")
    seen: list[torch.dtype] = []
    half.model.dnn.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    for b in data:
        l_ref, z_ref = ref.train_step(b)
        l_half, z_half = half.train_step(b)
        assert z_half.dtype == torch.float32 and l_half.dtype == torch.float32
        assert torch.allclose(z_half, z_ref, atol=0.05, rtol=0.05)
        assert abs(float(l_half) - float(l_ref)) < 0.02 * float(l_ref)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(p.dtype == torch.float32 for p in half.dmp.parameters())
    with pytest.raises(ValueError, match="train.precision"):
        Trainer(_model("DeepFM"), env, precision="fp16")


def _model(name: str):
    torch.manual_seed(0)
    return build_model(name, tiny_schema(), None)
