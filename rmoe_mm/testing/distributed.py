"""Run a function on several CPU processes joined by a gloo process group."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(rank, world_size, port, worker, args):
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port))
    torch.set_num_threads(1)  # the processes share a few cores
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size)
    try:
        worker(rank, world_size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_gloo(worker, world_size: int, *args) -> None:
    """``worker(rank, world_size, *args)`` on ``world_size`` processes.

    Each process joins a gloo group (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR/PORT`` set as torchrun would), runs the worker, waits for
    the others and leaves. An exception in any worker fails the call.
    ``worker`` must be importable (a module-level function).
    """
    mp.spawn(
        _run,
        args=(world_size, free_port(), worker, args),
        nprocs=world_size,
        join=True)
