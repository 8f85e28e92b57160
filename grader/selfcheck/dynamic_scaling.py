"""Self-checks for lesson 04, dynamic loss scaling: the learner's DynamicLossScaler.

Three small tables, one per part of the class (update, unscale, state_dict), so
a learner who has finished one part sees it pass while the others still say
"not implemented yet". Every expected value below was produced by a real
torch.amp.GradScaler("cpu") in torch 2.13 (see lesson 04 for how).
"""

from __future__ import annotations

import math

from grader.selfcheck.core import SelfCheck

__all__ = ["check_dynamic_loss_scaler"]

INF, NAN = math.inf, math.nan

# Lesson 04's worked example: init_scale=4.0, growth_interval=3.
WORKED_SEQUENCE = [False, False, False, False, True, False, False, False, True, True]
WORKED_SCALES = [4.0, 4.0, 8.0, 8.0, 4.0, 4.0, 4.0, 8.0, 4.0, 2.0]
WORKED_TRACKERS = [1, 2, 0, 1, 0, 1, 2, 0, 0, 0]
FLOAT32_MAX_POWER_OF_TWO = 2.0**127  # 1.7014118346046923e+38


def _tracker(scaler):
    """The growth tracker from state_dict(), or a note when that part is not written yet."""
    try:
        return scaler.state_dict()["_growth_tracker"]
    except NotImplementedError:
        return "state_dict() not implemented yet"
    except Exception as exc:  # noqa: BLE001 - shown as a value in the table
        return f"state_dict() raised {type(exc).__name__}"


def _check_update(DynamicLossScaler) -> bool:
    with SelfCheck("DynamicLossScaler: scale and update") as sc:
        s = sc.call(DynamicLossScaler)
        sc.compare("default scale is 2.0**16", 65536.0, sc.call(lambda: s.scale),
                   cause="store np.float32(init_scale); the property returns float(self._scale)")
        s = sc.call(DynamicLossScaler, init_scale=0.1)
        sc.compare("init_scale 0.1 is kept as float32(0.1)", 0.10000000149011612,
                   sc.call(lambda: s.scale),
                   cause="GradScaler keeps its scale in a float32 tensor: store np.float32(init_scale)")

        s = sc.call(DynamicLossScaler, init_scale=4.0, growth_interval=3)
        scales, trackers = [], []
        for found_inf in WORKED_SEQUENCE:
            sc.call(s.update, found_inf)
            scales.append(sc.call(lambda: s.scale))
            trackers.append(_tracker(s))
        sc.compare("worked example: scale after each update", WORKED_SCALES, scales,
                   cause="back off at once on found_inf=True; grow on the growth_interval-th "
                         "consecutive clean update (tracker + 1 == growth_interval)")
        sc.compare("worked example: tracker after each update", WORKED_TRACKERS, trackers,
                   cause="tracker + 1 on a clean update, 0 after a growth and 0 after a backoff")

        s = sc.call(DynamicLossScaler, init_scale=3.0, backoff_factor=0.3)
        sc.call(s.update, True)
        sc.compare("backoff 0.3 from 3.0 gives float32(3.0 * 0.3)", 0.8999999761581421,
                   sc.call(lambda: s.scale),
                   cause="multiply in double, then round once: np.float32(float(scale) * backoff_factor). "
                         "np.float32(3.0) * 0.3 stays float32 in NumPy 2 and gives 0.9000000357627869; "
                         "a Python float gives 0.8999999999999999")

        s = sc.call(DynamicLossScaler, init_scale=2.0**127, growth_interval=1)
        sc.call(s.update, False)
        sc.compare("no growth to inf: 2**127 stays 2**127", FLOAT32_MAX_POWER_OF_TWO,
                   sc.call(lambda: s.scale),
                   cause="float32(2**128) is inf: keep the old scale when the grown one is not finite")
        sc.compare("tracker is reset even when growth is refused", 0, _tracker(s),
                   cause="reset the tracker to 0 whenever tracker + 1 == growth_interval, "
                         "whether or not the scale grew")

        s = sc.call(DynamicLossScaler, init_scale=1.0)
        for _ in range(150):
            sc.call(s.update, True)
        sc.compare("no floor: 150 backoffs take 1.0 to 0.0", 0.0, sc.call(lambda: s.scale),
                   cause="PyTorch has no minimum scale; float32 halving passes the subnormals "
                         "and reaches 0.0 after 150 halvings (a Python float would not)")
    return sc.passed


def _check_unscale(DynamicLossScaler) -> bool:
    with SelfCheck("DynamicLossScaler: unscale") as sc:
        s = sc.call(DynamicLossScaler, init_scale=8.0)
        sc.compare("multiplies by 1/scale", ([2.0, -0.5, 0.0625], False),
                   sc.call(s.unscale, [16.0, -4.0, 0.5]),
                   cause="return (list of Python floats, Python bool), a tuple")
        s = sc.call(DynamicLossScaler, init_scale=3.0)
        sc.compare("bit parity: float32(5.0) * float32(1/3)", ([1.6666667461395264], False),
                   sc.call(s.unscale, [5.0]),
                   cause="multiply by inv = np.float32(1.0 / float(scale)) in float32; dividing by "
                         "the scale gives 1.6666666269302368")
        s = sc.call(DynamicLossScaler, init_scale=8.0)
        grads = [1.0, INF, -2.0]
        got = sc.call(s.unscale, grads)
        sc.compare("an inf sets found_inf", ([0.125, INF, -0.25], True), got,
                   cause="found_inf is True when any incoming grad is inf or NaN")
        sc.compare("the input list is not modified", [1.0, INF, -2.0], grads,
                   cause="build a new list; do not write into grads")
        sc.compare("a NaN sets found_inf", ([NAN, 0.125], True), sc.call(s.unscale, [NAN, 1.0]),
                   cause="NaN is not finite either: test with math.isfinite / np.isfinite")
        sc.compare("unscale does not change the scale", 8.0, sc.call(lambda: s.scale),
                   cause="only update() changes the scale")
        s = sc.call(DynamicLossScaler, init_scale=0.0)
        sc.compare("scale 0.0: inv is inf, found_inf stays False", ([INF, NAN], False),
                   sc.call(s.unscale, [0.5, 0.0]),
                   cause="GradScaler reaches scale 0.0 and takes 1/0 in double, which is inf, not an "
                         "error; 0.5 * inf is inf and 0 * inf is NaN, but the incoming grads were finite")
    return sc.passed


def _check_state_dict(DynamicLossScaler) -> bool:
    with SelfCheck("DynamicLossScaler: state_dict") as sc:
        s = sc.call(DynamicLossScaler, init_scale=4.0, growth_interval=3)
        for found_inf in WORKED_SEQUENCE[:4]:
            sc.call(s.update, found_inf)
        expected = {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                    "growth_interval": 3, "_growth_tracker": 1}
        got = sc.call(s.state_dict)
        sc.compare("GradScaler's keys", sorted(expected), sorted(got) if isinstance(got, dict) else got,
                   cause="exactly scale, growth_factor, backoff_factor, growth_interval, _growth_tracker "
                         "(the tracker's key starts with an underscore)")
        sc.compare("values after 4 clean updates, in that key order", list(expected.values()),
                   [got.get(k) for k in expected] if isinstance(got, dict) else got,
                   cause="scale is a Python float; growth_interval and _growth_tracker are Python ints")

        fresh = sc.call(DynamicLossScaler)
        sc.call(fresh.load_state_dict, expected)
        sc.call(fresh.update, False)
        sc.compare("a loaded scaler continues like the original", (8.0, 2),
                   (sc.call(lambda: fresh.scale), _tracker(fresh)),
                   cause="load_state_dict must restore all five entries, the tracker included")

        ahead = {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                 "growth_interval": 3, "_growth_tracker": 5}
        late = sc.call(DynamicLossScaler)
        sc.call(late.load_state_dict, ahead)
        sc.call(late.update, False)
        sc.compare("a tracker past growth_interval never triggers growth", (8.0, 6),
                   (sc.call(lambda: late.scale), _tracker(late)),
                   cause="PyTorch tests tracker + 1 == growth_interval (equality), not >=")
    return sc.passed


def check_dynamic_loss_scaler(DynamicLossScaler) -> None:
    """Print the three self-check tables for Exercise 4.1 (update, unscale, state_dict)."""
    for check in (_check_update, _check_unscale, _check_state_dict):
        check(DynamicLossScaler)
