"""FP16 loss scaling under FSDP2: why every rank must see the same found_inf (lesson 10).

`scaler_lockstep` runs on each rank of a two-rank group. It trains a small MLP
whose first layer is sharded by rows: rank 0 owns hidden units 0-7, rank 1 owns
units 8-15. The second layer weighs units 8-15 much more, so their gradients are
much larger, and with a large loss scale only they overflow FP16. After the
reduce-scatter the inf therefore sits in rank 1's shard alone.

Three scalers meet that overflow:
- "local": torch.amp.GradScaler shown only this rank's shards as plain tensors
  (what FSDP1's flat shards, or a hand-written scaler, look like). Each rank
  decides from its own shard;
- "ShardedGradScaler": all-reduces found_inf across the ranks before deciding;
- "GradScaler on DTensor": torch.amp.GradScaler given FSDP2's DTensor gradients,
  where DTensor reduces found_inf with a MAX all-reduce of its own.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

from grader.labs.distributed import device
from grader.labs.experiments import normal, shard

FP16_POLICY = {"param_dtype": "float16", "reduce_dtype": "float32"}
LOUD_UNITS = 40.0  # how much more the second layer weighs rank 1's hidden units


def make_model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        model[2].weight[:, 8:] *= LOUD_UNITS
    return model.to(device())


class LocalShards:
    """An optimizer as a scaler sees it when it looks only at this rank's shards.

    Its parameters are stand-ins whose .grad is the local shard of the real
    gradient (same storage, so unscaling them unscales the real gradients), and
    step() steps the real optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.param_groups = [{"params": [self._stand_in(p) for p in group["params"] if p.grad is not None]}
                             for group in optimizer.param_groups]

    @staticmethod
    def _stand_in(param):
        grad = param.grad.to_local()
        stand_in = torch.zeros_like(grad)
        stand_in.grad = grad
        return stand_in

    def step(self):
        return self.optimizer.step()


def _local_found_inf(model) -> bool:
    return any(not bool(torch.isfinite(p.grad.to_local()).all()) for p in model.parameters()
               if p.grad is not None)


def _scaler(kind: str, init_scale: float, growth_interval: int):
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    kwargs = {"init_scale": init_scale, "growth_interval": growth_interval}
    if kind == "ShardedGradScaler":
        return ShardedGradScaler(device().type, **kwargs)
    return torch.amp.GradScaler(device().type, **kwargs)


def scaler_lockstep(steps: int = 10, init_scale: float = 2.0**12, growth_interval: int = 2,
                    lr: float = 1e-4) -> dict:
    """Per scaler kind: this rank's scale before each step, whether it skipped, what it saw."""
    # GradScaler's found_inf has shape (1,); DTensor warns each time it wraps it.
    warnings.filterwarnings("ignore", message="Found a non-scalar tensor with numel=1")
    rank, out = dist.get_rank(), {}
    x = normal((32, 8), rank).to(device())
    y = x[:, :1].clone()
    for kind in ("local", "ShardedGradScaler", "GradScaler on DTensor"):
        model = shard(make_model(), FP16_POLICY)
        start = model[0].weight.to_local().detach().clone()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        scaler = _scaler(kind, init_scale, growth_interval)
        scales, skipped, saw_inf = [], [], []
        for _ in range(steps):
            before = scaler.get_scale()
            loss = F.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            saw_inf.append(_local_found_inf(model))
            scaler.step(LocalShards(opt) if kind == "local" else opt)
            scaler.update()
            opt.zero_grad()
            scales.append(before)
            skipped.append(scaler.get_scale() < before)  # update() backs off exactly when it skipped
        moved = (model[0].weight.to_local().detach() - start).abs().max().item()
        out[kind] = {"scales": scales, "skipped": skipped, "saw_inf_in_own_shard": saw_inf,
                     "own_rows_moved": moved, "rank": rank}
    return out
