"""Grader settings: one frozen dataclass, each field with its default and meaning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The course lives beside the package in a checkout: notebooks/, solutions/.
COURSE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GraderConfig:
    check_timeout: float = field(default=10.0, metadata={"doc": "wall-clock seconds per request to a worker"})
    start_timeout: float = field(default=30.0, metadata={"doc": "seconds for a worker to start and load its imports"})
    submission_budget: float = field(default=60.0, metadata={"doc": "wall-clock seconds for all of one submission's checks together"})
    max_file_size: int = field(default=20 * 2**20, metadata={"doc": "largest submitted file read, bytes"})
    load_timeout: float = field(default=10.0, metadata={"doc": "seconds to run a learner's exercise cell"})
    memory_limit: int = field(default=2 * 2**30, metadata={"doc": "worker address-space limit in bytes (RLIMIT_AS)"})
    cpu_seconds: int = field(default=60, metadata={"doc": "worker CPU-time limit in seconds (RLIMIT_CPU)"})
    file_size: int = field(default=16 * 2**20, metadata={"doc": "largest file a worker may write, bytes (RLIMIT_FSIZE)"})
    processes: int = field(default=64, metadata={"doc": "worker process/thread cap (RLIMIT_NPROC), counted per worker in its own user namespace or uid"})
    tmp_size: int = field(default=64 * 2**20, metadata={"doc": "bytes each of a worker's private /tmp and /dev/shm (tmpfs) may hold"})
    output_cap: int = field(default=8192, metadata={"doc": "bytes of worker stdout/stderr kept for the report"})
    seed: int = field(default=20260328, metadata={"doc": "seed for the hidden checks' drawn examples"})
    isolate: bool = field(default=True, metadata={"doc": "put workers behind the strongest walls the machine allows (grader.sandbox); False: rlimits only (--no-sandbox)"})
    use_zygote: bool = field(default=True, metadata={"doc": "fork workers from a warm zygote where fork exists"})
    hidden_paths: tuple = field(default=(), metadata={"doc": "folders learner code must not read (submissions, output), checked where only file permissions can hide them"})
    course_root: Path = field(default=COURSE_ROOT, metadata={"doc": "folder holding notebooks/ (the official lessons)"})
