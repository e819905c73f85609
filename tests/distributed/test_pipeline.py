"""TorchRec's ``TrainPipelineSparseDist`` trains every model exactly as the plain loop does (gloo on CPU).

The pipeline (the engine's default on CUDA) overlaps the next batch's embedding input distribution with this
batch's training; on CPU it runs without streams but through the same model rewrite, read-ahead and
forward / backward / optimizer order, so it is tested here on real processes. Per model, the same global batches
train in both loops on 1 and on 2 processes; the per-step losses must agree. The cursor side (the pipeline reads
the loader ahead) is tested in ``test_loader_resume_world_size.py``.
"""

from __future__ import annotations

import pytest

from dist_ctr.launch.spawn import spawn
from tests.distributed.pipeline_jobs import buildable_models, compare_loops

STEPS, BATCH = 4, 16


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [1, 2])
def test_sparse_dist_pipeline_matches_plain_loop(world_size):
    pairs = buildable_models()
    names = [n for n, _ in pairs]
    assert {"DeepFM", "DCNMix", "DIN", "DIEN", "MMOE", "ONN", "LogisticRegression"} <= set(names), names
    results = spawn(compare_loops, world_size, pairs, STEPS, BATCH)
    errors = [f"{n}: {results[0][n]}" for n in names if isinstance(results[0][n], str)]
    assert not errors, "\n".join(errors)
    bad = []
    for name in names:
        for r in range(world_size):
            plain, piped = results[r][name]["none"], results[r][name]["sparse_dist"]
            assert len(plain) == len(piped) == STEPS
            if piped != pytest.approx(plain, rel=1e-5, abs=1e-6):
                bad.append(f"{name} rank {r}: plain {plain} vs pipelined {piped}")
    assert not bad, "\n".join(bad)


def test_unknown_pipeline_is_a_clear_error():
    from dist_ctr.distributed.env import DistEnv
    from dist_ctr.train.engine import Trainer

    with pytest.raises(ValueError, match="distributed.pipeline: unknown pipeline 'fast'"):
        Trainer(None, DistEnv(), pipeline="fast")  # type: ignore[arg-type]
