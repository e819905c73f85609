"""``DistEnv``: where this process sits (rank, world size, device), independent of who started it.

The same ``train(...)`` runs under pytest (world size 1), ``torch.multiprocessing`` spawn, torchrun and Ray: each
launcher builds a ``DistEnv`` and calls :func:`init_process_group`; nothing else reads environment variables.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    @classmethod
    def from_environ(cls) -> "DistEnv":
        """From torchrun / Ray Train variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        return cls(rank, world, local_world, device)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group(env: DistEnv, init_method: str | None = None, timeout_s: float = 600.0) -> None:
    """Create the default process group if none exists.

    World size 1 uses an in-memory store (no port); larger worlds use ``init_method`` or the MASTER_ADDR /
    MASTER_PORT environment (torchrun, Ray Train and our spawn launcher set them).
    """
    if dist.is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_s)
    if env.world_size == 1 and init_method is None:
        dist.init_process_group(env.backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return
    dist.init_process_group(
        env.backend, init_method=init_method or "env://", rank=env.rank, world_size=env.world_size, timeout=timeout
    )


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
