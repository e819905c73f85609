"""``CTRTask``'s loss reductions: ``"mean"`` (the engine's) and ``"sum"`` (DeepCTR-Torch's)."""

from __future__ import annotations

import pytest
import torch

from dist_ctr.data.batch import CTRBatch
from dist_ctr.models import build_model
from dist_ctr.sparse import materialize
from dist_ctr.train.task import CTRTask
from tests.distributed.equivalence_jobs import global_batches, tiny_schema


def _model_and_batch() -> tuple[torch.nn.Module, CTRBatch]:
    torch.manual_seed(0)
    schema = tiny_schema()
    model = materialize(build_model("DeepFM", schema, {"init_std": 0.1, "dnn_hidden_units": (8,)}), seed=0)
    return model.train(), global_batches(schema, 1, 32)[0]


def _loss_and_grads(task: CTRTask, batch: CTRBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    task.model.zero_grad()
    loss, (reported, *_rest) = task(batch)
    loss.backward()
    return loss.detach(), reported, {n: p.grad.clone() for n, p in task.model.named_parameters() if p.grad is not None}


def test_sum_is_batch_size_times_mean_with_the_same_relative_embedding_l2():
    """Without dense L2 the summed objective is exactly B x the mean one: loss and every gradient (the batch L2 on
    looked-up embeddings scales with it); the reported loss is per row under both."""
    model, batch = _model_and_batch()
    model._dense_l2.clear()  # dense L2 is the one term that is *not* scaled (checked below)
    B = batch.batch_size
    mean_loss, mean_rep, mean_g = _loss_and_grads(CTRTask(model, ("binary",)), batch)
    sum_loss, sum_rep, sum_g = _loss_and_grads(CTRTask(model, ("binary",), reduction="sum"), batch)
    assert model.config.l2_reg_embedding > 0
    torch.testing.assert_close(sum_loss, mean_loss * B)
    torch.testing.assert_close(sum_rep, mean_rep)
    assert mean_g.keys() == sum_g.keys() and len(mean_g) > 3
    for name in mean_g:
        torch.testing.assert_close(sum_g[name], mean_g[name] * B, rtol=1e-5, atol=1e-7)


def test_sum_adds_dense_l2_unscaled_and_scales_by_world_size():
    model, batch = _model_and_batch()
    B = batch.batch_size
    dense_l2 = float(sum(l2 * sum(p.pow(2).sum() for p in ps) for l2, ps in model._dense_l2))
    assert dense_l2 > 0
    mean_loss, _, _ = _loss_and_grads(CTRTask(model, ("binary",)), batch)
    sum_loss, _, _ = _loss_and_grads(CTRTask(model, ("binary",), reduction="sum"), batch)
    # mean = data + emb_l2 + dense_l2; sum = B * (data + emb_l2) + dense_l2
    assert float(sum_loss) == pytest.approx(B * (float(mean_loss) - dense_l2) + dense_l2, rel=1e-5)
    two, _, _ = _loss_and_grads(CTRTask(model, ("binary",), reduction="sum", world_size=2), batch)
    assert float(two) == pytest.approx(2 * B * (float(mean_loss) - dense_l2) + dense_l2, rel=1e-5)


def test_unknown_reduction_is_named():
    model, _ = _model_and_batch()
    with pytest.raises(ValueError, match="train.loss_reduction.*'total'"):
        CTRTask(model, ("binary",), reduction="total")
