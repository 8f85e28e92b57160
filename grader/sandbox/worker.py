"""The learner's side: a process that holds the learner's code and runs calls.

It is forked from a warm zygote (`grader.sandbox.zygote`), which raises the
walls around it before any learner code runs, or, where fork is missing,
spawned by the judge with rlimits only. Its stdout and stderr go to a capped
pipe, and two file descriptors carry framed requests and replies. It serves
requests until its input closes. It never decides a verdict: it only returns
plain data (`grader.wire`), and the trusted process judges it.

It imports nothing of the grader but `grader.wire` and `grader.sandbox.limits`:
these are the only grader files a worker can see.

Everything the worker needs is bound at import time, before learner code can
monkeypatch builtins or modules; a learner who patches them can only spoil
their own replies, which the trusted side then refuses.
"""

import builtins
import os
import sys
import traceback
import types
# Bound at import, before learner code can patch builtins.
from builtins import BaseException, MemoryError, ValueError, NameError, compile, dict, exec
from builtins import getattr, int, isinstance, len, list, min, str, type

from grader import wire

_read, _write = os.read, os.write
_loads, _encode, _frame = wire.loads, wire.encode, wire.frame
_PRISTINE = dict(vars(builtins))
_format_tb, _extract_tb = traceback.format_exception_only, traceback.extract_tb
HEADER = 8
MAX_REQUEST = 256 * 2**20


def _dumps(reply: dict, attachments: list = ()) -> bytes:
    """Replies hold values that `_reply_value` has already encoded."""
    return _frame(reply, list(attachments))


def _with_pristine_builtins(fn, *args, **kwargs):
    """Run the worker's own plumbing (json included) with the original builtins.

    The json module looks builtins up at call time, so a learner who replaced
    `isinstance` or `float` would otherwise break every reply. The learner's
    patches are put back afterwards: their code keeps seeing its own world.
    """
    table = vars(builtins)
    saved = dict(table)
    table.update(_PRISTINE)
    try:
        return fn(*args, **kwargs)
    finally:
        table.clear()
        table.update(saved)


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = _read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send(fd: int, payload: bytes) -> None:
    view = memoryview(len(payload).to_bytes(HEADER, "big") + payload)
    while view:
        view = view[_write(fd, view):]


def _resolve(namespace: dict, target: str):
    head, *rest = target.split(".")
    if head not in namespace:
        raise NameError(f"name {head!r} is not defined")
    obj = namespace[head]
    for name in rest:
        obj = getattr(obj, name)
    return obj


def _unref(namespace: dict, value):
    """Swap a `Ref` argument for the named object. Refs are whole arguments,
    never nested, so a long list argument is not walked item by item."""
    if isinstance(value, wire.Ref):
        return _resolve(namespace, value.name)
    return value


def _args(namespace: dict, args) -> list:
    return [_unref(namespace, a) for a in args]


def _raised(exc: BaseException, filename_prefix: str = "<exercise") -> dict:
    """Describe a learner exception: type, message and the learner's own line."""
    message = "".join(_format_tb(type(exc), exc)).strip()
    where = ""
    for frame in _extract_tb(exc.__traceback__):
        if frame.filename.startswith(filename_prefix):
            where = f"{frame.filename[1:-1]}, line {frame.lineno}"
    return {"raised": {"type": type(exc).__name__[:80], "message": message[:2000],
                       "where": where, "memory": isinstance(exc, MemoryError)}}


def _reply_value(value, att: list) -> dict:
    mark = len(att)
    try:
        return {"ok": _encode(value, att)}
    except BaseException as exc:  # a value too deep or too strange to encode
        del att[mark:]
        return {"ok": {"$opaque": {"type": type(value).__name__[:80], "base": None}},
                "note": f"{type(exc).__name__}: {exc}"[:200]}


def _handle(namespace: dict, request: dict, att: list) -> dict:
    op = request.get("op")
    if op == "ping":
        return {"ok": None}
    if op == "exec":
        code = compile(request["source"], request.get("filename", "<exercise>"), "exec")
        exec(code, namespace)
        return {"ok": None}
    if op == "get":
        return _reply_value(_resolve(namespace, request["target"]), att)
    if op == "call":
        fn = _resolve(namespace, request["target"])
        args = _args(namespace, request.get("args", []))
        kwargs = {k: _unref(namespace, v) for k, v in request.get("kwargs", {}).items()}
        result = fn(*args, **kwargs)
        if request.get("store"):
            namespace[request["store"]] = result
            return {"ok": None}
        return _reply_value(result, att)
    if op == "map":
        fn = _resolve(namespace, request["target"])
        outcomes = []
        for args in request["calls"]:
            try:
                outcomes.append(_reply_value(fn(*_args(namespace, args)), att))
            except BaseException as exc:  # each call's failure is its own outcome
                outcomes.append(_raised(exc))
        return {"outcomes": outcomes}
    raise ValueError(f"unknown op {op!r}")


def _fresh_main_module() -> dict:
    """A clean __main__ for learner code, as in a new interpreter.

    The grader's own modules leave sys.modules too, so a learner's code finds no
    trace of them there; the worker keeps its references.
    """
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    for name in [n for n in sys.modules if n == "grader" or n.startswith("grader.")]:
        del sys.modules[name]
    return vars(main)


def serve(fd_in: int, fd_out: int) -> None:
    """Answer requests until the input closes (the walls are already up)."""
    namespace = _fresh_main_module()
    _send(fd_out, _dumps({"ready": True}))
    while True:
        try:
            size = int.from_bytes(_read_exact(fd_in, HEADER), "big")
            if size > MAX_REQUEST:
                return
            request = _with_pristine_builtins(_loads, _read_exact(fd_in, size), allow_refs=True)
        except EOFError:
            return
        att: list = []
        try:
            reply = _handle(namespace, request, att)
        except BaseException as exc:  # learner errors, sys.exit and all, become data
            reply = _with_pristine_builtins(_raised, exc)
            att = []
        try:
            payload = _with_pristine_builtins(_dumps, reply, att)
        except BaseException as exc:
            payload = _with_pristine_builtins(_dumps, {"raised": {
                "type": "EncodingError", "message": str(exc)[:500], "where": "", "memory": False}})
        _with_pristine_builtins(_flush_output)
        _send(fd_out, payload)


def _flush_output() -> None:
    """Push the learner's prints into the capped pipe before answering."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a learner may have replaced or closed the stream
            pass


def main() -> None:
    """Spawn mode: the first message on stdin says where to reply and how to confine."""
    # Requests arrive on stdin; move them to a private descriptor so that a
    # learner's input() reads an empty stream instead of the grader's requests.
    fd_in = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    init = _loads(_read_exact(fd_in, int.from_bytes(_read_exact(fd_in, HEADER), "big")))
    from grader.sandbox.limits import apply_limits
    apply_limits(init["sandbox"].get("limits", {}))
    for module in init.get("preload", []):
        __import__(module)
    sys.argv[:] = [""]
    serve(fd_in, init["reply_fd"])


if __name__ == "__main__":
    main()
