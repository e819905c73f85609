"""GlobalBatchNorm: N ranks normalise with the statistics of the global batch (real processes, gloo)."""

from __future__ import annotations

import pytest
import torch

from dist_ctr.distributed.batchnorm import GlobalBatchNorm, convert_global_batchnorm
from dist_ctr.launch.spawn import spawn
from tests.distributed.batchnorm_jobs import run


def test_convert_keeps_parameters_buffers_and_keys():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                              torch.nn.Sequential(torch.nn.BatchNorm2d(2, affine=False)))
    net[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert convert_global_batchnorm(net) == 2
    assert isinstance(net[1], GlobalBatchNorm) and isinstance(net[2][0], GlobalBatchNorm)
    after = net.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert convert_global_batchnorm(net) == 0  # idempotent


@pytest.mark.parametrize("shape", [(6, 4), (6, 3, 4)])
def test_single_process_equals_torch_batchnorm(shape):
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm1d(4, momentum=None)
    ours = GlobalBatchNorm(4, momentum=None)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.uniform_(-1, 1)
        ours.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(*shape) * 2
        x = x if len(shape) == 2 else x.transpose(1, 2)  # (N, C, L)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var) and int(ours.num_batches_tracked) == 3
    ours.eval()
    ref.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 4), (8, 3, 4)])
def test_two_ranks_match_one_process_forward_backward_and_running_stats(shape):
    steps = 3
    one = spawn(run, 1, shape, steps)[0]
    two = spawn(run, 2, shape, steps)
    assert one["type"] == "GlobalBatchNorm"
    t = torch.tensor
    for r in (0, 1):
        for a, b in zip(one["outs"], two[r]["outs"]):
            torch.testing.assert_close(t(b), t(a), rtol=1e-5, atol=1e-6)
        for ga, gb in zip(one["grads"], two[r]["grads"]):
            for a, b in zip(ga, gb):
                torch.testing.assert_close(t(b), t(a), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(t(two[r]["running_mean"]), t(one["running_mean"]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(t(two[r]["running_var"]), t(one["running_var"]), rtol=1e-5, atol=1e-6)
        assert two[r]["tracked"] == steps


@pytest.mark.slow
def test_per_rank_statistics_differ_without_global_batchnorm():
    """The control: plain BatchNorm under data parallelism does not match one process on the same data."""
    one = spawn(run, 1, (8, 4), 2, False)[0]
    two = spawn(run, 2, (8, 4), 2, False)
    assert one["type"] == "BatchNorm1d"
    assert not torch.allclose(torch.tensor(two[0]["running_mean"]), torch.tensor(one["running_mean"]), atol=1e-4)
