"""A progress bar for batches: done/total, rate and ETA, on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Redraws one line on a terminal; elsewhere (CI logs) prints a line per 10%."""

    def __init__(self, total: int, stream=None, label: str = "grading"):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        if done == self.done:
            return
        self.done = min(done, self.total)
        decile = self.done * 10 // max(self.total, 1)
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif decile != self._last_decile:
            self._last_decile = decile
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        width = 30
        filled = width * self.done // max(self.total, 1)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        return (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"elapsed {_clock(elapsed)} ETA {_clock(eta)}")

    def finish(self) -> None:
        if self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
