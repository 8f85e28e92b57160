"""Hidden checks for lesson 09: `round_to_e2m1` and `mx_quantize`, one exercise (9 pts).

The references here are independent of the lesson's solution. FP4 E2M1 is
rounded against its value table, built from the bit layout in the OCP
Microscaling spec v1.0 (one sign bit, two exponent bits with bias 1, one
mantissa bit): nearest value, ties to the code with an even mantissa bit,
saturation at +-6. The shared exponent is floor(log2(amax)) - emax read
exactly from float64 `frexp`, clamped to E8M0's [-127, 127], and the FP8
elements are PyTorch's own casts. Every comparison is exact: elementwise
casts, amax and power-of-two scales give the same bits on every CPU.

The element checks round with the learner's own scales whenever those are
well formed, so a wrong shared exponent costs the scale check only, and a
rounding slip costs the element checks only.
"""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from grader.checkkit import CheckFailed, draw, exercise, render

EXERCISE = "mx_quantize"
# name: (torch dtype or None for E2M1, emax, largest finite value)
FORMATS = {"e4m3": (torch.float8_e4m3fn, 8, 448.0), "e5m2": (torch.float8_e5m2, 15, 57344.0),
           "e2m1": (None, 2, 6.0)}
EMAX_TEXT = ("emax is the exponent of the element format's largest normal value: 8 for E4M3 "
             "(448 = 1.75 * 2**8), 15 for E5M2 (57344 = 1.75 * 2**15), 2 for E2M1 (6 = 1.5 * 2**2)")

PROBES = '''
def __grader_09_e2m1(x):
    kept = x.clone()
    out = round_to_e2m1(x)
    return out, bool(torch.equal(x, kept))


def __grader_09_mx(x, elem_format, block):
    kept = x.clone()
    out = mx_quantize(x, elem_format, block)
    return out, bool(torch.equal(x, kept))
'''


# -- the references ---------------------------------------------------------------------------

def _e2m1_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitudes of E2M1 codes 0..7 from the bit layout, and whether each mantissa bit is even."""
    values, even = [], []
    for code in range(8):
        exponent, mantissa = code >> 1, code & 1
        value = 2.0 ** (exponent - 1) * (1 + mantissa / 2) if exponent else mantissa / 2
        values.append(value)
        even.append(mantissa == 0)
    return torch.tensor(values, dtype=torch.float64), torch.tensor(even)


E2M1_VALUES, E2M1_EVEN = _e2m1_table()  # 0, 0.5, 1, 1.5, 2, 3, 4, 6


def ref_round_to_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value by table lookup; a tie goes to the even mantissa; beyond 6 saturates."""
    mag = x.double().abs().clamp(max=6.0)
    distance = (mag[..., None] - E2M1_VALUES).abs()
    nearest = distance == distance.min(dim=-1, keepdim=True).values
    preference = torch.where(nearest, torch.where(E2M1_EVEN, 0, 1), 2)
    value = E2M1_VALUES[preference.argmin(dim=-1)]
    return torch.copysign(value, x.double()).float()


def ref_shared_exponents(x: torch.Tensor, elem_format: str, block: int) -> torch.Tensor:
    """floor(log2(amax)) - emax per block, exactly, clamped to [-127, 127]; -127 for a zero block."""
    emax = FORMATS[elem_format][1]
    amax = _blocks(x, block).double().abs().amax(dim=-1)
    _, exponent = torch.frexp(amax)  # amax = m * 2**exponent with m in [0.5, 1)
    shared = torch.where(amax > 0, exponent.long() - 1 - emax, torch.full_like(exponent.long(), -127))
    return shared.clamp(-127, 127)


def ref_elements(x: torch.Tensor, elem_format: str, block: int, shared: torch.Tensor) -> torch.Tensor:
    """x / 2**shared per block, rounded to the element format with saturation, as float32."""
    dtype, _, top = FORMATS[elem_format]
    scaled = (_blocks(x, block).double() / torch.exp2(shared.double())[..., None]).float()
    if dtype is None:
        out = ref_round_to_e2m1(scaled)
    else:
        out = scaled.clamp(-top, top).to(dtype).float()
    return out.reshape(x.shape)


def float32_below(x: float) -> float:
    """The largest float32 below x (math.nextafter would give a float64 that rounds back to x)."""
    return float(torch.nextafter(torch.tensor(x), torch.tensor(0.0)))


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block)


# -- drawn inputs -------------------------------------------------------------------------------

def _ties(elem_format: str, g: torch.Generator, n: int) -> torch.Tensor:
    """n values exactly halfway between two neighbouring element values (below the max)."""
    dtype, _, top = FORMATS[elem_format]
    if dtype is None:
        grid = E2M1_VALUES.float()
    else:
        codes = torch.arange(0, 0x7C if dtype == torch.float8_e5m2 else 0x7F, dtype=torch.uint8)
        grid = codes.view(dtype).float()
    grid = grid[grid <= top]
    mids = (grid[:-1] + grid[1:]) / 2
    pick = mids[torch.randint(len(mids), (n,), generator=g)]
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    return pick * sign


def make_block(kind: str, elem_format: str, block: int, base: int, g: torch.Generator) -> torch.Tensor:
    """One block of `block` float32 values of a given kind, around 2**base."""
    top = FORMATS[elem_format][2]
    emax = FORMATS[elem_format][1]
    x = torch.randn(block, generator=g)
    if kind == "gaussian":
        return x * 2.0**base
    if kind == "wide":  # 40 binades inside one block: elements reach the subnormals and zero
        spread = torch.exp2(torch.randint(-20, 21, (block,), generator=g).float())
        return x * spread * 2.0**min(base, 100)
    if kind == "zero":
        return torch.zeros(block)
    if kind == "tiny":  # float32 subnormals, amax far below 2**-127
        return x * 2.0**-140
    if kind == "below_power_of_two":  # amax just under 2**k: float32 log2 rounds it up to k
        x = x.clamp(-1, 1) * 0.5 * 2.0**base
        sign = 1.0 if float(torch.randn(1, generator=g)) >= 0 else -1.0
        x[torch.randint(block, (1,), generator=g)] = sign * float32_below(2.0**base)
        return x
    # "ties" and "top": values placed on the element grid after the shared scale 2**base
    scale = 2.0**base
    lead = 2.0**emax * (1.0 + float(torch.rand(1, generator=g)) * 0.99)  # amax / scale in [2**emax, 2**(emax+1))
    if kind == "ties":
        x = _ties(elem_format, g, block)
    else:  # "top": many values between the format's max and 2**(emax+1): they must saturate
        x = (top + torch.rand(block, generator=g) * (2.0**(emax + 1) - top)) * torch.where(
            torch.rand(block, generator=g) < 0.5, -1.0, 1.0)
        x = x.clamp(-2.0**(emax + 1) * 0.999, 2.0**(emax + 1) * 0.999)
    x[0] = lead
    return (x * scale).float()


KINDS = ["gaussian", "gaussian", "wide", "zero", "tiny", "below_power_of_two", "ties", "top"]


@st.composite
def mx_cases(draw_, formats=tuple(FORMATS), blocks=(32,)):
    elem_format = draw_(st.sampled_from(formats))
    block = draw_(st.sampled_from(blocks))
    lead = draw_(st.sampled_from([(), (1,), (2,), (3,), (2, 2)]))
    n_blocks = draw_(st.integers(1, 3))
    seed = draw_(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    count = math.prod(lead) * n_blocks
    parts = []
    for _ in range(count):
        kind = draw_(st.sampled_from(KINDS))
        base = draw_(st.integers(-120, 110))
        parts.append(make_block(kind, elem_format, block, base, g))
    x = torch.cat(parts).reshape(*lead, n_blocks * block).float()
    return (x, elem_format, block)


def _e2m1_inputs(seed: int) -> list[tuple]:
    grid = E2M1_VALUES.float()
    ties = (grid[:-1] + grid[1:]) / 2
    near = torch.cat([torch.nextafter(ties, torch.zeros_like(ties)),
                      torch.nextafter(ties, torch.full_like(ties, 10.0))])
    exact = torch.cat([grid, ties, near, torch.tensor([6.25, 7.0, 1e3, 3e38, 1e-30, 0.24999999])])
    cases = [(exact,), (-exact,), (exact[:16].reshape(8, 2),)]
    for values in draw(st.lists(st.floats(-12.0, 12.0, width=32), min_size=1, max_size=40),
                       n=30, seed=seed, key="09.e2m1"):
        cases.append((torch.tensor(values, dtype=torch.float32),))
    return cases


# -- rendering and diagnosis ---------------------------------------------------------------

def _scale_text(e: int) -> str:
    return f"2**{e} (E8M0 code {e + 127})"


def _block_values(x: torch.Tensor, block: int, index: tuple) -> list[float]:
    return _blocks(x, block)[index].tolist()


def _wrong_rules(x: torch.Tensor, elem_format: str, block: int) -> list[tuple[torch.Tensor, str]]:
    """E8M0 codes that plausible wrong rules give for every block of x, each with its likely cause."""
    emax, top = FORMATS[elem_format][1], FORMATS[elem_format][2]
    amax = _blocks(x, block).double().abs().amax(dim=-1)
    nonzero = amax > 0
    mantissa, exponent = torch.frexp(amax)
    floor_ = exponent.long() - 1
    ceil_ = floor_ + (mantissa != 0.5).long()
    log2_32 = torch.floor(torch.log2(torch.where(nonzero, amax, 1.0).float())).long()

    def spec_like(e: torch.Tensor) -> torch.Tensor:  # zero blocks and the clamp done right
        return torch.where(nonzero, e, -127).clamp(-127, 127)

    def whole(reduce_dims) -> torch.Tensor:
        a = x.double().abs().amax(dim=reduce_dims, keepdim=True) if x.dim() else x.double().abs()
        a = a.expand(x.shape).reshape(*x.shape[:-1], -1, block)[..., 0]
        return torch.where(a > 0, torch.frexp(a)[1].long() - 1 - emax, -127).clamp(-127, 127)

    bias = {8: 7, 15: 15, 2: 1}[emax]
    rules = [
        (torch.where(nonzero, floor_ - emax, -1 - emax),
         "an all-zero block has no log2 (frexp gives exponent 0 there), and the exponent must be "
         "clamped to [-127, 127]: give a zero block -127 (the scale 2**-127, E8M0 code 0), and "
         "clamp the others"),
        (torch.where(nonzero, floor_ - emax, -127),
         "the exponent was not clamped to [-127, 127]: a block this small would need a scale below "
         "E8M0's smallest, 2**-127, and (e + 127) wraps around in uint8"),
        (spec_like(log2_32 - emax),
         "torch.log2 in float32 rounds a value just below a power of two up to the whole number, "
         "so its floor is one too high; read the exponent exactly with torch.frexp "
         "(amax = m * 2**e with 0.5 <= m < 1, so floor(log2(amax)) = e - 1)"),
        ((amax.float() / 2.0**emax).to(torch.float8_e8m0fnu).view(torch.uint8).long() - 127,
         "casting amax / 2**emax to float8_e8m0fnu rounds to the nearest power of two; the spec "
         "takes the floor of log2(amax), which a cast does not do"),
        (spec_like(ceil_ - emax),
         "you rounded log2(amax) up (ceil); the spec takes the floor: floor(log2(amax)) - emax"),
        (spec_like(torch.ceil(torch.log2(torch.where(nonzero, amax, 1.0) / top)).long()),
         "that is the RCEIL rule, 2**ceil(log2(amax / max)), which Transformer Engine and torchao "
         "train with; this exercise follows the OCP spec: floor(log2(amax)) - emax"),
        (spec_like(floor_ - bias), EMAX_TEXT + ", not the exponent bias"),
        (spec_like(floor_ - emax + 1), EMAX_TEXT),
        (spec_like(floor_ - emax - 1), EMAX_TEXT),
        (whole(tuple(range(x.dim()))),
         f"amax was taken over the whole tensor; each block of {block} consecutive values along the "
         "last dimension has its own amax and its own scale"),
        (whole(-1), f"amax was taken over a whole row; take it over each block of {block} values"),
    ]
    return [((e + 127) % 256, cause) for e, cause in rules]


def _scale_cause(cases: list[tuple], got_codes: list[torch.Tensor], first: int, flat_index: int) -> str:
    """The wrong rule that reproduces the learner's codes everywhere (or nearly), if one does."""
    per_case = [_wrong_rules(*case) for case in cases]
    best, best_score = None, 0.0
    for r in range(len(per_case[0])):  # earlier rules win ties: they are the more specific ones
        if int(per_case[first][r][0].reshape(-1)[flat_index]) != int(got_codes[first].reshape(-1)[flat_index]):
            continue
        agree = sum(int((rules[r][0] == got).sum()) for rules, got in zip(per_case, got_codes))
        score = agree / sum(got.numel() for got in got_codes)
        if score >= 0.9 and score > best_score:
            best, best_score = per_case[first][r][1], score
    if best is not None:
        return best
    x, elem_format, block = cases[first]
    emax = FORMATS[elem_format][1]
    return (f"the shared exponent is floor(log2(amax)) - emax (emax = {emax} here), clamped to "
            "[-127, 127], with -127 for an all-zero block")


def _element_cause(scaled: torch.Tensor, expected: torch.Tensor, got: torch.Tensor,
                   elem_format: str, scale: float) -> str:
    top = FORMATS[elem_format][2]
    if not bool(torch.isfinite(got).all()) or float(got.abs().max()) > top:
        return (f"values beyond the format's largest value ({top}) must saturate to +-{top}: clamp "
                "x / 2**e to [-max, max] before rounding (a cast to float8_e5m2 gives inf, and E2M1 "
                "has no value above 6)")
    variants = {"toward zero": torch.trunc, "half away from zero": lambda v: torch.sign(v) * torch.floor(v.abs() + 0.5)}
    if elem_format == "e2m1":
        clipped = scaled.float().clamp(-top, top)
        mag = clipped.abs()
        step = torch.where(mag < 2, 0.5, torch.where(mag < 4, 1.0, 2.0))
        for name, fn in variants.items():
            guess = (fn(clipped / step) * step).float()
            if torch.equal(guess, got) and not torch.equal(guess, expected):
                return (f"you rounded {name}; round to the nearest E2M1 value, and on a tie to the "
                        "one with an even mantissa bit (0.25 -> 0, 0.75 -> 1, 2.5 -> 2, 5 -> 4); "
                        "torch.round rounds half to even")
    if torch.equal(got, scaled.float()):
        return "the elements were not rounded to the element format: round x / 2**e, then return it"
    if torch.equal(got, (expected.double() * scale).float()):
        return ("you returned the dequantized values (elements * scale); return the elements "
                "themselves, x / 2**e rounded, and the scales separately")
    if elem_format != "e2m1" and torch.equal(got, scaled.to(FORMATS[elem_format][0]).float()):
        return "clamp to [-max, max] before the cast, so that values above the max saturate"
    return ("each element is x / 2**e rounded to the nearest value of the element format (ties to "
            "even), saturating at +-max")


def _first_difference(expected: torch.Tensor, got: torch.Tensor) -> int:
    differs = (expected != got) & ~(expected.isnan() & got.isnan())
    return int(differs.reshape(-1).nonzero()[0])


def _learner_scale_exponents(scales, shape: tuple) -> torch.Tensor | None:
    """The learner's scales as integer exponents, or None if they are not E8M0 of the right shape."""
    if not isinstance(scales, torch.Tensor) or scales.dtype != torch.float8_e8m0fnu:
        return None
    if tuple(scales.shape) != shape:
        return None
    codes = scales.view(torch.uint8).long()
    if bool((codes == 255).any()):
        return None
    return codes - 127


def _unpack(case: tuple, out, what: str):
    """The learner's (scales, elements) pair, or a CheckFailed saying what is wrong with its shape."""
    x, elem_format, block = case
    call = f"mx_quantize({render(x)}, {elem_format!r}, block={block})"
    if not out.ok:
        raise out.raised
    result, kept = out.value
    if not kept:
        raise CheckFailed(what, call, show_values=False,
                          cause="x was modified in place; work on new tensors (x / scale, not x /= scale)")
    if type(result) is not tuple or len(result) != 2:
        raise CheckFailed(what, call, "a tuple (scales, elements)", result,
                          cause="return scales and elements as a tuple: return scales, elements")
    scales, elements = result
    scale_shape = (*x.shape[:-1], x.shape[-1] // block)
    if not isinstance(scales, torch.Tensor) or scales.dtype != torch.float8_e8m0fnu:
        dtype = getattr(scales, "dtype", type(scales).__name__)
        raise CheckFailed(what, call, "scales as a torch.float8_e8m0fnu tensor", f"{dtype}",
                          cause="build the E8M0 scales from the biased exponent: "
                                "(e + 127).to(torch.uint8).view(torch.float8_e8m0fnu)")
    if tuple(scales.shape) != scale_shape:
        raise CheckFailed(what, call, f"scales of shape {list(scale_shape)}", list(scales.shape),
                          cause=f"one scale per block of {block} values along the last dimension: "
                                "x.shape[:-1] + (x.shape[-1] // block,)")
    if not isinstance(elements, torch.Tensor) or elements.dtype != torch.float32 \
            or elements.shape != x.shape:
        dtype = getattr(elements, "dtype", type(elements).__name__)
        shape = list(getattr(elements, "shape", []))
        raise CheckFailed(what, call, f"float32 elements of shape {list(x.shape)}",
                          f"{dtype} of shape {shape}",
                          cause="return the element values as float32 with x's shape "
                                "(.float() after an FP8 cast)")
    return scales, elements, call


def _run_mx(learner, cases: list[tuple]) -> list:
    learner.run(PROBES)
    return learner.map("__grader_09_mx", cases)


def check_scales(learner, cases: list[tuple], what: str) -> None:
    got_codes, first = [], None
    for n, (case, out) in enumerate(zip(cases, _run_mx(learner, cases))):
        scales, _, call = _unpack(case, out, what)
        codes = scales.view(torch.uint8).long()
        got_codes.append(codes)
        if first is None and not torch.equal(codes - 127, ref_shared_exponents(*case)):
            first = n
    if first is None:
        return
    x, elem_format, block = cases[first]
    expected = ref_shared_exponents(x, elem_format, block)
    codes = got_codes[first]
    i = _first_difference(expected, codes - 127)
    index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), tuple(expected.shape)))
    values = _block_values(x, block, index)
    code = int(codes.reshape(-1)[i])
    got_text = "NaN (E8M0 code 255)" if code == 255 else _scale_text(code - 127)
    call = f"mx_quantize({render(x)}, {elem_format!r}, block={block})"
    raise CheckFailed(what, f"{call}, block {list(index)} holding {render(values)} "
                            f"(amax {max(abs(v) for v in values)!r})",
                      _scale_text(int(expected.reshape(-1)[i])), got_text,
                      cause=_scale_cause(cases, got_codes, first, i))


def check_elements(learner, cases: list[tuple], what: str) -> None:
    for case, out in zip(cases, _run_mx(learner, cases)):
        scales, elements, call = _unpack(case, out, what)
        x, elem_format, block = case
        shared = _learner_scale_exponents(scales, tuple(scales.shape))
        if shared is None:
            shared = ref_shared_exponents(x, elem_format, block)
        expected = ref_elements(x, elem_format, block, shared)
        if torch.equal(expected, elements):
            continue
        i = _first_difference(expected, elements)
        b = i // block
        index = tuple(int(v) for v in torch.unravel_index(torch.tensor(b), tuple(shared.shape)))
        e = int(shared[index])
        lo, hi = b * block, (b + 1) * block
        flat_x, flat_exp, flat_got = x.reshape(-1), expected.reshape(-1), elements.reshape(-1)
        scaled = (flat_x[lo:hi].double() / 2.0**e).float()
        cause = _element_cause(scaled, flat_exp[lo:hi], flat_got[lo:hi], elem_format, 2.0**e)
        if e != int(ref_shared_exponents(x, elem_format, block)[index]):
            cause += (f". Note: the scale you return for this block, 2**{e}, is not the spec's, and "
                      "your elements may be divided by a different scale than the one you return; "
                      "divide by exactly the (clamped) scale you encode")
        raise CheckFailed(
            what, f"{call}, block {list(index)} with shared exponent {e}: x[{i}] = {float(flat_x[i])!r}, "
                  f"so x / 2**e = {float(scaled[i - lo])!r}",
            float(flat_exp[i]), float(flat_got[i]), cause=cause)


# -- the checks ---------------------------------------------------------------------------------

@exercise(EXERCISE, points=2)
def test_e2m1_rounds_to_the_nearest_table_value_with_ties_to_even(learner, seed):
    """round_to_e2m1 returns the nearest E2M1 value, ties to the even mantissa, for every input."""
    learner.run(PROBES)
    cases = _e2m1_inputs(seed)
    for (x,), out in zip(cases, learner.map("__grader_09_e2m1", cases)):
        if not out.ok:
            raise out.raised
        got, _ = out.value
        expected = ref_round_to_e2m1(x)
        call = f"round_to_e2m1({render(x)})"
        if not isinstance(got, torch.Tensor) or got.dtype != torch.float32 or got.shape != x.shape:
            raise CheckFailed("round_to_e2m1 returns float32 values of x's shape", call, expected, got,
                              cause="return a float32 tensor shaped like x, one E2M1 value per entry")
        if torch.equal(got, expected):
            continue
        i = _first_difference(expected.reshape(-1), got.reshape(-1))
        value = float(x.reshape(-1)[i])
        raise CheckFailed("each value rounds to the nearest of +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}, a tie "
                          "to the even mantissa, beyond 6 to 6",
                          f"{call}, entry {i}: x = {value!r}",
                          float(expected.reshape(-1)[i]), float(got.reshape(-1)[i]),
                          cause=_element_cause(x.reshape(-1), expected.reshape(-1), got.reshape(-1),
                                               "e2m1", 1.0))


@exercise(EXERCISE, points=1)
def test_e2m1_saturates_and_leaves_its_input_alone(learner):
    """round_to_e2m1 saturates at +-6, keeps shapes (empty too) and does not modify x."""
    learner.run(PROBES)
    cases = [(torch.tensor([6.0, 6.5, 7.99, 8.0, 1e6, 3.0e38, -6.1, -3.0e38]),),
             (torch.full((2, 3, 4), -9.0),), (torch.zeros(0),), (torch.zeros(2, 0),)]
    for (x,), out in zip(cases, learner.map("__grader_09_e2m1", cases)):
        if not out.ok:
            raise out.raised
        got, kept = out.value
        call = f"round_to_e2m1({render(x)})"
        expected = ref_round_to_e2m1(x)
        if not kept:
            raise CheckFailed("round_to_e2m1 leaves x unchanged", call, show_values=False,
                              cause="x was modified in place; compute on new tensors (x.abs(), not x.abs_())")
        if not isinstance(got, torch.Tensor) or got.dtype != torch.float32 or got.shape != x.shape:
            raise CheckFailed("round_to_e2m1 returns float32 values of x's shape", call, expected, got,
                              cause="return a float32 tensor shaped like x (empty in, empty out)")
        if not torch.equal(got, expected):
            raise CheckFailed("values beyond +-6 saturate to +-6", call, expected, got,
                              cause="clamp |x| to 6 before rounding: E2M1 has no value above 6, and "
                                    "the spec saturates instead of overflowing")


@exercise(EXERCISE, points=2)
def test_scales_are_e8m0_with_the_spec_floor_rule(learner, seed):
    """Each block's E8M0 scale is 2**(floor(log2(amax)) - emax), clamped to [2**-127, 2**127]."""
    fixed = [(torch.tensor([3.0] + [0.5] * 31), "e4m3", 32),            # 2**(1 - 8)
             (torch.tensor([float32_below(32.0)] + [1.0] * 31), "e4m3", 32),  # just under 2**5
             (torch.tensor([7.5] * 32), "e2m1", 32),                    # 2**(2 - 2) = 1
             (torch.tensor([4.0] + [1.0] * 31), "e4m3", 32),            # a power of two: 2**(2 - 8)
             (torch.cat([torch.zeros(32), torch.full((32,), 1e-42)]), "e5m2", 32),  # zero and tiny blocks
             (torch.tensor([1e38] + [1.0] * 31), "e4m3", 32),
             (torch.cat([torch.full((32,), 1e3), torch.full((32,), 1e-3)]).reshape(1, 64), "e2m1", 32)]
    fixed += [(torch.tensor([float32_below(2.0**k)] * 32), fmt, 32)
              for k, fmt in ((3, "e2m1"), (20, "e4m3"), (-20, "e5m2"), (100, "e2m1"), (-100, "e4m3"))]
    cases = fixed + draw(mx_cases(), n=60, seed=seed, key="09.scales")
    check_scales(learner, cases, "each block's scale is the E8M0 value 2**(floor(log2(amax)) - emax), "
                                 "clamped to [-127, 127]")


@exercise(EXERCISE, points=2)
def test_fp8_elements_are_rounded_and_saturated_like_torch_casts(learner, seed):
    """E4M3 and E5M2 elements equal clamp(x / scale, -max, max) cast to the FP8 dtype."""
    fixed = [(torch.tensor([3.0, -0.3952, 1.0 / 3.0] + [0.5] * 29), "e4m3", 32),
             (torch.tensor([7.5, 7.25, -7.0, 6.9] + [0.1] * 28), "e4m3", 32),   # x / 2**-6 in [448, 480]
             (torch.tensor([1.99, -1.9, 1.76] + [1e-3] * 29), "e5m2", 32),       # above 57344 * 2**-15
             (torch.tensor([1.0] + [2.0**-24] * 31), "e4m3", 32)]                 # deep in the subnormals
    cases = fixed + draw(mx_cases(formats=("e4m3", "e5m2")), n=60, seed=seed, key="09.fp8")
    check_elements(learner, cases, "each FP8 element is x / 2**e rounded to nearest even in the "
                                   "element format, saturating at +-max")


@exercise(EXERCISE, points=1)
def test_fp4_elements_follow_the_e2m1_rounding_after_the_shared_scale(learner, seed):
    """E2M1 elements equal x / scale rounded on the E2M1 table, saturating at +-6."""
    fixed = [(torch.tensor([4.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, -7.9] + [0.0] * 22), "e2m1", 32),
             (torch.tensor([12.0, 13.0, -15.9, 1.0] + [0.2] * 28), "e2m1", 32)]
    cases = fixed + draw(mx_cases(formats=("e2m1",)), n=40, seed=seed, key="09.fp4")
    check_elements(learner, cases, "each E2M1 element is x / 2**e rounded to the nearest E2M1 value, "
                                   "ties to even, saturating at +-6")


@exercise(EXERCISE, points=1)
def test_other_block_sizes_shapes_and_bad_arguments(learner, seed):
    """block sets the block length, leading dimensions are kept, and bad arguments raise ValueError."""
    cases = draw(mx_cases(blocks=(8, 16, 64)), n=24, seed=seed, key="09.blocks")
    check_scales(learner, cases, "with block=k, each run of k values along the last dimension has "
                                 "its own scale")
    check_elements(learner, cases, "with block=k, elements are rounded with their own block's scale")
    bad = [(torch.ones(32), "e3m4", 32), (torch.ones(48), "e4m3", 32), (torch.ones(2, 30), "e2m1", 16)]
    for case, out in zip(bad, _run_mx(learner, bad)):
        x, elem_format, block = case
        if out.ok or out.raised.type_name != "ValueError":
            if out.raised is not None and out.raised.not_implemented:
                raise out.raised
            got = f"{out.raised.type_name} raised" if out.raised else "a result"
            raise CheckFailed("an unknown elem_format, or a last dimension that block does not "
                              "divide, raises ValueError",
                              f"mx_quantize({render(x)}, {elem_format!r}, block={block})",
                              "ValueError raised", got,
                              cause="check the arguments first: raise ValueError for a format other "
                                    "than 'e4m3', 'e5m2', 'e2m1', and when x.shape[-1] % block != 0")
