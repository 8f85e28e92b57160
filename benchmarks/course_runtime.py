"""How long each solution notebook takes to run top to bottom, on this machine.

    .venv/bin/python benchmarks/course_runtime.py            # every lesson
    .venv/bin/python benchmarks/course_runtime.py 03 05      # some lessons

Each notebook runs in a fresh kernel with nbclient, as CI's nbval does. The
budget is 60 s per lesson and 4 minutes for the course on a 2-core CPU; the
table prints each time against that budget, and the total.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grader.refresh import execute

ROOT = Path(__file__).resolve().parent.parent
PER_LESSON, COURSE = 60.0, 240.0


def main(selected: list[str]) -> int:
    paths = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
    if selected:
        paths = [p for p in paths if any(p.stem.startswith(s) for s in selected)]
    total = 0.0
    print(f"{'lesson':<30} {'seconds':>8} {'of budget':>10}")
    for path in paths:
        _, seconds = execute(path)
        total += seconds
        print(f"{path.stem:<30} {seconds:8.1f} {seconds / PER_LESSON:10.0%}", flush=True)
    print(f"{'course':<30} {total:8.1f} {total / COURSE:10.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
