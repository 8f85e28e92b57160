"""Re-run a solution notebook and store its fresh outputs (what nbval compares)."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: float = 600) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in its own folder; return it and the seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    return nb, time.perf_counter() - start


def refresh(path: Path) -> float:
    nb, seconds = execute(path)
    nbformat.write(nb, path)
    return seconds
