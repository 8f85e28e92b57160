"""What a hostile submission or a stopped batch costs, with the default settings.

    .venv/bin/python benchmarks/hostile_costs.py            # everything, about 4 minutes
    .venv/bin/python benchmarks/hostile_costs.py looper     # one part: looper sleeper kill int decode notebook

- looper: a lesson-04 DynamicLossScaler whose update() never returns, and a
  lesson-03 scale_gradients that never returns, graded with the default 10 s
  timeout (target: lesson 04 in <= 15 s; one timeout per exercise).
- sleeper: a lesson-03 submission that sleeps 9.5 s at the start of every
  request (just under the 10 s limit), against the default 60 s budget.
- kill / int: `kill -9` of grade-class, and Ctrl-C to its process group, while
  it grades a class that holds loopers (tests/lifecycle_probe.py): what is left
  running after 10 s, reports written after the stop, Ctrl-C exit latency.
- decode: crafted replies at the caps of grader.wire (time and peak memory).
- notebook: a 20 MB notebook of `[{},{},…]` (time and peak memory to refuse it).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _looping_lesson_04(folder: Path) -> Path:
    nb = nbformat.read(ROOT / "solutions" / "04_dynamic_loss_scaling.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "exercise" in c.metadata.get("tags", []))
    doc = '"""Back off on found_inf, else count a clean update and grow when due."""'
    cell.source = cell.source.replace(doc, doc + "\n        while True:\n            pass")
    path = folder / "04_loops.ipynb"
    nbformat.write(nb, path)
    return path


def _cli_seconds(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", str(path)], capture_output=True, cwd=ROOT, check=True)
    return time.perf_counter() - start


def looper() -> None:
    """Each looper twice: warm (graded after an honest submission of its lesson, in one
    process, as grade-class grades a chunk), and as a fresh `grade` command beside the
    honest solution's own fresh `grade` (start-up, imports and zygote included)."""
    from grader.grade import grade
    from grading_fixtures import FIXTURES, path_for

    with tempfile.TemporaryDirectory() as tmp:
        cases = [("lesson 04, update() loops", _looping_lesson_04(Path(tmp)), "04_dynamic_loss_scaling"),
                 ("lesson 03, scale_gradients loops",
                  path_for(next(f for f in FIXTURES if f.name == "infinite-loop")), "03_loss_scaling")]
        for label, notebook, lesson in cases:
            honest = ROOT / "solutions" / f"{lesson}.ipynb"
            grade(honest)  # warm: imports, zygote, drawn examples
            start = time.perf_counter()
            report = grade(notebook)
            warm = time.perf_counter() - start
            paid = sum(t.status == "timeout" and "remaining checks were not run" not in t.message
                       for t in report.tests)
            fresh, fresh_honest = _cli_seconds(notebook), _cli_seconds(honest)
            print(f"looper  {label}, default 10 s timeout: {warm:.1f} s warm; `grade` command "
                  f"{fresh:.1f} s (the honest solution's: {fresh_honest:.1f} s); "
                  f"{sum(t.status == 'timeout' for t in report.tests)} checks timed out, {paid} timeout paid, "
                  f"score {report.score:g}/{report.max_score:g}")


SLEEPER = """import time
_last = [0.0]
def {name}(*args):
    if time.monotonic() - _last[0] > 0.002:  # the first call of a request
        time.sleep(9.5)
    try:
        return _{name}(*args)
    finally:
        _last[0] = time.monotonic()
"""


def sleeper() -> None:
    from grader.grade import grade
    from grading_fixtures import CORRECT, Fixture, notebook_for

    replace = {name: source.replace(f"def {name}(", f"def _{name}(") + SLEEPER.format(name=name)
               for name, source in CORRECT.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sleeper.ipynb"
        nbformat.write(notebook_for(Fixture("sleeper", replace, {})), path)
        start = time.perf_counter()
        report = grade(path)
        seconds = time.perf_counter() - start
    passed = sum(t.status == "passed" for t in report.tests)
    print(f"sleeper 9.5 s per request, lesson 03: {seconds:.1f} s wall (default 60 s budget), "
          f"{passed}/{len(report.tests)} checks passed, score {report.score:g}/{report.max_score:g}")


def _probe(stop: str) -> None:
    from grading_fixtures import FIXTURES, path_for

    looping = path_for(next(f for f in FIXTURES if f.name == "infinite-loop"))
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "subs"
        subs.mkdir()
        for i in range(20):
            source = looping if i % 4 == 3 else ROOT / "solutions" / "03_loss_scaling.ipynb"
            shutil.copy(source, subs / f"learner{i:02d}.ipynb")
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lifecycle_probe.py"), str(subs),
                               str(Path(tmp) / "out"), "--stop", stop, "--after", "3", "--settle", "10"],
                              capture_output=True, text=True, cwd=ROOT)
        result = json.loads(proc.stdout)
    what = "kill -9 of grade-class" if stop == "kill" else "Ctrl-C (SIGINT to its process group)"
    print(f"{stop:7} {what}: grader exited after {result['exit_latency_s']:.2f} s (code {result['exit_code']}); "
          f"left running after 10 s: {len(result['left_running'])}; every descendant gone "
          f"{result['all_gone_after_s']} s after the grader; reports written after the stop: "
          f"{len(result['reports_after_stop'])}; reports lost: {len(result['reports_lost'])} "
          f"(of {result['reports_at_stop']} at the stop)")


def _in_child(setup: str, call: str) -> tuple[float, float, str]:
    """(seconds, peak MB allocated, verdict) of `call` in a fresh interpreter, after
    `setup` (which reads its input from a file, so building it is not counted).
    Time is measured first; memory in a second call, under tracemalloc."""
    code = (f"import time, tracemalloc\nfrom grader import wire, notebook\n{setup}\n"
            "def run():\n    try:\n"
            f"        {call}\n    except Exception as exc:\n        return 'refused: ' + str(exc)[-60:]\n"
            "    return 'accepted'\n"
            "start = time.perf_counter()\nverdict = run()\nseconds = time.perf_counter() - start\n"
            "tracemalloc.start()\nrun()\npeak = tracemalloc.get_traced_memory()[1] / 2**20\n"
            "print(verdict)\nprint(seconds, peak)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.split("\n")
    seconds, mb = map(float, out[-2].split())
    return seconds, mb, out[-3]


def _filled(item: bytes, size: int) -> bytes:
    """A JSON array of copies of `item`, as long as fits in `size` bytes."""
    return b"[" + b",".join([item] * ((size - 2) // (len(item) + 1))) + b"]"


def decode() -> None:
    from grader import wire
    cases = {
        "[0,0,…] (2 M ints)": _filled(b"0", wire.MAX_JSON),
        "{\"k1\":0,…} (200 k keys)": b"{" + b",".join(b'"k%d":0' % i for i in range(199_999)) + b"}",
        "$tuple objects of 40 ints": _filled(b'{"$tuple":[' + b",".join([b"1"] * 40) + b"]}", wire.MAX_JSON),
        "strings with escapes": _filled(b'"abc\\"def"', wire.MAX_JSON),
        "[{},{},…]": _filled(b"{}", wire.MAX_JSON),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in cases.items():
            path = Path(tmp) / "message"
            path.write_bytes(len(text).to_bytes(8, "big") + text)
            seconds, mb, verdict = _in_child(f"message = open({str(path)!r}, 'rb').read()",
                                             "wire.loads(message)")
            print(f"decode  {len(text) / 2**20:.1f} MiB of {label}: {verdict}, {seconds:.2f} s, {mb:.0f} MB peak")


def notebook() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, count in (("20 MB of [{},{},…]", 20 * 2**20 // 3 - 20), ("0.6 MB of [{},{},…]", 200_001)):
            path = Path(tmp) / "bomb.ipynb"
            path.write_text('{"nbformat": 4, "cells": [], "metadata": {"x": [' + ",".join(["{}"] * count) + "]}}")
            seconds, mb, verdict = _in_child("", f"notebook.read_notebook({str(path)!r}, outputs=False)")
            print(f"notebook {label}: {verdict}, {seconds:.2f} s, {mb:.0f} MB peak")


PARTS = {"looper": looper, "sleeper": sleeper, "kill": lambda: _probe("kill"), "int": lambda: _probe("int"),
         "decode": decode, "notebook": notebook}

if __name__ == "__main__":
    for name in sys.argv[1:] or PARTS:
        PARTS[name]()
