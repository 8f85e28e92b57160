"""What a worker may see: the allowlist, worked out once per grading process.

A worker's filesystem holds exactly these, read-only, at their usual paths:

- the system's programs and shared libraries (/usr, /lib*, /bin, /sbin) and
  the dynamic loader's cache;
- the Python installation and the environment's packages (their `lib`, `bin`
  and `pyvenv.cfg`, not the folder around them, which may be a course checkout);
- the CPU description under /sys that torch reads;
- the learner side's own modules, file by file (`grader.wire`,
  `grader.sandbox.worker` and what they import), never the rest of `grader`:
  where the grader is installed among the packages, its folder is covered by
  an empty one first.

Around them the worker gets a fresh /proc, a minimal /dev, and private
size-limited /tmp and /dev/shm. Nothing else exists: no course checkout, no
`.git`, no home folder, no submissions, no output folder.
"""

from __future__ import annotations

import functools
import os
import site
import sys
from pathlib import Path

import grader

SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
FILES = ("/etc/ld.so.cache", "/etc/localtime")
CPU_INFO = ("/sys/devices/system/cpu",)
# torch's cpuinfo parses it on the first FP16 cast; namespaces mount a fresh
# /proc anyway, but Landlock must name it (and nothing else of /proc).
PROC_FILES = ("/proc/cpuinfo",)
PREFIX_PARTS = ("lib", "lib64", "bin", "pyvenv.cfg")
GRADER_DIR = Path(grader.__file__).resolve().parent
# The learner side: the worker's serve loop, its codec and its rlimits.
LEARNER_MODULES = ("__init__.py", "wire.py", "sandbox/__init__.py", "sandbox/worker.py",
                   "sandbox/limits.py")


class AllowlistError(RuntimeError):
    pass


@functools.lru_cache(maxsize=4)
def plan(course_root: str) -> dict:
    """The allowlist as plain data, for the zygote: `read` (bound read-only),
    `links` (symlinks recreated, as on merged-/usr systems), `hide` (folders
    covered by an empty one), `modules` (learner-side files bound back) and
    `proc` (the /proc files a Landlock worker may read)."""
    read, links = [], []
    for path in SYSTEM:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            read.append(path)
    read += [p for p in FILES + CPU_INFO if os.path.exists(p)]
    for prefix in dict.fromkeys((sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix)):
        for part in PREFIX_PARTS:
            path = os.path.join(prefix, part)
            if os.path.islink(path):
                links.append((path, os.readlink(path)))
            elif os.path.exists(path):
                read.append(path)
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and user_site in sys.path and os.path.isdir(user_site):
        read.append(user_site)
    read = _outermost(read)
    hide = [str(GRADER_DIR)] if _inside(GRADER_DIR, read) else []
    modules = [str(GRADER_DIR / name) for name in LEARNER_MODULES]
    _refuse_private(read, hide, Path(course_root))
    return {"read": read, "links": links, "hide": hide, "modules": modules,
            "proc": [p for p in PROC_FILES if os.path.exists(p)]}


def _inside(path: Path, folders) -> bool:
    return any(path == Path(f) or path.is_relative_to(f) for f in folders)


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths already inside another allowed one; keep the order stable."""
    kept: list[str] = []
    for path in sorted(dict.fromkeys(paths), key=lambda p: (len(Path(p).parts), p)):
        if not _inside(Path(path), kept):
            kept.append(path)
    return kept


def _refuse_private(read: list[str], hide: list[str], course_root: Path) -> None:
    """A last guard: no allowed folder may hold the course's private files."""
    course_root = course_root.resolve()
    private = [GRADER_DIR / "checks", course_root / "solutions", course_root / ".git",
               course_root / "tests"]
    for path in private:
        real = path.resolve()
        for folder in read:
            if (real == Path(folder) or real.is_relative_to(Path(folder).resolve())) and not _inside(real, hide):
                raise AllowlistError(f"the sandbox would show {path} to learner code (it lies "
                                     f"inside {folder}); install the course outside the Python "
                                     f"environment's folders")


def private_paths(course_root: Path, extra=()) -> list[Path]:
    """What must stay unreadable to learner code, where only file permissions
    can hide it (a container that allows neither namespaces nor Landlock)."""
    course_root = Path(course_root)
    return [p for p in (GRADER_DIR / "checks", course_root / "solutions", course_root / ".git",
                        *map(Path, extra)) if p.exists()]


def open_to_others(path: Path) -> bool:
    """Can a uid that is neither owner nor in the group list and open files in `path`?"""
    path = Path(path).resolve()
    return all(os.stat(p).st_mode & 0o001 for p in (*path.parents, path)) and bool(
        os.stat(path).st_mode & 0o004)


def readable_by_others(path: Path) -> bool:
    """Could a uid that is neither owner nor in the group read anything at `path`?
    A folder without the others' x bit hides all below it."""
    path = Path(path).resolve()
    if any(not os.stat(parent).st_mode & 0o001 for parent in path.parents):
        return False
    if not path.is_dir():
        return bool(os.stat(path).st_mode & 0o004)
    for folder, dirs, files in os.walk(path):
        if not os.stat(folder).st_mode & 0o001:
            dirs[:] = []
            continue
        if any(os.lstat(os.path.join(folder, f)).st_mode & 0o004 for f in files):
            return True
    return False
