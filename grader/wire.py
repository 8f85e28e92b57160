"""The plain-data codec for everything that crosses the trust boundary.

Values travel as JSON. JSON has no inf or NaN and no tuples, and a list of a
million floats is slow as text, so a few tagged objects extend it:

    {"$float": "inf" | "-inf" | "nan"}            a non-finite float
    {"$tuple": [...]}                              a tuple
    {"$dict": [[key, value], ...]}                 a dict whose keys are not plain strings
    {"$floats": {"at": i}}                         a long list whose items are all exactly float
    {"$array": {"kind", "dtype", "shape", "at"}}   a numpy array or torch tensor
    {"$scalar": {"dtype", "value"}}                a numpy scalar such as float32
    {"$opaque": {"type", "base"}}                  anything else: only its type's name crosses
    {"$ref": "name"}                               (requests only) an object kept in the worker

Bulk data (`at`) travels as raw bytes after the JSON, not as text: a message is
an 8-byte JSON length, the JSON, then each attachment as an 8-byte length and
its bytes (float64 in native order: both ends run on one machine).

Only exact builtin types are encoded as themselves. A subclass of float or list,
whose `__eq__` or `__iter__` the learner may have rewritten, crosses as opaque,
so it can never compare equal to anything on the trusted side.

Nothing here unpickles, and the decoder refuses any tag or dtype it does not know.
Decoding is bounded in time and memory whatever the sender wrote: the JSON part
and its number of objects and arrays are capped before it is parsed, and each
attachment is decoded at most once, so no message costs more than about a
second or a few times its own size.
"""

from __future__ import annotations

import json
import math
import re
# Bound at import. The worker imports this module before any learner code runs,
# so a learner who patches builtins or math cannot change how values cross.
from builtins import all, bool, dict, float, int, isinstance, issubclass, len, list, str, tuple, type
from math import isfinite, isnan
from array import array

MAX_DEPTH = 32
# Measured on the course's solutions and grading fixtures: the largest JSON part
# is 0.4 MB (a request) and 2 MB (10^6 ints returned where floats belong), the
# most objects, arrays and object members in one message about 6 000. Bulk data
# travels as attachments, which these bounds do not count.
MAX_JSON = 4 * 2**20
MAX_STRUCTURE = 200_000
LONG_LIST = 64  # float lists at least this long travel packed
ARRAY_DTYPES = frozenset({
    "bool", "int8", "int16", "int32", "int64", "uint8",
    "float16", "float32", "float64", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu",
})
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class WireError(ValueError):
    """A message that is not valid plain data in this codec."""


class Ref:
    """A name in the worker's namespace, passed as an argument in a request."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Ref({self.name!r})"


class Frozen:
    """A long constant list of floats, packed once and sent as often as needed."""

    __slots__ = ("value", "raw")

    def __init__(self, value: list):
        if not (type(value) is list and set(map(type, value)) <= {float}):
            raise TypeError("Frozen holds a list of floats")
        self.value = value
        self.raw = array("d", value).tobytes()


class Opaque:
    """Stands in for a value that could not cross as plain data.

    It equals nothing, itself included, so a check can never be fooled by it.
    """

    __slots__ = ("type_name", "base")

    def __init__(self, type_name: str, base: str | None):
        self.type_name = type_name
        self.base = base

    def __eq__(self, other) -> bool:
        return False

    __hash__ = None

    def describe(self) -> str:
        if self.base:
            return f"<a {self.type_name} object (a subclass of {self.base})>"
        return f"<a {self.type_name} object>"

    __repr__ = describe


# -- encoding --------------------------------------------------------------

def encode(value, attachments: list | None = None) -> object:
    """Turn a value into JSON-ready plain data, by exact type; bulk bytes go to `attachments`."""
    return _encode(value, 0, [] if attachments is None else attachments)


def _attach(attachments: list, raw: bytes) -> int:
    attachments.append(raw)
    return len(attachments) - 1


def _encode(value, depth: int, att: list):
    if depth > MAX_DEPTH:
        raise WireError("value is nested too deeply")
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        if isfinite(value):
            return value
        return {"$float": "nan" if isnan(value) else ("inf" if value > 0 else "-inf")}
    if t is list:
        if len(value) >= LONG_LIST and set(map(type, value)) == {float}:
            return {"$floats": {"at": _attach(att, array("d", value).tobytes())}}
        return [_encode(v, depth + 1, att) for v in value]
    if t is tuple:
        return {"$tuple": [_encode(v, depth + 1, att) for v in value]}
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: _encode(v, depth + 1, att) for k, v in value.items()}
        return {"$dict": [[_encode(k, depth + 1, att), _encode(v, depth + 1, att)]
                          for k, v in value.items()]}
    if t is Ref:
        return {"$ref": value.name}
    if t is Frozen:
        return {"$floats": {"at": _attach(att, value.raw)}}
    encoded = _encode_array(value, att)
    if encoded is not None:
        return encoded
    return {"$opaque": {"type": t.__name__[:80], "base": _builtin_base(t)}}


def _builtin_base(t: type) -> str | None:
    for base in (bool, int, float, str, list, tuple, dict):
        if issubclass(t, base):
            return base.__name__
    return None


def _encode_array(value, att: list):
    module = type(value).__module__
    if module == "torch" and type(value).__name__ in ("Tensor", "Parameter"):
        tensor = value.detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in ARRAY_DTYPES:
            return None
        raw = tensor.reshape(-1).view(_same_width_int(dtype)).numpy().tobytes() if tensor.numel() else b""
        return _array("tensor", dtype, list(tensor.shape), _attach(att, raw))
    if module == "numpy" and type(value).__name__ == "ndarray":
        dtype = str(value.dtype)
        if dtype not in ARRAY_DTYPES:
            return None
        import numpy as np
        return _array("ndarray", dtype, list(value.shape), _attach(att, np.ascontiguousarray(value).tobytes()))
    if module == "numpy" and hasattr(value, "dtype") and getattr(value, "shape", None) == ():
        dtype = str(value.dtype)
        if dtype in ARRAY_DTYPES:
            return {"$scalar": {"dtype": dtype, "value": _encode(value.item(), 1, att)}}
    return None


def _same_width_int(dtype: str):
    import torch
    width = {"bool": 1, "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e8m0fnu": 1,
             "int16": 2, "float16": 2, "bfloat16": 2,
             "int32": 4, "float32": 4, "int64": 8, "float64": 8}[dtype]
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[width]


def _array(kind: str, dtype: str, shape: list, at: int) -> dict:
    return {"$array": {"kind": kind, "dtype": dtype, "shape": shape, "at": at}}


def dumps(value) -> bytes:
    attachments: list = []
    return frame(encode(value, attachments), attachments)


def frame(encoded, attachments: list) -> bytes:
    """Serialize already-encoded data and its attachments into one message."""
    text = json.dumps(encoded, allow_nan=False, separators=(",", ":")).encode()
    parts = [len(text).to_bytes(8, "big"), text]
    for raw in attachments:
        parts += [len(raw).to_bytes(8, "big"), raw]
    return b"".join(parts)


# -- decoding --------------------------------------------------------------

def loads(data: bytes, allow_refs: bool = False):
    """Parse and validate a message. Raises WireError on anything unexpected."""
    view = memoryview(data)
    size = int.from_bytes(view[:8], "big") if len(view) >= 8 else -1
    if not 0 <= size <= len(view) - 8:
        raise WireError("truncated message")
    attachments, at = [], 8 + size
    while at < len(view):
        if len(attachments) >= MAX_STRUCTURE // 4:  # each is used through two objects, two members
            raise WireError("too many attachments")
        n = int.from_bytes(view[at:at + 8], "big")
        if at + 8 + n > len(view):
            raise WireError("truncated attachment")
        attachments.append(view[at + 8:at + 8 + n])
        at += 8 + n
    if size > MAX_JSON:
        raise WireError(f"the JSON part is {size} bytes, over the {MAX_JSON}-byte limit")
    text = bytes(view[8:8 + size])
    if structure(text) > MAX_STRUCTURE:
        raise WireError(f"more than {MAX_STRUCTURE} objects, arrays and object members")
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"not valid JSON: {str(exc)[:200]}") from None
    return decode(raw, allow_refs=allow_refs, attachments=attachments)


_STRING = re.compile(rb'"[^"]*"')


def skeleton(text: bytes) -> bytes:
    """A JSON text without its strings (escapes first, then each string), made at C
    speed, so values can be counted before a parser allocates them."""
    return _STRING.sub(b"", text.replace(b"\\\\", b"").replace(b'\\"', b""))


def structure(text: bytes) -> int:
    """How many objects, arrays and object members a JSON text holds (an upper
    bound): each costs the parser and the decoder far more than a plain item."""
    bare = skeleton(text)
    return bare.count(b"{") + bare.count(b"[") + bare.count(b":")


def _refuse_constant(name: str):
    raise WireError(f"bare {name} is not allowed; non-finite floats are tagged")


def decode(raw, allow_refs: bool = False, attachments: list | None = None):
    return _decode(raw, 0, allow_refs, _Attachments(attachments or []))


class _Attachments(list):
    """The attachments of one message; each may be decoded once, so a few bytes of
    JSON cannot make one large attachment decode a million times."""

    def __init__(self, attachments: list):
        super().__init__(attachments)
        self.used: set = set()

    def take(self, body: dict) -> memoryview:
        at = body.get("at")
        if type(at) is not int or not 0 <= at < len(self):
            raise WireError("bad attachment reference")
        if at in self.used:
            raise WireError("an attachment is referenced twice")
        self.used.add(at)
        return self[at]


_PLAIN = frozenset({type(None), bool, int, float, str})


def _items(values: list, depth: int, allow_refs: bool, att: list) -> list:
    """Decode a JSON array's items; plain ones, fresh from json.loads, stay as they are."""
    if depth >= MAX_DEPTH:
        raise WireError("value is nested too deeply")
    return [v if type(v) in _PLAIN else _decode(v, depth + 1, allow_refs, att) for v in values]


def _decode(raw, depth: int, allow_refs: bool, att: list):
    if depth > MAX_DEPTH:
        raise WireError("value is nested too deeply")
    if raw is None or isinstance(raw, (bool, int, float, str)):
        return raw
    if isinstance(raw, list):
        return _items(raw, depth, allow_refs, att)
    if not isinstance(raw, dict):
        raise WireError(f"unexpected JSON value of type {type(raw).__name__}")
    tags = [k for k in raw if k.startswith("$")]
    if not tags:
        return {k: v if type(v) in _PLAIN else _decode(v, depth + 1, allow_refs, att)
                for k, v in raw.items()}
    if len(raw) != 1:
        raise WireError("a tagged object must have exactly one key")
    tag, body = tags[0], raw[tags[0]]
    if tag == "$float" and body in _NONFINITE:
        return _NONFINITE[body]
    if tag == "$tuple" and isinstance(body, list):
        return tuple(_items(body, depth, allow_refs, att))
    if tag == "$dict" and isinstance(body, list):
        out = {}
        for pair in body:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise WireError("$dict items must be [key, value] pairs")
            key = _decode(pair[0], depth + 1, allow_refs, att)
            try:
                out[key] = _decode(pair[1], depth + 1, allow_refs, att)
            except TypeError:
                raise WireError("$dict key is not hashable") from None
        return out
    if tag == "$floats" and isinstance(body, dict):
        raw_bytes = att.take(body)
        if len(raw_bytes) % 8:
            raise WireError("$floats payload is not a whole number of float64s")
        floats = array("d")
        floats.frombytes(raw_bytes)
        return floats.tolist()
    if tag == "$array" and isinstance(body, dict):
        return _decode_array(body, att.take(body))
    if tag == "$scalar" and isinstance(body, dict) and body.get("dtype") in ARRAY_DTYPES:
        import numpy as np
        value = _decode(body.get("value"), depth + 1, allow_refs, att)
        if not isinstance(value, (bool, int, float)) or body["dtype"] not in _NUMPY_DTYPES:
            raise WireError("bad $scalar")
        return np.dtype(body["dtype"]).type(value)
    if tag == "$opaque" and isinstance(body, dict):
        type_name, base = body.get("type"), body.get("base")
        if not isinstance(type_name, str) or not (base is None or isinstance(base, str)):
            raise WireError("bad $opaque")
        return Opaque(type_name[:80], base[:20] if base else None)
    if tag == "$ref" and allow_refs and isinstance(body, str):
        return Ref(body)
    raise WireError(f"unknown or malformed tag {tag!r}")


_NUMPY_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8",
                           "float16", "float32", "float64"})


def _decode_array(body: dict, raw: memoryview):
    kind, dtype, shape = body.get("kind"), body.get("dtype"), body.get("shape")
    if kind not in ("tensor", "ndarray") or dtype not in ARRAY_DTYPES:
        raise WireError("bad $array kind or dtype")
    if not (isinstance(shape, list) and len(shape) <= 8
            and all(type(n) is int and 0 <= n for n in shape)):
        raise WireError("bad $array shape")
    count = math.prod(shape)
    if kind == "ndarray":
        import numpy as np
        if dtype not in _NUMPY_DTYPES:
            raise WireError("bad $array dtype for ndarray")
        np_dtype = np.dtype(dtype)
        if len(raw) != count * np_dtype.itemsize:
            raise WireError("$array payload does not match its shape")
        return np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
    import torch
    torch_dtype = getattr(torch, dtype)
    if len(raw) != count * torch_dtype.itemsize:
        raise WireError("$array payload does not match its shape")
    if count == 0:
        return torch.empty(shape, dtype=torch_dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch_dtype).reshape(shape).clone()
