"""Grading throughput: our grade-class against executing the same notebooks with nbclient.

    .venv/bin/python benchmarks/grading_throughput.py --n 500

Builds N submissions from the real lessons (the solution notebooks, outputs and
all, as learners hand them in): most correct, some with one exercise left
unfinished, some whose exercise cell kills its process, a few whose exercise
cell never finishes. In the same run it times

- `grade-class` on all N (warm zygote workers, all cores), and
- nbclient executing a sample of the same notebooks, one kernel each: the
  engine under nbgrader's autograde and otter's grade.

and prints both medians per submission and their ratio, the walls the workers
ran behind, and the CPU time grade-class used in all its processes (zygotes
and workers included), which moves far less with the machine's load than
wall-clock time does. Figures are ratios against a peer measured in the same
run, because this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

from grader.batch import grade_class
from grader.config import GraderConfig
from grader.notebook import EXERCISE_TAG, cell_exercise, has_tag
from grader.progress import Progress
from grader.sandbox import in_force

ROOT = Path(__file__).resolve().parent.parent
MIX = (("correct", 0.60), ("unfinished", 0.25), ("crashing", 0.10), ("looping", 0.05))


def _variant(solution: nbformat.NotebookNode, learner: nbformat.NotebookNode, kind: str,
             rng: random.Random) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(solution)))
    if kind == "correct":
        return nb
    exercises = [c for c in nb.cells if has_tag(c, EXERCISE_TAG)]
    cell = rng.choice(exercises)
    if kind == "unfinished":
        stub = next(c for c in learner.cells if cell_exercise(c) == cell_exercise(cell)
                    and has_tag(c, EXERCISE_TAG))
        cell.source = stub.source
    elif kind == "crashing":
        cell.source = "import os\nos._exit(1)\n" + cell.source
    else:
        cell.source = "while True:\n    pass\n" + cell.source
    return nb


def build(folder: Path, n: int, seed: int = 0) -> list[tuple[Path, str, str]]:
    rng = random.Random(seed)
    lessons = sorted(p.stem for p in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")
                     if (ROOT / "grader" / "checks" / f"test_{p.stem}.py").exists())
    solutions = {lid: nbformat.read(ROOT / "solutions" / f"{lid}.ipynb", as_version=4) for lid in lessons}
    learners = {lid: nbformat.read(ROOT / "notebooks" / f"{lid}.ipynb", as_version=4) for lid in lessons}
    kinds = [kind for kind, share in MIX for _ in range(round(share * n))][:n]
    kinds += ["correct"] * (n - len(kinds))
    rng.shuffle(kinds)
    made = []
    for i, kind in enumerate(kinds):
        lesson = lessons[i % len(lessons)]
        path = folder / f"learner{i:04d}.ipynb"
        nbformat.write(_variant(solutions[lesson], learners[lesson], kind, rng), path)
        made.append((path, lesson, kind))
    return made


def nbclient_seconds(path: Path, timeout: float) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except (CellTimeoutError, CellExecutionError, RuntimeError):
        pass  # a looping or dying notebook still cost what it cost
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="submissions to grade")
    parser.add_argument("--jobs", type=int, default=None, help="grading processes (default: all cores)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds per check for us, per cell for nbclient (default 2)")
    parser.add_argument("--nbclient", type=int, default=8, help="notebooks to run with nbclient")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        subs, out = Path(tmp) / "submissions", Path(tmp) / "out"
        subs.mkdir()
        made = build(subs, args.n)
        config = GraderConfig(check_timeout=args.timeout, load_timeout=args.timeout)
        print(f"{args.n} submissions over {len({m[1] for m in made})} lessons; mix "
              + ", ".join(f"{k} {sum(1 for m in made if m[2] == k)}" for k, _ in MIX))
        start, cpu = time.perf_counter(), _children_cpu()
        result = grade_class(subs, out, config, args.jobs, Progress(args.n, label="grade-class"))
        ours_wall, ours_cpu = time.perf_counter() - start, _children_cpu() - cpu
        ours = [d["execution_time"] for d in result.reports.values()]
        ungraded = sum(1 for d in result.reports.values() if d["status"] != "graded")

        rng = random.Random(1)
        sample = rng.sample(made, min(args.nbclient, len(made)))
        theirs = []
        for i, (path, lesson, kind) in enumerate(sample, 1):
            theirs.append(nbclient_seconds(path, args.timeout * 5))
            print(f"nbclient {i}/{len(sample)}: {lesson} ({kind}) {theirs[-1]:.1f} s", file=sys.stderr)

    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print()
    print(f"{'':38}{'seconds':>10}")
    print(f"{'grade-class: median per submission':38}{ours_median:10.3f}   (its own checks + a share of its session)")
    print(f"{'grade-class: wall time / submissions':38}{ours_wall / args.n:10.3f}   "
          f"({args.n} in {ours_wall:.1f} s, {result.graded} graded, {ungraded} ungradable)")
    print(f"{'grade-class: CPU time / submissions':38}{ours_cpu / args.n:10.3f}   "
          f"(user + system, every process it started)")
    print(f"{'nbclient: median per notebook':38}{theirs_median:10.3f}   ({len(theirs)} notebooks, one kernel each)")
    print(f"{'ratio nbclient / grade-class median':38}{theirs_median / ours_median:10.1f}x")
    per_lesson = {}
    for (path, lesson, kind), data in zip(made, (result.reports[i] for i in result.items)):
        per_lesson.setdefault(lesson, []).append(data["execution_time"])
    print("\nmedian per submission by lesson: " + ", ".join(
        f"{lesson} {statistics.median(times):.3f} s" for lesson, times in sorted(per_lesson.items())))
    print(f"sandbox {in_force(config).sentence()}")
    return 0


def _children_cpu() -> float:
    """CPU seconds of every finished process below this one (grading processes,
    zygotes, workers: each waits for its own)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
