"""A grading receipt: what was graded, by what, with which seeds, on what."""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path

import grader
from grader import sandbox
from grader.intake import sha256_regular
from grader.learner import ExerciseCode
from grader.runner import checks_file


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


@functools.cache
def checks_sha256(lesson_id: str) -> str:
    """The hidden checks' hash, read once per process.

    It covers the checks file and the helper modules it may import, named
    `lessonNN_*.py` next to it, so an edit to a helper also marks old results stale.
    """
    path = checks_file(lesson_id)
    h = hashlib.sha256(path.read_bytes())
    for helper in sorted(path.parent.glob(f"lesson{lesson_id[:2]}_*.py")):
        h.update(b"\0" + helper.name.encode() + b"\0" + helper.read_bytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hash of a submitted file; raises OSError for a link, FIFO or device (never blocks)."""
    return sha256_regular(Path(path))


def submission_hash(code: dict[str, ExerciseCode]) -> str:
    """Hash of the graded cells only: an edit elsewhere does not change it."""
    return sha256_text(*(f"{name}\0{c.source if c.source is not None else '<missing>'}"
                         for name, c in sorted(code.items())))


def make_receipt(lesson_id: str, code: dict[str, ExerciseCode], seed: int, isolate: bool = True) -> dict:
    return {
        "submission_sha256": submission_hash(code),
        "grader_version": grader.__version__,
        "checks_sha256": checks_sha256(lesson_id),
        "seed": seed,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "platform": f"{platform.system()}-{platform.machine()} ({sys.platform})",
        "isolation": sandbox.describe(isolate),
    }
