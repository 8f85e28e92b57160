"""Self-checks for lesson 10 (mixed precision across processes).

`check_simulated_all_reduce` and `check_sharded_scaler_step` run the learner's
function on small cases worked out by hand in the lesson: three ranks that add
1 + 2^-8 + 2^-8 in BF16, and two ranks of which one overflows.
"""

from __future__ import annotations

import math

import torch

from grader.selfcheck.core import SelfCheck

__all__ = ["check_simulated_all_reduce", "check_sharded_scaler_step"]

TINY = 2.0**-8
_RING = ("chunk c of the ring is summed from rank (c - 1) % n downwards, ending at rank c, with "
         "seg = ceil(L / (2n)) and chunk c = elements [2c*seg, 2(c+1)*seg)")


def _values(t):
    if isinstance(t, torch.Tensor):
        return [float(v) for v in t.float().reshape(-1)]
    return t


def _dtype(t) -> str:
    return str(t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__


def _three_ranks(length: int) -> list:
    return [torch.full((length,), 1.0), torch.full((length,), TINY), torch.full((length,), TINY)]


def check_simulated_all_reduce(simulated_all_reduce) -> None:
    with SelfCheck("simulated_all_reduce") as sc:
        tensors = _three_ranks(6)
        kept = [t.clone() for t in tensors]
        got = sc.call(simulated_all_reduce, tensors, torch.bfloat16)
        sc.compare("returns a bfloat16 tensor", "torch.bfloat16", _dtype(got),
                   cause="cast each rank's tensor to dtype and return the sum in dtype")
        sc.compare("3 ranks, BF16 ring: chunk 0 keeps both 2^-8, chunks 1 and 2 lose them",
                   [1.0078125] * 2 + [1.0] * 4, _values(got),
                   cause="round after every addition, and follow the ring's order: " + _RING)
        sc.compare("the inputs are not modified", True, all(torch.equal(a, b) for a, b in zip(tensors, kept)),
                   cause="build new tensors; do not add into the tensors you were given")
        got = sc.call(simulated_all_reduce, _three_ranks(7), torch.bfloat16)
        sc.compare("7 elements: chunk 0 is elements 0-3 (seg = ceil(7/6) = 2)", [1.0078125] * 4 + [1.0] * 3,
                   _values(got), cause="chunks are two segments of ceil(L / 2n) elements, not ceil(L / n)")
        got = sc.call(simulated_all_reduce, _three_ranks(6), torch.bfloat16, "sequential")
        sc.compare("'sequential' adds ranks 0, 1, 2 in order: both 2^-8 are lost", [1.0] * 6, _values(got),
                   cause="'sequential' is ((x0 + x1) + x2) + ..., rounded after each addition")
        got = sc.call(simulated_all_reduce, _three_ranks(6), torch.float32)
        sc.compare("in FP32 nothing is lost", [1.0078125] * 6, _values(got),
                   cause="for float32 the additions are plain float32 additions")
        got = sc.call(simulated_all_reduce, [torch.tensor([1.0]), torch.tensor([TINY + 2.0**-20])],
                      torch.bfloat16)
        sc.compare("each rank casts first: 2^-8 + 2^-20 becomes 2^-8, then 1 + 2^-8 ties to 1.0",
                   [1.0], _values(got),
                   cause="cast every rank's tensor to dtype before adding: a rank sends dtype values")
        got = sc.call(simulated_all_reduce, [torch.tensor([0.1, 3.0])], torch.float16)
        sc.compare("one rank: its tensor cast to float16", [0.0999755859375, 3.0], _values(got),
                   cause="with n = 1 there is nothing to add: return the cast tensor")
        try:
            simulated_all_reduce(_three_ranks(2), torch.bfloat16, "tree")
            raised = "nothing"
        except ValueError:
            raised = "ValueError"
        except Exception as exc:  # noqa: BLE001 - shown as a value
            raised = type(exc).__name__
        sc.compare("an unknown algorithm raises ValueError", "ValueError", raised,
                   cause="raise ValueError for any algorithm other than 'ring' and 'sequential'")


def _state(scale: float, tracker: int = 0) -> dict:
    return {"scale": scale, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2,
            "_growth_tracker": tracker}


class _Recorder:
    """The all_reduce a real process group would give, counting its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, tensors):
        self.calls.append([_values(t) for t in tensors])
        total = torch.stack([t.reshape(-1) for t in tensors]).sum(0)
        return [total.clone() for _ in tensors]


def check_sharded_scaler_step(sharded_scaler_step) -> None:
    with SelfCheck("sharded_scaler_step") as sc:
        grads = [[torch.tensor([2048.0, -512.0])], [torch.tensor([math.inf, 8.0])]]
        states = [_state(1024.0), _state(1024.0)]
        reduce = _Recorder()
        got = sc.call(sharded_scaler_step, grads, states, reduce)
        unscaled, stepped, new_states = got
        sc.compare("all_reduce called once, with each rank's found_inf", [[[0.0], [1.0]]], reduce.calls,
                   cause="call all_reduce once, with [tensor([0. or 1.]) for each rank]")
        sc.compare("an inf on rank 1 stops both ranks", [False, False], stepped,
                   cause="step only when the all-reduced found_inf is 0 on every rank")
        sc.compare("both ranks back off to 512", [_state(512.0), _state(512.0)], new_states,
                   cause="back off from the all-reduced found_inf: scale * backoff_factor, tracker 0")
        sc.compare("rank 0 is unscaled by 1/1024", [2.0, -0.5], _values(unscaled[0][0]),
                   cause="multiply by float32(1 / scale)")
        sc.compare("rank 1 keeps its inf", [math.inf, 0.0078125], _values(unscaled[1][0]),
                   cause="unscale every gradient, the non-finite ones too")
        sc.compare("the inputs are not modified", ([2048.0, -512.0], 1024.0),
                   (_values(grads[0][0]), states[0]["scale"]),
                   cause="return new tensors and new dicts")

        grads = [[torch.tensor([5.0])], [torch.tensor([-1.0])]]
        unscaled, stepped, first = sc.call(sharded_scaler_step, grads, [_state(3.0), _state(3.0)], _Recorder())
        sc.compare("a clean step: both step, tracker 1", ([True, True], [_state(3.0, 1)] * 2), (stepped, first),
                   cause="no rank found an inf: tracker + 1, scale unchanged")
        sc.compare("bit parity: 5.0 * float32(1/3)", [1.6666667461395264], _values(unscaled[0][0]),
                   cause="multiply by float32(1.0 / scale); dividing by 3.0 gives 1.6666666269302368")
        _, _, second = sc.call(sharded_scaler_step, grads, first, _Recorder())
        sc.compare("the growth_interval-th clean step grows the scale", [_state(6.0)] * 2, second,
                   cause="when tracker + 1 == growth_interval: scale * growth_factor, tracker 0")
