"""Solution regions: find them in an exercise cell and replace them with a stub."""

from __future__ import annotations

import re

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_MARKER = re.compile(r"^(?P<indent>[ \t]*)### (?P<kind>BEGIN|END) SOLUTION[ \t]*$")


class MarkerError(ValueError):
    """Malformed solution markers; the message names the cell and the line."""


def has_markers(source: str) -> bool:
    return any(_MARKER.match(line) for line in source.splitlines())


def strip_solutions(source: str, stub: str, where: str) -> str:
    """Replace every marked region with `stub`, indented like its BEGIN line.

    Refuses an END without a BEGIN, a BEGIN inside a region, an unterminated
    region, and a stray marker-like line that is not exactly a marker.
    """
    out: list[str] = []
    open_at: int | None = None
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        if match is None:
            if "SOLUTION" in line and "###" in line:
                raise MarkerError(f"{where}, line {lineno}: {line.strip()!r} looks like a solution "
                                  f"marker but is not exactly {BEGIN!r} or {END!r}.")
            if open_at is None:
                out.append(line)
            continue
        if match["kind"] == "BEGIN":
            if open_at is not None:
                raise MarkerError(f"{where}, line {lineno}: nested {BEGIN!r} (the region opened "
                                  f"on line {open_at} is not closed yet).")
            open_at = lineno
            out.append(f"{match['indent']}{stub}")
        else:
            if open_at is None:
                raise MarkerError(f"{where}, line {lineno}: {END!r} without a {BEGIN!r} before it.")
            open_at = None
    if open_at is not None:
        raise MarkerError(f"{where}, line {open_at}: {BEGIN!r} is never closed with {END!r}.")
    return "\n".join(out)


MIN_SECRET_CHARS = 16  # shorter lines ("return counts") occur in any code


def region_lines(source: str) -> tuple[list[str], list[str]]:
    """Split a cell's stripped lines into (inside solution regions, outside them)."""
    inside, outside, open_ = [], [], False
    for line in source.splitlines():
        match = _MARKER.match(line)
        if match is not None:
            open_ = match["kind"] == "BEGIN"
        else:
            (inside if open_ else outside).append(line.strip())
    return inside, outside


def solution_only_lines(*notebooks) -> set[str]:
    """Lines that exist only inside solution regions: what would be a leak.

    A line that also appears outside them anywhere in the given lessons (a demo
    calling `scaler.update()`, a hint, another lesson's worked example) is not
    secret, and neither is a line too short to tell anything (`return result`).
    """
    inside, outside = set(), set()
    for nb in notebooks:
        for cell in nb.cells:
            cell_inside, cell_outside = region_lines(cell.source)
            inside.update(cell_inside)
            outside.update(cell_outside)
    shown = "\n".join(outside)  # the leak scan matches substrings, so this does too
    return {line for line in inside - outside if len(line) >= MIN_SECRET_CHARS
            and not line.startswith("#") and line not in shown}
