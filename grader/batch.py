"""Grade a whole class: find the submissions, grade them in parallel, keep every result.

Layout of SUBMISSIONS_DIR: one notebook per learner (`ada.ipynb`), or one
folder per learner holding several lessons (`ada/03_loss_scaling.ipynb`). The
learner id is the file or folder name.

Each result is written atomically by the process that graded it, as soon as it
is known, to OUT/reports/<learner>/<file stem>.json. A re-run skips every
submission whose file hash and grader version (and hidden-check hash) match its
report, so a batch killed halfway is completed by running it again, with every
result present exactly once. The gradebook, Gradescope files and review pages
are rebuilt from the reports at the end.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.progress import Progress
from grader.receipt import checks_sha256, file_sha256
from grader.runner import checks_file
from grader.report import write_atomic
from grader.results import Report

SKIP_NAMES = {".ipynb_checkpoints", "__MACOSX"}


@dataclass(frozen=True)
class Item:
    learner: str
    path: Path

    def report_path(self, out: Path) -> Path:
        return out / "reports" / self.learner / f"{self.path.stem}.json"


def discover(submissions: Path) -> list[Item]:
    """Every submission, in a stable order. Any top-level file counts (a learner
    who uploaded a PDF still gets a row saying so); inside a learner's folder,
    the .ipynb files do."""
    items = []
    for entry in sorted(Path(submissions).iterdir()):
        if entry.name.startswith(".") or entry.name in SKIP_NAMES:
            continue
        if entry.is_dir():
            for path in sorted(entry.rglob("*.ipynb")):
                if not any(part in SKIP_NAMES or part.startswith(".") for part in path.relative_to(entry).parts):
                    items.append(Item(entry.name, path))
        elif entry.is_file():
            items.append(Item(entry.stem, entry))
    return items


def is_current(item: Item, out: Path) -> bool:
    """Was this exact file already graded by this grader version and these checks?"""
    try:
        report = json.loads(item.report_path(out).read_text())
        receipt, lesson = report["receipt"], report["lesson"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if receipt.get("file_sha256") != file_sha256(item.path) or receipt.get("grader_version") != __version__:
        return False
    # An ungradable file's report has no checks hash: its file hash alone decides.
    return "checks_sha256" not in receipt or (
        checks_file(lesson).exists() and receipt["checks_sha256"] == checks_sha256(lesson))


# -- in each pool process ----------------------------------------------------

_config: GraderConfig | None = None


def _init(config: GraderConfig) -> None:
    global _config
    _config = config
    from grader.grade import official_lessons
    from grader.notebook import Lesson
    from grader.sandbox import prestart
    prestart({Lesson.from_notebook(path).preload for path in official_lessons(config).values()}, config)


def _grade_chunk(items: list[Item], out: Path) -> list[Item]:
    """Grade a few submissions in one pytest session per lesson; write each report."""
    from grader.grade import grade_many
    try:
        reports = grade_many([item.path for item in items], _config)
    except Exception:  # noqa: BLE001 - retry one by one, so one bad file costs only its own row
        reports = [_grade_alone(item) for item in items]
    for item, report in zip(items, reports):
        data = report.to_dict()
        data.update(learner=item.learner, file=item.path.name, execution_time=report.seconds)
        write_atomic(item.report_path(out), json.dumps(data, indent=2, allow_nan=False) + "\n")
    return items


def _grade_alone(item: Item) -> Report:
    from grader.grade import grade_many
    try:
        return grade_many([item.path], _config)[0]
    except Exception as exc:  # noqa: BLE001 - a grader failure becomes this file's row
        return _failure(item, f"the grader failed on this file ({type(exc).__name__}: {exc})")


def _failure(item: Item, why: str) -> Report:
    return Report(lesson="unknown", tests=[], status="ungradable",
                  notices=[f"{why}; your instructor has been told"],
                  receipt={"file_sha256": _safe_hash(item.path), "grader_version": __version__})


def _safe_hash(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


# -- the batch ----------------------------------------------------------------

def _chunks(items: list[Item], jobs: int) -> list[list[Item]]:
    """A few chunks per process: each pays one pytest session per lesson it holds
    (about 0.3 s), so chunks are as large as keeping every core busy allows."""
    size = max(1, min(100, -(-len(items) // (jobs * 6))))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_pool(todo: list[Item], out: Path, config: GraderConfig, jobs: int, progress: Progress) -> None:
    """Grade `todo` in `jobs` processes. If a grading process dies, the pool is
    rebuilt and its unfinished items retried one by one; an item that kills the
    pool again gets a report saying so, and the batch goes on."""
    chunks, retried, started = _chunks(todo, jobs), set(), time.time()
    while chunks:
        # Spawned, not forked: the pool's processes start without this process's threads.
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init,
                                 initargs=(config,)) as pool:
            futures = {pool.submit(_grade_chunk, chunk, out): chunk for chunk in chunks}
            chunks = []
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                progress.update(_written_since(out, started))
                for future in done:
                    chunk = futures[future]
                    try:
                        future.result()
                    except BrokenProcessPool:
                        for item in chunk:
                            if item in retried:
                                _write_failure(item, out, "a grading process died on this file")
                            else:
                                retried.add(item)
                                chunks.append([item])
                        continue
                    progress.update(_written_since(out, started))


def _written_since(out: Path, started: float) -> int:
    """Reports written by this run: progress, read from the results themselves."""
    count = 0
    for path in (out / "reports").glob("*/*.json"):
        try:
            count += path.stat().st_mtime >= started
        except OSError:
            pass
    return count


def _write_failure(item: Item, out: Path, why: str) -> None:
    data = _failure(item, why).to_dict()
    data.update(learner=item.learner, file=item.path.name, execution_time=0.0)
    write_atomic(item.report_path(out), json.dumps(data, indent=2) + "\n")


@dataclass
class BatchResult:
    items: list[Item]
    graded: int
    skipped: int
    seconds: float
    reports: dict[Item, dict]
    outputs: list[str] = field(default_factory=list)  # what the class outputs say (issue 11)


def grade_class(submissions: Path, out: Path, config: GraderConfig | None = None,
                jobs: int | None = None, progress: Progress | None = None, setup=None) -> BatchResult:
    config = config or GraderConfig()
    out = Path(out)
    # Learner code must not read other learners' work or the results.
    config = replace(config, hidden_paths=tuple(config.hidden_paths) + (str(Path(submissions).resolve()),
                                                                         str(out.resolve())))
    items = discover(submissions)
    for stale in (out / "reports").glob("*/.*.tmp"):  # half-written by a killed run; never a result
        stale.unlink(missing_ok=True)
    todo = [item for item in items if not is_current(item, out)]
    progress = progress or Progress(len(todo))
    start = time.perf_counter()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    _run_pool(todo, out, config, jobs, progress)
    progress.finish()
    reports = {}
    for item in items:
        reports[item] = json.loads(item.report_path(out).read_text())
    from grader.class_outputs import write_class_outputs
    outputs = write_class_outputs(items, reports, out, setup)  # setup: a classbook.ClassRun (issue 11)
    return BatchResult(items, len(todo), len(items) - len(todo), time.perf_counter() - start, reports, outputs)
