"""A checkpoint saved by 2 ranks resumes on 1, and the reverse (spawn, gloo on CPU).

The saver trains 3 of 6 global batches, saves (model, fused sparse optimizer state, dense optimizer, step), predicts
fixed eval rows, and trains on. The loader (another world size, another embedding init seed that the load must
overwrite) predicts the same rows as the saver did and its next losses follow the saver's own continuation, so
weights and optimizer state both came back whole. Global batches are equal in both runs (2 x B/2 vs 1 x B).
"""

from __future__ import annotations

import pytest

from dist_ctr.launch.spawn import spawn
from tests.distributed.ray_jobs import join_slices, load_then_continue_many, save_then_continue_many

MODELS = ["LogisticRegression", "DeepFM"]
SAVE_AFTER, TOTAL, BATCH = 3, 6, 16


@pytest.fixture(scope="module", params=[(2, 1), (1, 2)], ids=["2to1", "1to2"])
def resumed(request, tmp_path_factory):
    save_world, load_world = request.param
    root = str(tmp_path_factory.mktemp(f"ck{save_world}{load_world}"))
    saver = spawn(save_then_continue_many, save_world, MODELS, root, SAVE_AFTER, TOTAL, BATCH)
    urls = {m: saver[0][m]["url"] for m in MODELS}
    loader = spawn(load_then_continue_many, load_world, urls, TOTAL, BATCH)
    return save_world, load_world, saver, loader


def _check(resumed, model):
    save_world, load_world, saver, loader = resumed
    for r in range(load_world):
        got = loader[r][model]
        assert got["step"] == SAVE_AFTER and got["saved_world"] == save_world
    assert all(loader[r][model]["losses"] == loader[0][model]["losses"] for r in range(load_world))
    want_preds = join_slices([saver[r][model]["preds"] for r in range(save_world)])
    got_preds = join_slices([loader[r][model]["preds"] for r in range(load_world)])
    assert got_preds.shape == want_preds.shape == (2 * BATCH, 1)
    assert float((got_preds - want_preds).abs().max()) < 1e-6, "restored model predicts differently"
    want_losses = saver[0][model]["losses"][SAVE_AFTER:]
    got_losses = loader[0][model]["losses"]
    assert len(got_losses) == TOTAL - SAVE_AFTER
    assert got_losses == pytest.approx(want_losses, rel=2e-4, abs=2e-5), "training did not continue the same way"


@pytest.mark.slow
def test_resume_on_another_world_size_linear(resumed):
    _check(resumed, "LogisticRegression")


@pytest.mark.slow
def test_resume_on_another_world_size_deepfm(resumed):
    _check(resumed, "DeepFM")
