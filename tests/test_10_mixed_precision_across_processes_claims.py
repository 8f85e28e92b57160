"""Lesson 10's claims, rechecked with tolerances, and the launcher's promises.

The notebook prints rounded numbers and verdicts; these tests recompute them
from the same code paths (grader.labs and real gloo process groups) and assert
the precise claims behind them. They also hold the grader's reference for
simulated_all_reduce (gloo in threads of one process) to gloo across real
processes.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

import distributed_helpers
from conftest import ROOT
from grader.labs import distributed, experiments, sharded_scaling

LESSON = "10_mixed_precision_across_processes"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@pytest.fixture(scope="module")
def checks():
    spec = importlib.util.spec_from_file_location("_checks10", ROOT / "grader" / "checks" / f"test_{LESSON}.py")
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # its @exercise marks are registered only in the grader's own runs
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    return module


def bits(t: torch.Tensor) -> list:
    return t.view({torch.float32: torch.int32}.get(t.dtype, torch.int16)).tolist()


# --- the launcher -------------------------------------------------------------------------------

def test_launch_returns_one_result_per_rank_in_rank_order():
    assert distributed.launch(3, distributed_helpers.rank_and_size) == [(0, 3), (1, 3), (2, 3)]


def test_tensors_come_back_by_value():
    results = distributed.launch(2, distributed_helpers.rank_tensor)
    assert [r.tolist() for r in results] == [[0.0] * 3, [1.0] * 3]


def test_a_rank_that_raises_is_named_with_its_exception_and_the_others_are_stopped():
    start = time.monotonic()
    with pytest.raises(distributed.RankFailed, match=r"rank 1 of 3 raised ValueError: rank 1 gives up"):
        distributed.launch(3, distributed_helpers.raise_on, rank=1)
    assert time.monotonic() - start < 30


def test_a_hung_rank_ends_the_run_at_the_deadline_with_a_clear_message():
    start = time.monotonic()
    with pytest.raises(distributed.RankFailed, match=r"rank\(s\) \[0\] of 2 did not finish within 3 s"):
        distributed.launch(2, distributed_helpers.sleep_on, timeout=3, rank=0, seconds=120)
    assert time.monotonic() - start < 15


def test_a_group_that_fails_to_form_is_started_again_but_not_forever(monkeypatch):
    calls = []

    def flaky(world_size, fn, timeout, kwargs):
        calls.append(world_size)
        if len(calls) < distributed.JOIN_ATTEMPTS:
            raise distributed._JoinFailed("rank 1 of 2 raised RuntimeError: Connection closed by peer")
        return ["ok"] * world_size
    monkeypatch.setattr(distributed, "_launch_once", flaky)
    assert distributed.launch(2, distributed_helpers.rank_and_size) == ["ok", "ok"]
    assert len(calls) == distributed.JOIN_ATTEMPTS
    calls.clear()
    monkeypatch.setattr(distributed, "_launch_once", lambda *a: calls.append(1) or (_ for _ in ()).throw(
        distributed._JoinFailed("never forms")))
    with pytest.raises(distributed.RankFailed, match="never forms"):
        distributed.launch(2, distributed_helpers.rank_and_size)
    assert len(calls) == distributed.JOIN_ATTEMPTS


def test_a_function_from_a_notebook_is_refused_with_advice():
    def local():
        return 1
    with pytest.raises(ValueError, match="importable .py module"):
        distributed.launch(2, local)
    with pytest.raises(ValueError, match="world_size"):
        distributed.launch(0, distributed_helpers.rank_and_size)


@pytest.mark.slow
def test_torchrun_runs_the_same_experiment_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "grader.labs.distributed", "hello"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"sum": 3.0' in proc.stdout and '"backend": "gloo"' in proc.stdout


# --- section 2: gloo's ring, bit for bit --------------------------------------------------------

def test_gloo_across_processes_equals_the_graders_references(checks):
    """The hidden checks' gloo-in-threads and the ring formula equal gloo across real processes."""
    numel = 4099  # not a multiple of 2N for N = 2, 3, 4: uneven and short chunks
    measured = distributed.launch(4, experiments.all_reduce_dtypes, numel=numel)[0]
    for n, by_dtype in measured.items():
        inputs = [experiments.rank_gradient(r, numel) for r in range(n)]
        threaded = checks.gloo_all_reduce([(inputs, name) for name in by_dtype])
        for (name, values), in_threads in zip(by_dtype.items(), threaded):
            across = torch.tensor(values).to(DTYPES[name])
            assert bits(across) == bits(in_threads) == bits(checks.ring_model(inputs, DTYPES[name])), (n, name)


def test_three_ranks_lose_the_small_terms_outside_chunk_zero():
    values = [[1.0] * 6, [2.0**-8] * 6, [2.0**-8] * 6]
    results = distributed.launch(3, experiments.all_reduce_values, values=values, dtype="bfloat16")
    assert results == [[1.0078125] * 2 + [1.0] * 4] * 3


# --- section 3: error against world size --------------------------------------------------------

def _error(checks, n: int, dtype, numel: int = 32768) -> tuple[float, float]:
    inputs = [experiments.rank_gradient(r, numel).to(dtype) for r in range(n)]
    exact = torch.stack([x.double() for x in inputs]).sum(0)
    got = checks.ring_model(inputs, dtype).double()
    return float((got - exact).norm() / exact.norm()), float((exact.to(dtype).double() - exact).norm() / exact.norm())


def test_reduction_errors_print_stably_and_grow_with_world_size(checks):
    table = {name: [_error(checks, n, dtype)[0] for n in (2, 3, 4)] for name, dtype in DTYPES.items()}
    for name, errors in table.items():
        assert errors == sorted(errors), name
        for e in errors:  # two significant digits that a last-bit change cannot flip
            assert f"{e * (1 + 1e-6):.1e}" == f"{e * (1 - 1e-6):.1e}"
    assert 6 < table["bfloat16"][0] / table["float16"][0] < 10  # "eight times lower"
    bf16_64, once_64 = _error(checks, 64, torch.bfloat16)
    assert 3 < bf16_64 / once_64 < 5  # "about four times further than one BF16 rounding"


# --- sections 4 and 5: FSDP2 --------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy_runs():
    return distributed.launch(2, experiments.fsdp_policies, steps=15)[0]


def _rel(a, b) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def test_param_dtype_sets_compute_and_all_gather_and_reduce_dtype_the_reduce_scatter(policy_runs):
    def traffic(name, kind):
        rows = policy_runs[name]["traffic"]
        return {d for k, d, _ in rows if k == kind}, sum(b for k, _, b in rows if k == kind)

    fp32, bf16_fp32, bf16_bf16 = (policy_runs[n] for n in list(policy_runs)[:3])
    assert (fp32["layer_input_dtype"], bf16_fp32["layer_input_dtype"]) == ("torch.float32", "torch.bfloat16")
    assert {run["sharded_param_dtype"] for run in policy_runs.values()} == {"torch.float32"}
    assert traffic("BF16 params, FP32 reduce", "all_gather") == ({"bfloat16"}, traffic("FP32 (no policy)", "all_gather")[1] // 2)
    assert traffic("BF16 params, BF16 reduce", "reduce_scatter") == ({"bfloat16"}, traffic("BF16 params, FP32 reduce", "reduce_scatter")[1] // 2)
    assert policy_runs["BF16 params, FP32 reduce, FP32 output"]["output_dtype"] == "torch.float32"
    assert bf16_fp32["output_dtype"] == "torch.bfloat16"


def test_bf16_compute_moves_the_gradient_by_a_few_percent_and_the_bf16_reduce_by_far_less(policy_runs):
    names = list(policy_runs)
    compute = _rel(policy_runs[names[1]]["first_grad"], policy_runs[names[0]]["first_grad"])
    reduce = _rel(policy_runs[names[2]]["first_grad"], policy_runs[names[1]]["first_grad"])
    assert 0.01 < compute < 0.06 and reduce < 0.005 and reduce < compute / 5
    for name in names[1:3]:
        assert abs(policy_runs[name]["losses"][-1] / policy_runs[names[0]]["losses"][-1] - 1) < 0.05
    assert policy_runs[names[0]]["losses"][-1] < 0.1 * policy_runs[names[0]]["losses"][0]  # it trains


def test_memory_per_rank_follows_16_bytes_per_parameter_over_n():
    memory = distributed.launch(4, experiments.fsdp_memory)
    params = memory[0][1]["parameters"]
    for n in (1, 2, 3, 4):
        fullest = max(sum(r[n][k] for k in ("params", "grads", "adam")) for r in memory if n in r)
        assert abs(fullest / (16 * params / n) - 1) < 0.03, n
        assert max(r[n]["largest_unsharded_layer"] for r in memory if n in r) == 2 * (256 * 256 + 256)


# --- section 6: DDP hooks -----------------------------------------------------------------------

def test_fp16_compression_loses_both_ends_and_bf16_stays_within_two_roundings():
    ddp = distributed.launch(2, experiments.ddp_compression)[0]
    exact = torch.tensor(ddp["none (FP32)"], dtype=torch.float64)
    fp16, bf16 = (torch.tensor(ddp[k], dtype=torch.float64) for k in ("fp16_compress_hook", "bf16_compress_hook"))
    assert (int((fp16 == 0).sum()), int(fp16.isinf().sum())) == (2, 12)
    assert bool((bf16 != 0).all()) and bool(bf16.isfinite().all())
    assert float(((bf16 - exact).abs() / exact.abs()).max()) < 2.0**-7 * 0.8


# --- section 7: found_inf across ranks ----------------------------------------------------------

def _largest_gradients() -> dict:
    """{(data rank, owner rank): largest |gradient| of the rows that owner holds}, in FP32."""
    owned = {0: lambda g: [g["0.weight"][:8], g["0.bias"][:8], g["2.weight"], g["2.bias"]],
             1: lambda g: [g["0.weight"][8:], g["0.bias"][8:]]}
    largest = {}
    for data_rank in (0, 1):
        x = experiments.normal((32, 8), data_rank)
        model = sharded_scaling.make_model()
        F.mse_loss(model(x).float(), x[:, :1]).backward()
        grads = dict((name, p.grad) for name, p in model.named_parameters())
        for owner, pick in owned.items():
            largest[data_rank, owner] = max(float(t.abs().max()) for t in pick(grads))
    return largest


def _predicted_scales(largest: dict, factor: float, shared: bool, steps: int = 10) -> list:
    """Each rank's log2(scale) before each step, if every gradient were `factor` times its size.

    A rank finds an inf when the rows it owns overflow FP16 in any rank's backward pass,
    which runs at that rank's own scale.
    """
    exponents, trackers, seen = [12, 12], [0, 0], []
    for _ in range(steps):
        seen.append(list(exponents))
        found = [any(largest[d, owner] * factor * 2.0**exponents[d] > 65520 for d in (0, 1)) for owner in (0, 1)]
        if shared:
            found = [any(found)] * 2
        for r in (0, 1):
            if found[r]:
                exponents[r], trackers[r] = exponents[r] - 1, 0
            elif trackers[r] + 1 == 2:
                exponents[r], trackers[r] = exponents[r] + 1, 0
            else:
                trackers[r] += 1
    return seen


def test_without_a_shared_found_inf_rank_1_skips_every_step_and_with_it_the_ranks_agree():
    runs = distributed.launch(2, sharded_scaling.scaler_lockstep, steps=10)
    assert runs[1]["local"]["skipped"] == [True] * 10 and runs[1]["local"]["own_rows_moved"] == 0
    assert not all(runs[0]["local"]["skipped"]) and runs[0]["local"]["own_rows_moved"] > 0
    for kind in ("ShardedGradScaler", "GradScaler on DTensor"):
        assert runs[0][kind]["scales"] == runs[1][kind]["scales"]
        assert [i for i, s in enumerate(runs[0][kind]["skipped"]) if s] == [0, 1, 2, 5, 8]
    largest = _largest_gradients()
    for kind, shared in (("local", False), ("ShardedGradScaler", True)):
        measured = [[int(math.log2(s)) for s in runs[r][kind]["scales"]] for r in (0, 1)]
        assert [list(e) for e in zip(*measured)] == _predicted_scales(largest, 1.0, shared), kind


def test_the_scaler_demos_overflows_are_far_from_fp16s_threshold():
    """The printed patterns stay the same if every gradient were 8% smaller or larger."""
    largest = _largest_gradients()
    for shared in (False, True):
        assert _predicted_scales(largest, 0.92, shared) == _predicted_scales(largest, 1.0, shared) \
            == _predicted_scales(largest, 1.08, shared)
