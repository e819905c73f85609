"""The facade bench's step breakdown (dist_ctr.bench.breakdown) on a real facade fit: every op of the profiled
call lands in one part, the parts add up to the wall time, and the parts a DeepFM step has are all seen."""

from __future__ import annotations

import numpy as np

from dist_ctr.bench.breakdown import PARTS, format_breakdown, format_top_ops, profile_steps
from dist_ctr.compat.inputs import DenseFeat, SparseFeat
from dist_ctr.compat.models import DeepFM


def test_breakdown_splits_a_facade_fit_into_its_parts():
    rng = np.random.default_rng(0)
    n, batch = 512, 128
    x = {"a": rng.integers(0, 50, n), "b": rng.integers(0, 30, n), "x1": rng.normal(size=n).astype(np.float32)}
    y = (rng.random(n) < 0.3).astype(np.float32)
    cols = [SparseFeat("a", 50, 4), SparseFeat("b", 30, 4), DenseFeat("x1", 1)]
    m = DeepFM(cols, cols, dnn_hidden_units=(16,), seed=1)
    m.compile("adagrad", "binary_crossentropy")
    split = profile_steps(lambda: m.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False),
                          m.trainer.task, steps=n // batch, top_ops=30)
    assert set(split.micros) <= set(PARTS)
    for part in ("input prep", "lookup", "embedding bwd + update", "interaction", "tower", "loss",
                 "dense optimizer"):
        assert split.micros.get(part, 0.0) > 0.0, part
    assert sum(split.micros.values()) >= split.wall_ms * 1e3 * 0.999  # python is the rest of the wall time
    assert abs(sum(split.shares().values()) - 1.0) < 1e-9
    assert split.per_step_ms()["tower"] > 0 and "ms/step" in format_breakdown("DeepFM", split)
    assert len(split.top_ops) == 30
    assert [o.self_ms for o in split.top_ops] == sorted((o.self_ms for o in split.top_ops), reverse=True)
    assert all(o.calls > 0 and not o.name.startswith("dc:") for o in split.top_ops)
    assert any(o.name == "aten::addmm" and "[16]" in o.shapes for o in split.top_ops)  # the tower's GEMM
    assert format_top_ops("DeepFM", split).count("\n") == 30
