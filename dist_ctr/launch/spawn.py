"""Local multi-process launch with ``torch.multiprocessing`` (gloo on CPU, nccl on GPUs).

``spawn(fn, world_size, *args)`` runs ``fn(env: DistEnv, *args)`` in ``world_size`` fresh processes with a process
group already initialised, and returns each rank's return value (rank order). ``fn`` must be importable (a
module-level function).
"""

from __future__ import annotations

import os
import traceback
from typing import Any, Callable

import torch
import torch.multiprocessing as mp

from dist_ctr.distributed.env import DistEnv, destroy_process_group, free_port, init_process_group
from dist_ctr.errors import DistCtrError


def _worker(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if torch.cuda.is_available() and torch.cuda.device_count() >= world_size:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    env = DistEnv(rank=rank, world_size=world_size, local_world_size=world_size, device=device)
    try:
        init_process_group(env)
        result = fn(env, *args)
        queue.put((rank, "ok", result))
    except DistCtrError as e:  # a user's mistake: the parent raises it as is (one line, no traceback)
        queue.put((rank, "user_error", e))
    except BaseException as e:  # report, then re-raise so the exit code is non-zero
        queue.put((rank, "error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise
    finally:
        destroy_process_group()


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = 600.0) -> list[Any]:
    """Run ``fn(env, *args)`` on ``world_size`` local processes; returns results by rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = mp.start_processes(_worker, args=(world_size, port, fn, args, queue), nprocs=world_size, join=False,
                               start_method="spawn")
    results: dict[int, Any] = {}
    errors: list[str] = []
    import queue as _q

    for _ in range(world_size):
        try:
            rank, status, payload = queue.get(timeout=timeout_s)
        except _q.Empty:
            errors.append(f"no result within {timeout_s}s")
            break
        if status == "ok":
            results[rank] = payload
        elif status == "user_error":
            for p in procs.processes:
                if p.is_alive():
                    p.terminate()
            raise payload
        else:
            errors.append(f"rank {rank}: {payload}")
            break
    if errors:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
        raise RuntimeError("spawned training failed:\n" + "\n".join(errors))
    procs.join()
    return [results[r] for r in range(world_size)]
