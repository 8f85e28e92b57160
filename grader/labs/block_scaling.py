"""Lesson 09 (FP8 and 4-bit for real): the scaling helpers its demonstrations run.

Current scaling at any granularity with FP32 scales (one scale per tensor, per
row, or per tile such as DeepSeek-V3's 1x128 activation tiles and 128x128
weight blocks), NVFP4's two-level scales, real scaled matmuls through
`torch.nn.functional.scaled_mm`, error measures, and tensors with the outliers
that make granularity matter.

Two things are deliberately missing: the microscaling (MX) rule with its E8M0
scales, and rounding to FP4 E2M1. They are the lesson's exercise, so the
demonstrations pass the learner's own functions in wherever they are needed
(`round_elements`, `round_e2m1`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["FP8_MAX", "E2M1_MAX", "llm_like_activations", "gaussian_weights", "cast_rounder",
           "quantize_tiles", "dequantize_tiles", "fake_quantize", "nvfp4_quantize",
           "nvfp4_dequantize", "relative_error", "row_relative_errors", "fp8_scaled_mm",
           "block_scaled_mm_on_cpu"]

FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
E2M1_MAX = 6.0
Rounder = Callable[[torch.Tensor], torch.Tensor]


# -- tensors with realistic outliers -----------------------------------------------------

def llm_like_activations(tokens: int = 256, channels: int = 512, outlier_channels: int = 4,
                         outlier_gain: float = 60.0, token_spread: float = 1.0,
                         seed: int = 0) -> torch.Tensor:
    """Activations shaped like a transformer layer's input, as float32 (tokens, channels).

    Two kinds of outliers, both reported for large language models: a few
    channels are `outlier_gain` times larger in every token (Dettmers et al.,
    LLM.int8(), 2022), and token magnitudes spread log-normally (std
    `token_spread` in natural log units), so some tokens are far smaller than
    others.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=g)
    x = x * torch.exp(token_spread * torch.randn(tokens, 1, generator=g))
    hot = torch.randperm(channels, generator=g)[:outlier_channels]
    x[:, hot] *= outlier_gain
    return x


def gaussian_weights(out_features: int, in_features: int, std: float = 0.02, outlier_rows: int = 2,
                     outlier_gain: float = 8.0, seed: int = 1) -> torch.Tensor:
    """A float32 weight matrix: Gaussian with a few output rows `outlier_gain` times larger."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * std
    rows = torch.randperm(out_features, generator=g)[:outlier_rows]
    w[rows] *= outlier_gain
    return w


# -- current scaling per tile -------------------------------------------------------------

def cast_rounder(dtype: torch.dtype) -> Rounder:
    """Round float32 values to an FP8 dtype's grid (RNE), saturating at its max, as float32."""
    fp8_max = FP8_MAX[dtype]
    return lambda v: v.clamp(-fp8_max, fp8_max).to(dtype).float()


def _tile_shape(x: torch.Tensor, tile: tuple[int, int] | None) -> tuple[int, int]:
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}")
    rows, cols = x.shape
    r, c = (rows, cols) if tile is None else tile
    if rows % r or cols % c:
        raise ValueError(f"tile {r}x{c} does not divide a {rows}x{cols} tensor")
    return r, c


def _tiled(x: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """(rows, cols) viewed as (rows/r, r, cols/c, c)."""
    return x.reshape(x.shape[0] // r, r, x.shape[1] // c, c)


def quantize_tiles(x: torch.Tensor, tile: tuple[int, int] | None, round_elements: Rounder,
                   elem_max: float, power_of_two: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Current scaling with one FP32 scale per tile: returns (elements, scale_inv).

    `tile=None` is one scale for the whole tensor, `(1, cols)` one per row,
    `(1, 128)` and `(128, 128)` DeepSeek-V3's tiles. Each tile's scale maps its
    amax onto `elem_max` (1.0 for an all-zero tile); `power_of_two=True` rounds
    the scale down to a power of two, as Transformer Engine's block recipe
    and torchao's rowwise recipe do. `elements` are float32 values on the
    element format's grid; `scale_inv` (one per tile) multiplies them back.
    """
    r, c = _tile_shape(x, tile)
    tiles = _tiled(x.float(), r, c)
    amax = tiles.abs().amax(dim=(1, 3), keepdim=True)
    scale = torch.where(amax > 0, elem_max / amax, torch.ones_like(amax))
    if power_of_two:  # keep the exponent, drop the mantissa: exact, unlike floor(log2(scale))
        _, exponent = torch.frexp(scale)
        scale = torch.ldexp(torch.ones_like(scale), exponent - 1)
    elements = round_elements(tiles * scale).reshape(x.shape)
    return elements, (1.0 / scale).reshape(amax.shape[0], amax.shape[2])


def dequantize_tiles(elements: torch.Tensor, scale_inv: torch.Tensor) -> torch.Tensor:
    """Multiply each tile of `elements` by its entry of `scale_inv` (tile size from the shapes)."""
    r, c = elements.shape[0] // scale_inv.shape[0], elements.shape[1] // scale_inv.shape[1]
    tiles = _tiled(elements.float(), r, c) * scale_inv[:, None, :, None]
    return tiles.reshape(elements.shape)


def fake_quantize(x: torch.Tensor, tile: tuple[int, int] | None, round_elements: Rounder,
                  elem_max: float, power_of_two: bool = False) -> torch.Tensor:
    """Quantize with `quantize_tiles` and multiply back: what the low-precision tensor holds."""
    return dequantize_tiles(*quantize_tiles(x, tile, round_elements, elem_max, power_of_two))


# -- NVFP4: E4M3 scales per 16 values, and one FP32 scale per tensor -----------------------

def nvfp4_quantize(x: torch.Tensor, round_e2m1: Rounder, block: int = 16):
    """NVFP4 with 1-D blocks, in the order of Transformer Engine's reference quantizer.

    Returns (tensor_scale_inv, block_scales, elements): a float, a float8_e4m3fn
    tensor with one scale per `block` values of each row, and float32 E2M1
    values. The FP32 tensor scale maps the tensor's amax onto 448 * 6, so the
    largest block scale lands near E4M3's maximum; each block's E4M3 scale then
    maps its own amax onto about 6. Dequantize with
    elements * block_scale * tensor_scale_inv. (Source: NVIDIA/TransformerEngine,
    transformer_engine/pytorch/custom_recipes/reference_nvfp4.py, without its
    random Hadamard transform, stochastic rounding and 16x16 weight blocks.)
    """
    rows, cols = x.shape
    blocks = x.float().reshape(rows, cols // block, block)
    amax = float(x.abs().max())
    tensor_scale = torch.tensor(448.0 * E2M1_MAX / amax if amax > 0 else 1.0, dtype=torch.float32)
    block_amax = torch.amax(blocks.abs(), dim=-1, keepdim=True)
    decode = (block_amax * (tensor_scale / E2M1_MAX)).clamp(max=448.0).to(torch.float8_e4m3fn)
    encode = 1.0 / (decode.float() * (1.0 / tensor_scale))
    encode = torch.where(torch.isfinite(encode), encode, torch.zeros_like(encode))  # empty blocks
    elements = round_e2m1((blocks * encode).clamp(-E2M1_MAX, E2M1_MAX))
    return float(1.0 / tensor_scale), decode.squeeze(-1), elements.reshape(rows, cols)


def nvfp4_dequantize(tensor_scale_inv: float, block_scales: torch.Tensor,
                     elements: torch.Tensor) -> torch.Tensor:
    rows, cols = elements.shape
    blocks = elements.reshape(rows, block_scales.shape[1], -1)
    return (blocks * block_scales.float()[..., None] * tensor_scale_inv).reshape(rows, cols)


# -- error measures -------------------------------------------------------------------------

def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact|| / ||exact|| in float64, so the printed digits do not depend on the CPU."""
    exact = exact.double()
    return float((approx.double() - exact).norm() / exact.norm())


def row_relative_errors(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """The relative error of each row on its own (a token's error, however small the token)."""
    exact = exact.double()
    return (approx.double() - exact).norm(dim=1) / exact.norm(dim=1)


# -- real scaled matmuls --------------------------------------------------------------------

def fp8_scaled_mm(a_fp8: torch.Tensor, scale_a: torch.Tensor, b_fp8: torch.Tensor,
                  scale_b: torch.Tensor) -> torch.Tensor:
    """(a_fp8 * scale_a) @ (b_fp8 * scale_b) by `torch.nn.functional.scaled_mm`, in float32.

    The scales are *decoding* factors (what lesson 06 called scale_inv): one
    scalar each for tensorwise scaling, or shapes (M, 1) and (1, N) for rowwise
    scaling, the two recipes PyTorch 2.13 runs on a CPU.
    """
    tensorwise = scale_a.numel() == 1 and scale_b.numel() == 1
    recipe = F.ScalingType.TensorWise if tensorwise else F.ScalingType.RowWise
    return F.scaled_mm(a_fp8, b_fp8, scale_a.float().contiguous(), recipe,
                       scale_b.float().contiguous(), recipe, output_dtype=torch.float32)


def block_scaled_mm_on_cpu() -> str:
    """Try an MXFP8 (1x32 blocks, E8M0 scales) scaled_mm on the CPU; say what PyTorch answers."""
    a = torch.ones(32, 64).to(torch.float8_e4m3fn)
    b = torch.ones(32, 64).to(torch.float8_e4m3fn).t()
    scales = torch.ones(32, 2).to(torch.float8_e8m0fnu)
    recipe = F.ScalingType.BlockWise1x32
    try:
        F.scaled_mm(a, b, scales, recipe, scales, recipe, output_dtype=torch.float32)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0]
        return f"{type(exc).__name__}: {first}"
    return "ran"

