"""Lesson 09 (FP8 and 4-bit for real): FP8 training recipes, emulated on a CPU, and the GPU path.

`CurrentScaling` and `DelayedScaling` choose the per-tensor scale the way
Transformer Engine's `Float8CurrentScaling` and `DelayedScaling` recipes do
(HYBRID format: E4M3 for inputs and weights, E5M2 for gradients).
`FakeFp8Linear` applies a recipe to a linear layer by fake quantization: the
forward pass sees the FP8 values of the input and the weight, and the
gradient arriving at the layer's output is rounded to E5M2 before autograd
uses it. The matmuls themselves stay in FP32, so this measures what FP8's
rounding and clipping do to training, not its speed.

`float8_training_status` and `time_float8_training` are the GPU path: they use
torchao's `convert_to_float8_training` when a CUDA device and torchao are both
present, and otherwise say why not, without importing torchao.
"""

from __future__ import annotations

import importlib.util
import time

import torch
import torch.nn.functional as F

__all__ = ["E4M3", "E5M2", "CurrentScaling", "DelayedScaling", "FakeFp8Linear", "make_mlp",
           "spiky_regression", "train", "float8_training_status", "time_float8_training"]

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
FP8_MAX = {E4M3: 448.0, E5M2: 57344.0}
# A scaled value at or past these rounds beyond the format's max: the cast clips it.
CLIP_FROM = {E4M3: 464.0, E5M2: 61440.0}


class CurrentScaling:
    """Just-in-time scaling: each tensor's scale comes from its own amax, computed before the cast."""

    name = "current scaling"

    def __init__(self):
        self.clipped: dict[str, int] = {}

    def scale(self, key: str, x: torch.Tensor, dtype: torch.dtype) -> float:
        amax = float(x.detach().abs().max())
        return FP8_MAX[dtype] / amax if 0 < amax < float("inf") else 1.0


class DelayedScaling:
    """Transformer Engine's delayed scaling: the scale comes from the amaxes of earlier steps.

    scale = (fp8_max / max(history)) / 2**margin, then this step's amax joins the
    history and the oldest entry leaves it. An empty history gives 1.0, as TE's
    initial scale does.
    """

    def __init__(self, amax_history_len: int = 16, margin: int = 0):
        self.amax_history_len = amax_history_len
        self.margin = margin
        self.history: dict[str, list[float]] = {}
        self.clipped: dict[str, int] = {}
        self.name = f"delayed scaling (history {amax_history_len})"

    def scale(self, key: str, x: torch.Tensor, dtype: torch.dtype) -> float:
        history = self.history.setdefault(key, [])
        amax = max(history, default=0.0)
        history.append(float(x.detach().abs().max()))
        del history[:-self.amax_history_len]
        return (FP8_MAX[dtype] / amax) / 2**self.margin if 0 < amax < float("inf") else 1.0


def _fake_quant(x: torch.Tensor, recipe, key: str, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to FP8 with the recipe's scale and multiplied back; counts the values clipped."""
    scale = recipe.scale(key, x, dtype)
    scaled = x.detach() * scale
    recipe.clipped[key] = recipe.clipped.get(key, 0) + int((scaled.abs() >= CLIP_FROM[dtype]).sum())
    fp8_max = FP8_MAX[dtype]
    return scaled.clamp(-fp8_max, fp8_max).to(dtype).float() / scale


class FakeFp8Linear(torch.nn.Linear):
    """A Linear whose input and weight are E4M3 and whose output gradient is E5M2, per `recipe`."""

    def __init__(self, in_features: int, out_features: int, recipe, name: str):
        super().__init__(in_features, out_features)
        self.recipe, self.name = recipe, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.recipe
        # Straight-through: the forward value is the FP8 one, the gradient passes unchanged.
        xq = x + (_fake_quant(x, r, f"{self.name}.input", E4M3) - x).detach()
        w = self.weight
        wq = w + (_fake_quant(w, r, f"{self.name}.weight", E4M3) - w).detach()
        y = F.linear(xq, wq, self.bias)
        if y.requires_grad:
            y.register_hook(lambda g: _fake_quant(g, r, f"{self.name}.grad_output", E5M2))
        return y


def make_mlp(recipe=None, sizes=(16, 64, 64, 1), seed: int = 0) -> torch.nn.Sequential:
    """An MLP with GELUs; its Linears are FakeFp8Linear when a recipe is given."""
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(FakeFp8Linear(n_in, n_out, recipe, f"fc{i}") if recipe else
                      torch.nn.Linear(n_in, n_out))
        layers.append(torch.nn.GELU())
    return torch.nn.Sequential(*layers[:-1])


def spiky_regression(steps: int, batch: int = 64, features: int = 16, spike_every: int = 25,
                     spike_gain: float = 16.0, seed: int = 0):
    """A regression whose every `spike_every`-th batch is `spike_gain` times larger.

    Returns (batches, eval_x, eval_y). The eval set mixes in large inputs at
    the same rate, so a model must learn from the outlier batches too. Such
    batches are what a recipe that predicts this step's amax from earlier
    steps cannot foresee.
    """
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(features, 1, generator=g) / features**0.5

    def target(x):
        return x @ teacher + 0.3 * torch.tanh(x[:, :1])

    batches = []
    for step in range(steps):
        x = torch.randn(batch, features, generator=g)
        if step % spike_every == spike_every - 1:
            x = x * spike_gain
        batches.append((x, target(x)))
    eval_x = torch.randn(1024, features, generator=g)
    eval_x[::spike_every] *= spike_gain
    return batches, eval_x, target(eval_x)


def train(recipe, batches, eval_x, eval_y, lr: float = 1e-3, eval_every: int = 10) -> dict:
    """Adam on the batches, FP32 when recipe is None.

    Returns the training losses, the FP32 eval loss every `eval_every` steps,
    and per step the number of values the casts clipped: `clipped` (all
    tensors) and `input_clipped` (the first layer's input, which is the data
    itself, so it does not depend on how the CPU rounds the matmuls).
    """
    model = make_mlp(recipe)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    out = {"losses": [], "eval": [], "clipped": [], "input_clipped": []}
    for step, (x, y) in enumerate(batches):
        before = dict(recipe.clipped) if recipe else {}
        loss = F.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out["losses"].append(loss.item())
        after = recipe.clipped if recipe else {}
        out["clipped"].append(sum(after.values()) - sum(before.values()))
        out["input_clipped"].append(after.get("fc0.input", 0) - before.get("fc0.input", 0))
        if step % eval_every == eval_every - 1:
            out["eval"].append(_fp32_eval(model, eval_x, eval_y))
    return out


def _fp32_eval(model, x, y) -> float:
    """The model's loss with its FP32 weights, no quantization: what it has learned."""
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                x = F.linear(x, layer.weight, layer.bias)
            else:
                x = layer(x)
        return F.mse_loss(x, y).item()


# -- the GPU path -----------------------------------------------------------------------------

def float8_training_status() -> tuple[bool, str]:
    """(ready, reason): can torchao's float8 training run here? torchao is not imported."""
    if not torch.cuda.is_available():
        return False, ("no CUDA device: torchao's float8 training runs FP8 GEMMs on NVIDIA GPUs "
                       "with compute capability 8.9 or newer (Ada, Hopper, Blackwell)")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return False, f"this GPU has compute capability {major}.{minor}; FP8 GEMMs need 8.9 or newer"
    if importlib.util.find_spec("torchao") is None:
        return False, "torchao is not installed (pip install torchao, matching your torch)"
    return True, f"CUDA device with compute capability {major}.{minor} and torchao"


def time_float8_training(dim: int = 4096, layers: int = 4, batch: int = 8192, steps: int = 20,
                         recipe_name: str = "tensorwise") -> dict:
    """Step time of an MLP in BF16 and with torchao float8 training (GPU only; compiled).

    Call only when float8_training_status() says ready.
    """
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    def build():
        torch.manual_seed(0)
        blocks = [torch.nn.Linear(dim, dim, bias=False) for _ in range(layers)]
        return torch.nn.Sequential(*blocks).to("cuda", torch.bfloat16)

    x = torch.randn(batch, dim, device="cuda", dtype=torch.bfloat16)
    results = {}
    for label in ("bf16", f"float8 {recipe_name}"):
        model = build()
        if label != "bf16":
            convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name(recipe_name))
        model = torch.compile(model)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        def step():
            opt.zero_grad(set_to_none=True)
            model(x).float().pow(2).mean().backward()
            opt.step()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        results[label] = (time.perf_counter() - start) / steps * 1e3
    return results
