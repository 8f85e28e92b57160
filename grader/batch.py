"""Grade a whole class: find the submissions, grade them in parallel, keep every result.

Layout of SUBMISSIONS_DIR: one notebook per learner (`ada.ipynb`), or one
folder per learner holding several lessons (`ada/03_loss_scaling.ipynb`). The
learner id is the file or folder name, made safe (`grader.intake.safe_name`).
Every entry is judged by lstat: a link, FIFO, device or oversized file is never
opened, and gets a report saying why, like any file that cannot be graded.

Each result is written atomically by the process that graded it, as soon as it
is known, to OUT/reports/<learner>/<file stem>.json. A re-run skips every
submission whose file hash and grader version (and hidden-check hash) match its
report, so a batch killed halfway is completed by running it again, with every
result present exactly once; outputs of files no longer submitted move to OUT/stale/.
The gradebook, Gradescope files and review pages are rebuilt from the reports
at the end.
"""

from __future__ import annotations

import json
import os
import stat
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

from grader import __version__
from grader.config import GraderConfig
from grader.intake import (kept_apart, kind_problem, learner_ids, notebooks_in, safe_name, shown,
                           size_problem, skipped)
from grader.pool import enter_pool_process, kill_pool, sigint_held
from grader.progress import Progress
from grader.receipt import checks_sha256, file_sha256
from grader.runner import checks_file
from grader.report import write_atomic
from grader.results import Report

SKIP_NAMES = {".ipynb_checkpoints", "__MACOSX"}


@dataclass(frozen=True)
class Item:
    learner: str  # a safe id: NFC, no controls, short
    path: Path
    name: str = ""  # its report's name, unique within the learner's reports
    problem: str = ""  # why the file is never read (a link, FIFO, device, too large), or ""

    def report_path(self, out: Path) -> Path:
        return out / "reports" / self.learner / f"{self.name or safe_name(self.path.stem)}.json"

    @property
    def file(self) -> str:
        """The file's name as text, for reports and pages."""
        return shown(self.path.name)


def discover(submissions: Path, max_bytes: int = GraderConfig.max_file_size) -> list[Item]:
    """Every submission, in a stable order. Any top-level entry counts (a learner
    who uploaded a PDF or a link still gets a row saying so); inside a learner's
    folder, the entries named *.ipynb do. Folders are walked without following links."""
    found: list[tuple[str, Path, os.stat_result]] = []
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        if skipped(entry.name, SKIP_NAMES):
            continue
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            found += [(entry.name, path, st) for path, st in notebooks_in(Path(entry.path), SKIP_NAMES)]
        else:
            found.append((Path(entry.name).stem, Path(entry.path), info))
    ids = learner_ids([learner for learner, _, _ in found])
    items = [Item(ids[learner], path, problem=kind_problem(info.st_mode)
                  or size_problem(info.st_size, max_bytes) or "")
             for learner, path, info in found]
    return _named(items, Path(submissions))


def _named(items: list[Item], submissions: Path) -> list[Item]:
    """Give each item a report name unique within its learner: `carol.ipynb` and
    `carol.pdf` must not share `reports/carol/carol.json`. A notebook keeps the
    plain name; the others get a hash of their path."""
    by_learner: dict[str, list[Item]] = {}
    for item in items:
        by_learner.setdefault(item.learner, []).append(item)
    named = {}
    for group in by_learner.values():
        preferred = sorted(group, key=lambda i: (i.path.suffix != ".ipynb" or bool(i.problem), str(i.path)))
        names = {item: safe_name(item.path.stem) for item in preferred}
        names = kept_apart(names, key=lambda item: str(item.path.relative_to(submissions)))
        named.update({item: replace(item, name=name) for item, name in names.items()})
    return [named[item] for item in items]


def is_current(item: Item, out: Path) -> bool:
    """Was this exact file already graded by this grader version and these checks?"""
    try:
        report = json.loads(item.report_path(out).read_text())
        receipt, lesson = report["receipt"], report["lesson"]
        if receipt.get("file_sha256") != file_sha256(item.path) or receipt.get("grader_version") != __version__:
            return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    # An ungradable file's report has no checks hash: its file hash alone decides.
    return "checks_sha256" not in receipt or (
        checks_file(lesson).exists() and receipt["checks_sha256"] == checks_sha256(lesson))


# -- in each pool process ----------------------------------------------------

_config: GraderConfig | None = None


def _init(config: GraderConfig, grader_pid: int) -> None:
    global _config
    enter_pool_process(grader_pid)  # dies with the grader; Ctrl-C is the grader's to handle
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
        _write(item, out, report)
    return items


def _grade_alone(item: Item) -> Report:
    from grader.grade import grade_many
    try:
        return grade_many([item.path], _config)[0]
    except Exception as exc:  # noqa: BLE001 - a grader failure becomes this file's row
        return _failure(item, f"the grader failed on this file ({type(exc).__name__}: {exc})")


def _failure(item: Item, why: str, lesson: str = "unknown") -> Report:
    return Report(lesson=lesson, tests=[], status="ungradable",
                  notices=[f"{why}; your instructor has been told"],
                  receipt={"file_sha256": _safe_hash(item.path), "grader_version": __version__})


def _refusal(item: Item, config: GraderConfig) -> Report:
    """The report of a file that is never opened: the reason is the learner's to act on."""
    from grader.grade import guess_lesson
    return Report(lesson=guess_lesson(item.path, config), tests=[], status="ungradable",
                  notices=[f"{item.problem}."], receipt={"file_sha256": None, "grader_version": __version__})


def _safe_hash(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _write(item: Item, out: Path, report: Report) -> None:
    data = report.to_dict()
    data.update(learner=item.learner, file=item.file, execution_time=report.seconds)
    write_atomic(item.report_path(out), json.dumps(data, indent=2, allow_nan=False) + "\n")


# -- the batch ----------------------------------------------------------------

def _chunks(items: list[Item], jobs: int) -> list[list[Item]]:
    """A few chunks per process: each pays one pytest session per lesson it holds
    (about 0.3 s), so chunks are as large as keeping every core busy allows."""
    size = max(1, min(100, -(-len(items) // (jobs * 6))))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_pool(todo: list[Item], out: Path, config: GraderConfig, jobs: int, progress: Progress) -> None:
    """Grade `todo` in `jobs` processes. If a grading process dies, the pool is
    rebuilt and its unfinished items retried one by one; an item that kills the
    pool again gets a report saying so, and the batch goes on. On Ctrl-C (or any
    error here) the processes are killed at once, not waited for."""
    chunks, retried, started = _chunks(todo, jobs), set(), time.time()
    while chunks:
        pool = None
        try:
            with sigint_held():  # the processes start with Ctrl-C blocked, then ignore it
                # Spawned, not forked: the pool's processes start without this process's threads.
                pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init,
                                           initargs=(config, os.getpid()))
                futures = {pool.submit(_grade_chunk, chunk, out): chunk for chunk in chunks}
            chunks = _collect(futures, out, retried, lambda: progress.update(_written_since(out, started)))
        except BaseException:
            if pool is not None:
                kill_pool(pool)
            raise
        pool.shutdown(wait=True)


def _collect(futures: dict, out: Path, retried: set, report_progress) -> list[list[Item]]:
    """Wait for every chunk; return the items to retry one by one in a new pool."""
    retry, pending = [], set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        report_progress()
        for future in done:
            try:
                future.result()
            except BrokenProcessPool:
                for item in futures[future]:
                    if item in retried:
                        _write_failure(item, out, "a grading process died on this file")
                    else:
                        retried.add(item)
                        retry.append([item])
            except Exception as exc:  # noqa: BLE001 - e.g. a report could not be written
                for item in futures[future]:
                    _write_failure(item, out, f"the grader failed on this file ({type(exc).__name__})")
    return retry


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
    try:
        _write(item, out, _failure(item, why))
    except OSError:
        pass  # the gradebook still gets its row, from _read_reports


def _read_reports(items: list[Item], out: Path) -> dict[Item, dict]:
    """Every item's report; one that cannot be read still gives the learner a row."""
    reports = {}
    for item in items:
        try:
            reports[item] = json.loads(item.report_path(out).read_text())
        except (OSError, ValueError) as exc:
            data = _failure(item, f"its report could not be read ({type(exc).__name__})").to_dict()
            reports[item] = {**data, "learner": item.learner, "file": item.file, "execution_time": 0.0}
    return reports


def _move_stale(items: list[Item], out: Path) -> int:
    """Move what the batch wrote for files no longer submitted (their reports, and
    the review page and Gradescope file of learners no longer in the class) to
    OUT/stale/, so the live folders hold only what is submitted now and nothing
    is lost (a folder graded into the wrong --out, say)."""
    reports = {item.report_path(out) for item in items}
    learners = {item.learner for item in items}
    stale = [p for p in (out / "reports").glob("*/*.json") if p not in reports]
    stale += [p for p in (out / "review").glob("*.md") if p.stem not in learners]
    stale += [p for p in (out / "gradescope").glob("*/results.json") if p.parent.name not in learners]
    for path in stale:
        kept = out / "stale" / path.relative_to(out)
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, kept)
        if path.parent.parent in (out / "reports", out / "gradescope") and not any(path.parent.iterdir()):
            path.parent.rmdir()
    return len(stale)


@dataclass
class BatchResult:
    items: list[Item]
    graded: int
    skipped: int
    seconds: float
    reports: dict[Item, dict]
    stale: int = 0  # outputs of files no longer submitted, moved to OUT/stale/
    outputs: list[str] = field(default_factory=list)  # what the class outputs say


def grade_class(submissions: Path, out: Path, config: GraderConfig | None = None,
                jobs: int | None = None, progress: Progress | None = None, setup=None) -> BatchResult:
    config = config or GraderConfig()
    out = Path(out)
    # Created first: the paths hidden from learner code are worked out from what exists.
    out.mkdir(parents=True, exist_ok=True)
    # Learner code must not read other learners' work or the results.
    config = replace(config, hidden_paths=tuple(config.hidden_paths) + (str(Path(submissions).resolve()),
                                                                         str(out.resolve())))
    items = discover(submissions, config.max_file_size)
    for stale in (out / "reports").glob("*/.*.tmp"):  # half-written by a killed run; never a result
        stale.unlink(missing_ok=True)
    stale = _move_stale(items, out)
    for item in items:
        if item.problem:  # never opened: its report costs nothing, so it is written every run
            _write(item, out, _refusal(item, config))
    todo = [item for item in items if not item.problem and not is_current(item, out)]
    progress = progress or Progress(len(todo))
    start = time.perf_counter()
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))
    if todo:
        _run_pool(todo, out, config, jobs, progress)
    progress.finish()
    reports = _read_reports(items, out)
    from grader.class_outputs import write_class_outputs
    outputs = write_class_outputs(items, reports, out, setup)  # setup: a classbook.ClassRun
    return BatchResult(items, len(todo), len(items) - len(todo), time.perf_counter() - start,
                       reports, stale, outputs)
