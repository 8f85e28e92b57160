"""Bounded, readable renderings of values for tables and learner messages.

Everything a report shows of a learner's value goes through `render`, so a
huge list or a long string (say, the text of a file the learner read) can never
flood a report: lists are cut to a few items and strings to a few dozen
characters.
"""

from __future__ import annotations

import math

MAX_ITEMS = 6
MAX_CHARS = 60


def render(value, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS) -> str:
    text = _render(value, max_items, max_chars, depth=0)
    return text if len(text) <= 4 * max_chars else text[: 4 * max_chars - 1] + "…"


def _render(value, max_items: int, max_chars: int, depth: int) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, int):
        text = repr(value)
        return text if len(text) <= 24 else f"<int with {len(text)} digits>"
    if isinstance(value, str):
        if len(value) > max_chars:
            return repr(value[:max_chars]) + f"… ({len(value)} chars)"
        return repr(value)
    if isinstance(value, (list, tuple)):
        if depth >= 2:
            return f"<{type(value).__name__} of {len(value)}>"
        items = [_render(v, max_items, max_chars, depth + 1) for v in value[:max_items]]
        if len(value) > max_items:
            items.append(f"… ({len(value)} items)")
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if isinstance(value, tuple) and len(value) == 1:
            close = ",)"
        return open_ + ", ".join(items) + close
    if isinstance(value, dict):
        if depth >= 2:
            return f"<dict of {len(value)}>"
        keys = list(value)[:max_items]
        items = [f"{_render(k, max_items, max_chars, depth + 1)}: "
                 f"{_render(value[k], max_items, max_chars, depth + 1)}" for k in keys]
        if len(value) > max_items:
            items.append(f"… ({len(value)} keys)")
        return "{" + ", ".join(items) + "}"
    if hasattr(value, "dtype") and hasattr(value, "shape") and hasattr(value, "tolist"):
        return _array(value, max_items, max_chars)
    described = getattr(value, "describe", None)
    if callable(described):
        return described()
    return f"<{type(value).__name__}>"


def _array(value, max_items: int, max_chars: int) -> str:
    """Tensors and arrays: dtype, shape and the first few values."""
    dtype = str(value.dtype).replace("torch.", "")
    shape = "x".join(str(n) for n in value.shape) or "scalar"
    try:
        flat = value.reshape(-1)[:max_items].tolist()
    except Exception:  # noqa: BLE001 - an exotic array still gets a label
        flat = []
    items = ", ".join(_render(v, max_items, max_chars, depth=2) for v in flat)
    return f"<{type(value).__name__} {dtype} [{shape}]: {items}{', …' if _numel(value) > max_items else ''}>"


def _numel(value) -> int:
    n = 1
    for d in value.shape:
        n *= d
    return n


def _float(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)
