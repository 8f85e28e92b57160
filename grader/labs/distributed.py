"""Start a real `torch.distributed` process group from a notebook (lesson 10).

    from grader.labs import distributed, experiments
    results = distributed.launch(2, experiments.hello)   # one result per rank

`launch` starts `world_size` worker processes on this machine, joins them into
one process group with the `gloo` backend (collectives on CPU tensors), runs the
given function on every rank and returns what each rank returned, indexed by
rank. Three choices make it safe to call from a notebook:

- The function runs in fresh processes, so it must live in an importable `.py`
  module: a function defined in a notebook cannot be sent to another process.
  The processes come from a *forkserver* that imports torch once; starting a
  rank then costs a fork, not a second of imports.
- The ranks meet through a file in a private temporary folder
  (`init_method="file://..."`), not a TCP port, so parallel runs on one machine
  never collide.
- Everything has a deadline. A rank that raises is reported with its own
  traceback; a rank that hangs (say, in a collective that another rank never
  entered) is stopped `timeout` seconds after every rank joined the group (starting
  them has its own, generous allowance). Either way the other ranks are
  stopped too and `launch` raises `RankFailed` with a message that names them.

The same experiment functions run on GPUs under torchrun, which starts one
process per GPU and passes RANK, WORLD_SIZE and LOCAL_RANK in the environment:

    torchrun --nproc-per-node=8 -m grader.labs.distributed fsdp_policies

There `main()` uses the NCCL backend (collectives on CUDA tensors), binds each
rank to GPU LOCAL_RANK, and `device()` returns that GPU.
"""

from __future__ import annotations

import datetime
import importlib
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait

import torch
import torch.distributed as dist

__all__ = ["launch", "warm_up", "device", "RankFailed", "main"]

# Modules the forkserver imports once, before it forks any rank, so that no rank
# pays for them. torch._dynamo is here because FSDP2 and the optimizers import it
# lazily, and four ranks importing it at once on two cores cost seconds each.
PRELOAD = ["grader.labs.distributed", "grader.labs.experiments", "grader.labs.sharded_scaling",
           "torch.distributed.fsdp", "torch.distributed.fsdp.sharded_grad_scaler",
           "torch.distributed.algorithms.ddp_comm_hooks.default_hooks", "torch.nn.parallel",
           "torch._dynamo"]


JOIN_TIMEOUT_S = 120.0  # for every rank to start and join, before `timeout` starts counting
JOIN_ATTEMPTS = 3


class RankFailed(RuntimeError):
    """A rank raised, died or hung; the message says which and why."""


class _JoinFailed(RankFailed):
    """A rank raised or died before the group had formed: worth another try."""


def device() -> torch.device:
    """Where this rank's tensors live: its GPU under NCCL, otherwise the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")  # Windows: slower to start, same result


def warm_up() -> None:
    """Start the forkserver now, so that it imports PyTorch while the notebook goes on.

    Optional: launch() starts it when needed. Where there is no forkserver
    (Windows), this does nothing.
    """
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()


def _check_importable(fn) -> None:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", "")
    if module in (None, "__main__", "__mp_main__") or "<" in name:
        raise ValueError(
            f"launch() needs a function defined at the top level of an importable .py module; "
            f"{getattr(fn, '__name__', fn)!r} comes from {module or 'nowhere'}. Worker processes "
            "cannot import a notebook: put the function in a file such as my_experiment.py "
            "next to the notebook and pass my_experiment.function.")


def _rank_main(fn, rank: int, world_size: int, store_file: str, timeout_s: float,
               kwargs: dict, conn) -> None:
    """What each worker process runs: join the group, run fn, send back its result."""
    torch.set_num_threads(1)  # several ranks share a few cores; one thread each is fastest
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S + timeout_s))
        conn.send_bytes(pickle.dumps(("joined",)))
        # Plain pickle, not multiprocessing's: it sends a tensor by value, where
        # multiprocessing would share its memory with a process about to exit.
        message = pickle.dumps(("ok", fn(**kwargs)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the notebook
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = pickle.dumps(("error", f"{type(exc).__name__}: {exc}", text))
    try:
        conn.send_bytes(message)
    finally:
        conn.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def _gather(pipes, processes, kind: str, timeout: float, too_late) -> dict[int, object]:
    """One message of `kind` from every rank within `timeout` seconds, by rank;
    RankFailed (saying `too_late(ranks)`) if some are late, or if a rank raised or died."""
    world_size, deadline = len(pipes), time.monotonic() + timeout
    waiting, got = {pipe: rank for rank, pipe in enumerate(pipes)}, {}
    failed = _JoinFailed if kind == "joined" else RankFailed
    while waiting:
        ready = wait(list(waiting), timeout=max(deadline - time.monotonic(), 0))
        if not ready:
            raise RankFailed(too_late(sorted(waiting.values())))
        for pipe in ready:
            rank = waiting.pop(pipe)
            try:
                message = pickle.loads(pipe.recv_bytes())
            except EOFError:
                code = processes[rank].exitcode
                raise failed(f"rank {rank} of {world_size} exited (code {code}) without "
                             "a result; all ranks were stopped.") from None
            if message[0] == "error":
                raise failed(f"rank {rank} of {world_size} raised {message[1]}\n\n"
                             f"Its traceback:\n{message[2]}")
            assert message[0] == kind, message[0]
            got[rank] = message[1] if len(message) > 1 else None
    return got


def _stop(processes) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join()


def launch(world_size: int, fn, timeout: float = 60.0, **kwargs) -> list:
    """Run `fn(**kwargs)` on `world_size` ranks of a gloo process group; return the results.

    The result list is indexed by rank. `fn` must be a top-level function of an
    importable module, and its keyword arguments and results picklable (numbers,
    strings, lists, dicts, CPU tensors).
    Raises RankFailed if a rank raises, dies, or has not finished `timeout` seconds after
    every rank joined the group.
    """
    if not isinstance(world_size, int) or not 1 <= world_size <= 64:
        raise ValueError(f"world_size must be an int from 1 to 64, got {world_size!r}")
    _check_importable(fn)
    for attempt in range(JOIN_ATTEMPTS):
        try:
            return _launch_once(world_size, fn, timeout, kwargs)
        except _JoinFailed:
            # Gloo's TCP mesh can fail to form when many groups start at once on one
            # machine ("Connection closed by peer"); nothing of `fn` has run yet.
            if attempt == JOIN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _launch_once(world_size: int, fn, timeout: float, kwargs: dict) -> list:
    ctx = _context()
    with tempfile.TemporaryDirectory(prefix="torch-dist-") as folder:
        store_file = os.path.join(folder, "store")
        pipes, processes = [], []
        for rank in range(world_size):
            receive, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_rank_main, name=f"rank{rank}", daemon=True,
                            args=(fn, rank, world_size, store_file, timeout, kwargs, send))
            p.start()
            send.close()  # only the child writes; EOF then means the child is gone
            pipes.append(receive)
            processes.append(p)
        try:
            # The deadline counts from the moment every rank has joined: starting
            # processes on a busy laptop must not eat the experiment's own time.
            _gather(pipes, processes, "joined", JOIN_TIMEOUT_S, lambda late: (
                f"rank(s) {late} of {world_size} did not join the process group within "
                f"{JOIN_TIMEOUT_S:g} s, so all ranks were stopped. The machine may be overloaded."))
            results = _gather(pipes, processes, "ok", timeout, lambda late: (
                f"rank(s) {late} of {world_size} did not finish within {timeout:g} s, so all "
                "ranks were stopped. A rank usually hangs in a collective that another rank "
                "never entered: check that every rank calls the same collectives in the "
                "same order."))
        finally:
            _stop(processes)
            for pipe in pipes:
                pipe.close()
    return [results[rank] for rank in range(world_size)]


def main(argv: list[str] | None = None) -> None:
    """Run one experiment under torchrun: `torchrun ... -m grader.labs.distributed NAME [JSON]`.

    NAME is a function of grader.labs.experiments and JSON its keyword arguments.
    Rank 0 prints every rank's result as one JSON list.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "RANK" not in os.environ:
        raise SystemExit("usage: torchrun --nproc-per-node=N -m grader.labs.distributed "
                         "EXPERIMENT ['{\"keyword\": value}']   (RANK is set by torchrun)")
    experiments = importlib.import_module("grader.labs.experiments")
    fn = getattr(experiments, argv[0])
    kwargs = json.loads(argv[1]) if len(argv) > 1 else {}
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=120))
    try:
        result = fn(**kwargs)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, result)
        if dist.get_rank() == 0:
            print(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
