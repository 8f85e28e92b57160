"""Reading what learners hand in, trusting nothing about it.

A submissions folder comes from an LMS export or an unpacked archive, so any
entry may be a symbolic link (to another learner's work, the solutions, or
/dev/zero), a FIFO that blocks the first reader forever, a device, a huge file,
or a name that is 240 characters long, holds control characters, or spells
"josé" in NFD. Here every path is judged by `lstat`, only regular files are
opened (without following a link, and without blocking on a FIFO swapped in
later), sizes are checked before a byte is read, and learner ids are made into
names that are safe and short on any filesystem.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
from pathlib import Path

MAX_FILE_BYTES = 20 * 2**20  # a course notebook with its outputs is well under 1 MB
MAX_NAME_BYTES = 64  # ids and report names: far below any filesystem's 255-byte limit
_CHUNK = 1 << 20

# Controls, DEL, C1 controls, bidirectional overrides, lone surrogates (undecodable
# bytes in a file name), and characters some filesystems refuse in names.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff/\\\\:*?\"<>|]")


class RefusedFile(OSError):
    """A path that is not a regular file of an acceptable size; the message says why."""


def kind_problem(mode: int) -> str | None:
    """Why an entry with this `st_mode` is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return ("is a symbolic link, not a file; the grader never follows links (an archive may "
                "carry them). Submit the notebook file itself")
    if stat.S_ISDIR(mode):
        return "is a folder, not a notebook; submit the .ipynb file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file; submit the notebook file itself"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file; submit the notebook file itself"
    return "is not a regular file (a socket or another special file); submit the notebook file itself"


def size_problem(size: int, max_bytes: int) -> str | None:
    if size <= max_bytes:
        return None
    return (f"is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:g} MB limit for a submission; "
            "clear its outputs (Edit > Clear Outputs of All Cells), save it, and submit it again")


def open_regular(path: Path, max_bytes: int | None = None) -> int:
    """Open a regular file for reading: never through a link, never blocking on a
    FIFO or a device, and (with `max_bytes`) never one over the size limit.
    Returns a file descriptor; raises RefusedFile with the reason."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        # lstat first, so that not even open() touches a device; fstat after, for
        # whatever was swapped in between.
        problem = kind_problem(os.lstat(path).st_mode)
        if problem:
            raise RefusedFile(problem)
        fd = os.open(path, flags)
    except RefusedFile:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise RefusedFile(kind_problem(stat.S_IFLNK)) from None
        raise RefusedFile(f"could not be opened ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        problem = kind_problem(info.st_mode) or (
            size_problem(info.st_size, max_bytes) if max_bytes is not None else None)
        if problem:
            raise RefusedFile(problem)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read with that bound
    even if the file grows while it is read."""
    fd = open_regular(path, max_bytes)
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, _CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise RefusedFile(size_problem(total, max_bytes))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def sha256_regular(path: Path) -> str:
    """SHA-256 of a regular file, streamed: bounded memory whatever its size."""
    fd = open_regular(path)
    try:
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def shown(name: str) -> str:
    """A file name as text: undecodable bytes become U+FFFD, so it can be written anywhere."""
    return os.fsencode(name).decode("utf-8", "replace")


def safe_name(raw: str, limit: int = MAX_NAME_BYTES) -> str:
    """A learner id or report name made from a learner-chosen name.

    NFC-normalised (the NFC and NFD spellings of "josé" are one learner), free
    of controls and path characters, never hidden or empty, and at most
    `limit` UTF-8 bytes: a longer name keeps its start and gains a hash of the
    whole, so two long names stay apart and each keeps its id on every run.
    """
    text = unicodedata.normalize("NFC", raw)
    text = _UNSAFE.sub("_", text).strip()
    if text.startswith(".") or not text:
        text = "_" + text
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return hashed(text, raw, limit)


def hashed(text: str, raw: str, limit: int = MAX_NAME_BYTES) -> str:
    """`text`, cut to fit `limit` UTF-8 bytes with a short hash of `raw` added:
    the same on every run, and apart from any other `raw`."""
    tag = "-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return text.encode("utf-8")[: limit - len(tag)].decode("utf-8", "ignore").rstrip() + tag


def skipped(name: str, names: set) -> bool:
    """Hidden entries and the given names (say `__MACOSX`) are not submissions."""
    return name.startswith(".") or name in names


def notebooks_in(folder: Path, skip: set, max_depth: int = 32) -> list[tuple[Path, os.stat_result]]:
    """(path, lstat) of each entry named *.ipynb under `folder`, in path order: walked
    without recursion and without following links (a linked entry is listed, not entered)."""
    found, stack = [], [(folder, 0)]
    while stack:
        here, depth = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            if skipped(entry.name, skip):
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if depth < max_depth:
                    stack.append((Path(entry.path), depth + 1))
            elif entry.name.endswith(".ipynb"):
                found.append((Path(entry.path), info))
    return sorted(found, key=lambda pair: pair[0])


def learner_ids(raw_names: list[str]) -> dict[str, str]:
    """Each raw learner name's id. Names that differ only in Unicode form are one
    learner; names that would still clash (say `Carol` and `carol`, one folder on
    a case-insensitive disk) are kept apart by a stable hash."""
    ids = {raw: safe_name(raw) for raw in raw_names}
    return kept_apart(ids, key=lambda raw: unicodedata.normalize("NFC", raw))


def kept_apart(names: dict, key) -> dict:
    """`names` (owner -> name), where two different owners (by `key`) never share a
    name, ignoring case: the first owner of a name keeps it, the others get a hash
    of their own key added, the same on every run."""
    groups: dict[str, list] = {}
    for owner, name in names.items():
        groups.setdefault(name.casefold(), []).append(owner)
    result = dict(names)
    for owners in groups.values():
        first = key(owners[0])
        for owner in owners:
            if key(owner) != first:
                result[owner] = hashed(names[owner], key(owner))
    return result
