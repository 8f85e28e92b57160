"""What lesson 10's ranks run: collectives, FSDP2 mixed precision, DDP compression.

Every function here runs on each rank of a process group started by
`grader.labs.distributed.launch` (or torchrun) and returns plain data: lists of
Python floats, ints, strings and dicts, so that results cross back to the
notebook exactly (a BF16 or FP16 value is exact as a Python float). Functions
that take `world_sizes` build subgroups of the first n ranks, so one launch of
four processes measures world sizes 1 to 4.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from grader.labs.distributed import device

# FSDP2 and DDP are imported inside the functions that use them: importing them
# costs seconds, which the notebook's kernel need not pay. The ranks find them
# already imported, because the forkserver preloads them (distributed.PRELOAD).

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
POLICIES = {  # name -> MixedPrecisionPolicy keyword arguments (dtype names)
    "FP32 (no policy)": {},
    "BF16 params, FP32 reduce": {"param_dtype": "bfloat16", "reduce_dtype": "float32"},
    "BF16 params, BF16 reduce": {"param_dtype": "bfloat16", "reduce_dtype": "bfloat16"},
    "BF16 params, FP32 reduce, FP32 output": {"param_dtype": "bfloat16", "reduce_dtype": "float32",
                                              "output_dtype": "float32"},
}


def hello() -> dict:
    """Each rank adds rank + 1 into one all-reduce; every rank gets the same sum."""
    x = torch.tensor([dist.get_rank() + 1.0], device=device())
    dist.all_reduce(x)
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
            "backend": dist.get_backend(), "sum": x.item()}


def normal(shape, seed: int) -> torch.Tensor:
    """Standard normal float32 values from NumPy's generator.

    torch.randn draws different values under different CPU capabilities (its AVX2
    path is not the scalar one), so data that must be the same on every machine
    comes from NumPy.
    """
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))


def rank_gradient(rank: int, numel: int, seed: int = 0) -> torch.Tensor:
    """A float32 'gradient' for one rank: a shared signal plus this rank's mini-batch noise."""
    return (normal(numel, seed) + 0.5 * normal(numel, seed + 1000 + rank)) * 1e-3


def _subgroups(world_sizes):
    """(n, group) for each n, with group None on the ranks outside it. Every rank must call this."""
    rank = dist.get_rank()
    for n in world_sizes:
        group = dist.new_group(list(range(n)))
        yield n, (group if rank < n else None)
        dist.barrier()


def all_reduce_dtypes(numel: int = 32768, world_sizes=(2, 3, 4), seed: int = 0) -> dict | None:
    """gloo's all-reduce of rank_gradient(...) cast to each dtype, for each world size.

    Returns, on rank 0, {n: {dtype name: reduced values}}; None on other ranks.
    """
    out = {}
    for n, group in _subgroups(world_sizes):
        if group is None:
            continue
        out[n] = {}
        for name, dtype in DTYPES.items():
            x = rank_gradient(dist.get_rank(), numel, seed).to(dtype).to(device())
            dist.all_reduce(x, group=group)
            out[n][name] = x.float().cpu().tolist()
    return out if dist.get_rank() == 0 else None


def all_reduce_values(values: list, dtype: str = "bfloat16") -> list:
    """All-reduce values[rank] (one list per rank) in `dtype`; every rank returns the result."""
    x = torch.tensor(values[dist.get_rank()], dtype=torch.float32).to(DTYPES[dtype]).to(device())
    dist.all_reduce(x)
    return x.float().cpu().tolist()


# --- FSDP2 ----------------------------------------------------------------------------------

def make_mlp(width: int = 64, inputs: int = 16, depth: int = 3, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    layers, size = [], inputs
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(size, width), torch.nn.ReLU()]
        size = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(size, 1)).to(device())


def shard(model: torch.nn.Module, policy: dict, mesh=None) -> torch.nn.Module:
    """fully_shard every Linear, then the root, with a MixedPrecisionPolicy built from dtype names."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(**{k: DTYPES[v] for k, v in policy.items()})
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh, mp_policy=mp)
    return fully_shard(model, mesh=mesh, mp_policy=mp)


def batch(rank: int, step: int, inputs: int = 16, size: int = 32):
    x = normal((size, inputs), 10_000 * rank + step)
    y = torch.sin(x[:, :1] * 2) + 0.5 * x[:, 1:2] * x[:, 2:3]  # every rank learns one function
    return x.to(device()), y.to(device())


@contextmanager
def recording_collectives(log: list):
    """Record (collective, dtype, bytes) for each all-gather and reduce-scatter FSDP2 issues.

    The bytes are those of the full, unsharded tensor: the parameters an
    all-gather assembles, the gradient a reduce-scatter starts from.
    """
    originals = {"all_gather_single": dist.all_gather_single,
                 "reduce_scatter_single": dist.reduce_scatter_single}

    def recorder(name, full_tensor):
        def call(*args, **kwargs):
            tensor = full_tensor(args, kwargs)
            log.append((name.removesuffix("_single"), str(tensor.dtype).removeprefix("torch."),
                        tensor.numel() * tensor.element_size()))
            return originals[name](*args, **kwargs)
        return call

    dist.all_gather_single = recorder(
        "all_gather_single", lambda a, k: k["output_tensor"] if "output_tensor" in k else a[0])
    dist.reduce_scatter_single = recorder(
        "reduce_scatter_single", lambda a, k: k["input"] if "input" in k else a[1])
    try:
        yield log
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


def fsdp_policies(steps: int = 15, lr: float = 1e-2) -> dict:
    """Train the same MLP under each MixedPrecisionPolicy; report losses, dtypes and traffic.

    Each rank trains on one fixed batch of its own, so the loss falls smoothly. The
    last policy differs from the second only in its output dtype, so it runs one step.
    """
    rank, out = dist.get_rank(), {}
    x, y = batch(rank, 0)
    for i, (name, policy) in enumerate(POLICIES.items()):
        n_steps = 1 if i == len(POLICIES) - 1 else steps
        model = shard(make_mlp(), policy)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        seen = {}

        def look(module, args):  # a forward pre-hook must return None, or it replaces the input
            seen.setdefault("compute", (str(args[0].dtype), str(module.weight.dtype)))

        model[2].register_forward_pre_hook(look)
        losses, traffic = [], []
        for step in range(n_steps):
            with recording_collectives(traffic if step == 0 else []):
                pred = model(x)
                loss = F.mse_loss(pred.float(), y)
                loss.backward()
            if step == 0:
                first_grad = model[0].weight.grad.to_local().flatten().tolist()
            opt.step()
            opt.zero_grad()
            reduced = loss.detach().clone()
            dist.all_reduce(reduced)
            losses.append(reduced.item() / dist.get_world_size())
        p = model[0].weight
        out[name] = {"losses": losses, "traffic": traffic, "first_grad": first_grad,
                     "layer_input_dtype": seen["compute"][0], "unsharded_param_dtype": seen["compute"][1],
                     "output_dtype": str(pred.dtype), "sharded_param_dtype": str(p.dtype),
                     "sharded_param_type": type(p).__name__, "sharded_grad_dtype": str(p.grad.dtype)
                     if p.grad is not None else str(p.dtype), "local_shape": list(p.to_local().shape),
                     "full_shape": list(p.shape)}
    return out


def _local_bytes(tensors) -> int:
    total = 0
    for t in tensors:
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def fsdp_memory(world_sizes=(1, 2, 3, 4), width: int = 256, policy: dict | None = None) -> dict:
    """Bytes each rank holds after one Adam step, per world size, under a BF16/FP32 policy."""
    from torch.distributed.device_mesh import DeviceMesh

    policy = policy or {"param_dtype": "bfloat16", "reduce_dtype": "float32"}
    out = {}
    for n, group in _subgroups(world_sizes):
        if group is None:
            continue
        model = shard(make_mlp(width=width, inputs=width), policy, DeviceMesh.from_group(group, device().type))
        unsharded = []

        def look(module, args):
            unsharded.append(_local_bytes([module.weight, module.bias]))

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_pre_hook(look)
        opt = torch.optim.Adam(model.parameters())
        x, y = batch(dist.get_rank(), 0, inputs=width)
        F.mse_loss(model(x).float(), y).backward()
        opt.step()
        params = list(model.parameters())
        state = [v for p in params for v in opt.state[p].values() if torch.is_tensor(v)]
        out[n] = {"parameters": sum(p.numel() for p in params),
                  "params": _local_bytes(params), "grads": _local_bytes(p.grad for p in params),
                  "adam": _local_bytes(state), "largest_unsharded_layer": max(unsharded)}
    return out


# --- DDP communication hooks ----------------------------------------------------------------

def bf16_hook(state, bucket):
    """bf16_compress_hook under another name: DDP refuses the original unless NCCL is present,
    but gloo all-reduces BF16 on the CPU just as well."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    return default_hooks.bf16_compress_hook(state, bucket)


def ddp_compression(features: int = 64) -> dict:
    """One DDP backward per hook on inputs whose features span 10^-9 to 10^6 in size.

    Every input is positive, so the two ranks' gradients add up rather than cancel.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    hooks = {"none (FP32)": None, "fp16_compress_hook": default_hooks.fp16_compress_hook,
             "bf16_compress_hook": bf16_hook}
    rank, out = dist.get_rank(), {}
    magnitudes = torch.logspace(-9, 6, features)
    x = ((1.0 + 0.25 * normal((32, features), rank)).abs() * magnitudes).to(device())
    for name, hook in hooks.items():
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(features, 1, bias=False).to(device()))
        if hook is not None:
            model.register_comm_hook(None, hook)
        model(x).sum().backward()
        out[name] = model.module.weight.grad.flatten().cpu().tolist()
    return out


def skipped_collective() -> float:
    """A bug on purpose: rank 0 enters an all-reduce that rank 1 never calls."""
    x = torch.ones(1, device=device())
    if dist.get_rank() == 0:
        dist.all_reduce(x)
    return x.item()
