"""Functions that tests/test_10_mixed_precision_across_processes_claims.py runs on ranks.

They live in a module of their own because ranks import what they run: a
function defined inside a test file would drag pytest's test module along.
"""

import time

import torch
import torch.distributed as dist


def rank_and_size() -> tuple:
    return dist.get_rank(), dist.get_world_size()


def raise_on(rank: int) -> int:
    if dist.get_rank() == rank:
        raise ValueError(f"rank {rank} gives up on purpose")
    return dist.get_rank()


def sleep_on(rank: int, seconds: float) -> int:
    if dist.get_rank() == rank:
        time.sleep(seconds)
    return dist.get_rank()


def rank_tensor() -> torch.Tensor:
    return torch.full((3,), float(dist.get_rank()))
