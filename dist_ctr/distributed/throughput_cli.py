"""``dist-ctr plan JOB --world-size N --throughput``: the throughput model's table and its reference checks.

The job's model is built on ``meta`` to count its dense matmul weights; its schema's tables are planned for
8, 16, 64 and 128 devices. The checks rebuild the published benchmarks' shapes (MLPerf DLRM-DCNv2 on multi-hot
Criteo 1TB; TorchRec's one-hot DLRM example) and print predicted / published.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from dist_ctr.distributed.throughput import (
    DEVICE_PROFILES,
    DeviceProfile,
    dense_matmul_params,
    throughput_table,
)
from dist_ctr.strict import ConfigError

__all__ = ["print_throughput", "reference_checks"]

# TorchRec's DLRM example (torchrec_dlrm README): one-hot Criteo 1TB, 8x A100, global batch 65,536, ~5.4M samples/s.
TORCHREC_DLRM_A100 = ("TorchRec DLRM one-hot 8x A100", "a100", 8, 65_536, 5.4e6)


def _profile(name: str) -> DeviceProfile:
    if name not in DEVICE_PROFILES:
        raise ConfigError(f"--profile: unknown device profile {name!r}; known: {sorted(DEVICE_PROFILES)}")
    return DEVICE_PROFILES[name]


def _dense_params(model_name: str, schema: Any, config: Any) -> int:
    import torch

    from dist_ctr.models import build_model

    with torch.device("meta"):
        return dense_matmul_params(build_model(model_name, schema, config))


def reference_checks() -> list[str]:
    """Predicted vs published samples/s for the benchmarks in ``REFERENCE_FIGURES`` and TorchRec's DLRM."""
    from dist_ctr.data.presets import get_preset
    from dist_ctr.distributed.planner import make_topology, plan_offline, schema_tables
    from dist_ctr.distributed.sharding_config import ShardingConfig
    from dist_ctr.distributed.throughput import REFERENCE_FIGURES, bag_sizes, step_cost, with_bag_sizes

    shapes = {"MLPerf": (get_preset("criteo-1tb-multihot"), "DLRM_DCNv2"),
              "TorchRec": (get_preset("criteo-1tb", capped=False, embedding_dim=64), "DLRM")}
    out = ["Checks against published figures (predicted / published):"]
    for label, prof, world, gbatch, published in (*REFERENCE_FIGURES, TORCHREC_DLRM_A100):
        schema, model = shapes[label.split()[0]]
        pf = bag_sizes(schema)
        tables, pooled = schema_tables(schema)
        topo = make_topology(world, "cuda", hbm_gb=80.0 if prof == "a100" else 141.0, local_world_size=8)
        rep = plan_offline(tables, with_bag_sizes(ShardingConfig(), pf), topo, gbatch // world,
                           "rowwise_adagrad", pooled)
        if not rep.fits:
            out.append(f"  {label}: no plan fits")
            continue
        c = step_cost(rep.tables, pf, gbatch // world, world, _dense_params(model, schema, None), DEVICE_PROFILES[prof])
        out.append(f"  {label:32s} predicted {c.samples_per_s / 1e6:6.2f}M  published {published / 1e6:6.2f}M  "
                   f"ratio {c.samples_per_s / published:5.2f}")
    return out


def print_throughput(job: Any, schema: Any, sharding: Any, batch_per_rank: int, profile: str,
                     hbm_gb: Optional[float]) -> None:
    """Print the throughput table for the job's model and schema, then the reference checks and the wall time."""
    start = time.perf_counter()
    prof = _profile(profile)
    params = _dense_params(job.model.name, schema, job.model.config)
    print()
    print(throughput_table(schema, params, batch_per_rank, job.optim.sparse.name, prof, hbm_gb=hbm_gb or 141.0,
                           sharding=sharding))
    print()
    print("\n".join(reference_checks()))
    print(f"(throughput model: {time.perf_counter() - start:.1f} s)")
