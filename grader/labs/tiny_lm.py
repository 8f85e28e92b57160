"""Lesson 08's model, corpus and training loop: a byte-level transformer language model.

The corpus is the Python standard library's own source, read from this
interpreter's installation, so every machine has it offline. The files are a
fixed list that every Python 3.10+ ships; their bytes still change between
Python versions, so nothing a lesson prints may depend on them beyond what is
fixed here (the corpus length, the vocabulary of 256 byte values).

On a CPU, the FP16 and BF16 recipes run their matmuls through
`dispatch_modes.emulate_matmuls`, because PyTorch's low-precision CPU matmuls
are slow on many processors (FP16 on most, BF16 on those without BF16
instructions).

Public: it ships to learners and imports nothing private.
"""

from __future__ import annotations

import math
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grader.labs.dispatch_modes import emulate_matmuls

# Pure-Python modules present, under these names, in every CPython 3.10 to 3.14.
CORPUS_FILES = ("abc", "bisect", "calendar", "colorsys", "contextlib", "copy", "dataclasses",
                "difflib", "enum", "fnmatch", "fractions", "functools", "graphlib", "heapq",
                "keyword", "operator", "queue", "random", "shlex", "statistics", "string",
                "textwrap", "types")
CORPUS_BYTES = 2**18  # 256 KiB: the same length on every Python, whatever the files hold
FP16_MIN_SUBNORMAL_LOG2 = -24  # 2**-24, FP16's smallest positive value


def build_corpus(n_bytes: int = CORPUS_BYTES) -> torch.Tensor:
    """The first `n_bytes` of the CORPUS_FILES sources, joined by newlines, as int64 byte values."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for name in CORPUS_FILES:
        path = stdlib / f"{name}.py"
        if not path.is_file():
            continue
        parts.append(path.read_bytes() + b"\n")
        total += len(parts[-1])
        if total >= n_bytes:
            break
    if total < n_bytes:
        raise RuntimeError(
            f"Found only {total} bytes of standard-library source under {stdlib} (need {n_bytes}). "
            "This Python installation seems to lack its .py files; install the full Python "
            "(not a 'minimal' or .pyc-only build) or pass a smaller n_bytes.")
    data = bytearray(b"".join(parts)[:n_bytes])
    return torch.frombuffer(data, dtype=torch.uint8).long()


def get_batch(corpus: torch.Tensor, batch_size: int, context: int, generator: torch.Generator):
    """`batch_size` random windows: inputs x and next-byte targets y, both (batch, context)."""
    starts = torch.randint(0, len(corpus) - context - 1, (batch_size,), generator=generator)
    x = torch.stack([corpus[s:s + context] for s in starts.tolist()])
    y = torch.stack([corpus[s + 1:s + context + 1] for s in starts.tolist()])
    return x, y


# -- the model -------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    vocab_size: int = 256  # bytes
    context: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention, written out so its numerics are visible.

    `scores_in_fp32` computes q @ k^T in an FP32 region; `prescale_queries`
    multiplies q by 1/sqrt(d_head) before the product instead of after it.
    Both are fixes for logits that overflow FP16 (section 3 of the lesson).
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.register_buffer("causal", torch.ones(cfg.context, cfg.context, dtype=torch.bool).tril(),
                             persistent=False)
        self.scores_in_fp32 = False
        self.prescale_queries = False

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Attention logits q k^T / sqrt(d_head), in the precision the flags ask for."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        if self.scores_in_fp32:
            with torch.autocast(q.device.type, enabled=False):
                return (q.float() @ k.float().transpose(-2, -1)) * scale
        if self.prescale_queries:
            return (q * scale) @ k.transpose(-2, -1)
        return (q @ k.transpose(-2, -1)) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        scores = self.scores(q, k).masked_fill(~self.causal[:t, :t], float("-inf"))
        attention = scores.softmax(dim=-1)
        y = attention.to(v.dtype) @ v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(),
                                 nn.Linear(cfg.d_ff, cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A GPT-style byte-level language model; `model(x, y)` returns the mean cross-entropy."""

    def __init__(self, cfg: Config = Config()):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.Sequential(*(Block(cfg) for _ in range(cfg.n_layers)))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        for module in self.modules():  # GPT-2's initialisation: the first loss is close to ln(256)
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        logits = self.head(self.ln_f(self.blocks(self.tok(idx) + self.pos(positions))))
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_model(seed: int = 0, cfg: Config = Config()) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(cfg)


# -- attention logits, for section 3 ---------------------------------------------------------

def raw_attention_logits(model: TinyLM, block: int, batch: tuple) -> torch.Tensor:
    """q @ k^T of one block on `batch`, before the 1/sqrt(d_head) scale, masked entries set to 0."""
    captured = []
    attn = model.blocks[block].attn
    handle = attn.qkv.register_forward_hook(lambda module, inputs, out: captured.append(out))
    try:
        with torch.no_grad():
            model(*batch)
    finally:
        handle.remove()
    qkv = captured[0].float()
    b, t, three_d = qkv.shape
    q, k, _ = qkv.view(b, t, 3, attn.n_heads, three_d // (3 * attn.n_heads)).permute(2, 0, 3, 1, 4)
    return (q @ k.transpose(-2, -1)).masked_fill(~attn.causal[:t, :t], 0.0)


def grow_attention_logits(model: TinyLM, block: int, batch: tuple, target: float) -> float:
    """Scale one block's query and key projections so its largest |q . k| on `batch` is `target`.

    Both projections get the same factor c, so the logits grow by c**2. This
    imitates, by hand, the attention-logit growth long training runs show.
    Returns c.
    """
    d = model.cfg.d_model
    c = math.sqrt(target / float(raw_attention_logits(model, block, batch).abs().max()))
    qkv = model.blocks[block].attn.qkv
    with torch.no_grad():
        qkv.weight[:2 * d] *= c  # rows 0..d-1 make q, rows d..2d-1 make k
        qkv.bias[:2 * d] *= c
    return c


# -- training -------------------------------------------------------------------------------

RECIPES = {  # name: (autocast dtype or None, use a GradScaler)
    "FP32": (None, False),
    "FP16 + GradScaler": (torch.float16, True),
    "BF16": (torch.bfloat16, False),
}


@dataclass
class History:
    """What a training run records, step by step."""

    recipe: str
    losses: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)  # the scale each step used (1.0 without one)
    skipped: list[bool] = field(default_factory=list)
    hist_steps: list[int] = field(default_factory=list)
    grad_hists: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> log2_histogram rows
    model: nn.Module | None = None  # the trained model


HIST_EDGES = np.arange(-48, 1)  # log2|g| bin edges: 2**-48 ... 2**0, one bin per binade


def log2_histogram(grad: torch.Tensor) -> np.ndarray:
    """How many nonzero entries of `grad` fall in each binade of HIST_EDGES (clipped at both ends)."""
    magnitude = grad.detach().float().abs().flatten()
    logs = torch.log2(magnitude[magnitude > 0]).numpy()
    return np.histogram(np.clip(logs, HIST_EDGES[0], HIST_EDGES[-1] - 0.5), bins=HIST_EDGES)[0]


def train(recipe: str, corpus: torch.Tensor, steps: int = 120, seed: int = 0, lr: float = 2e-3,
          batch_size: int = 8, growth_interval: int = 20, hist_every: int = 4,
          clip_norm: float = 1.0, device: str = "cpu", emulate: bool = True) -> History:
    """Train a fresh TinyLM with one of RECIPES; the same seed gives the same data and init.

    On a CPU, the FP16 and BF16 recipes emulate their matmuls (see
    dispatch_modes.emulate_matmuls); pass emulate=False to run PyTorch's own
    CPU kernels instead.
    """
    dtype, scaled = RECIPES[recipe]
    model = make_model(seed).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device, growth_interval=growth_interval, enabled=scaled)
    generator = torch.Generator().manual_seed(seed + 1)
    weights = {n: p for n, p in model.named_parameters() if p.dim() == 2}
    history = History(recipe)
    emulate = emulate and device == "cpu"
    for step in range(1, steps + 1):
        x, y = (t.to(device) for t in get_batch(corpus, batch_size, model.cfg.context, generator))
        optimizer.zero_grad(set_to_none=True)
        with emulate_matmuls(dtype, enabled=emulate):
            with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = model(x, y)
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # true gradients from here on (a no-op without a scaler)
        if step % hist_every == 0:
            history.hist_steps.append(step)
            for name, p in weights.items():
                history.grad_hists.setdefault(name, []).append(log2_histogram(p.grad))
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        history.losses.append(loss.item())
        history.scales.append(scale)
        history.skipped.append(scaler.get_scale() < scale)
    history.model = model
    return history


def anomaly_cost(model: nn.Module, batch: tuple, repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` milliseconds of one forward and backward pass: (plain, with anomaly mode)."""
    best = {False: math.inf, True: math.inf}
    for _ in range(repeats):
        for anomaly in (False, True):  # interleaved, so both see the same machine load
            start = time.perf_counter()
            with torch.autograd.set_detect_anomaly(anomaly):
                model(*batch).backward()
            best[anomaly] = min(best[anomaly], 1e3 * (time.perf_counter() - start))
            model.zero_grad(set_to_none=True)
    return best[False], best[True]
