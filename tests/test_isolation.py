"""What learner code can see and do inside a worker."""

import pytest

from grader import isolation
from grader.config import GraderConfig
from grader.runner import CHECKS_DIR
from grader.sandbox import Worker, WORKER_ENV

PROBE = """
import os, resource, sys
seen = {
    "env": sorted(os.environ),
    "argv": sys.argv,
    "cmdline": open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").strip().decode(),
    "grader_modules": [m for m in sys.modules if m.split(".")[0] == "grader"],
    "main_file": getattr(sys.modules["__main__"], "__file__", None),
    "uid": os.getuid(),
    "limits": {name: resource.getrlimit(getattr(resource, name))[0]
               for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC")},
}
try:
    open(CHECKS + "/test_03_loss_scaling.py").read()
    seen["read_checks"] = True
except OSError:
    seen["read_checks"] = False
"""


@pytest.fixture(params=["zygote", "spawn"])
def seen(request):
    config = GraderConfig(use_zygote=request.param == "zygote")
    worker = Worker(config)
    try:
        worker.request({"op": "exec", "source": f"CHECKS = {str(CHECKS_DIR)!r}\n" + PROBE}, 10, "probing")
        return worker.request({"op": "get", "target": "seen"}, 10, "probing")["ok"], config
    finally:
        worker.kill()


def test_learner_code_sees_a_plain_interpreter_not_a_grader(seen):
    seen, _ = seen
    assert set(seen["env"]) <= set(WORKER_ENV) | {"HOME"}
    assert seen["argv"] == [""]
    assert "grader" not in seen["cmdline"]
    assert seen["grader_modules"] == [] and seen["main_file"] is None


def test_every_worker_runs_under_the_configured_limits(seen):
    seen, config = seen
    assert seen["limits"]["RLIMIT_AS"] == config.memory_limit
    assert seen["limits"]["RLIMIT_CPU"] == config.cpu_seconds
    assert seen["limits"]["RLIMIT_FSIZE"] == config.file_size


@pytest.mark.skipif(not isolation.can_isolate(), reason="needs root on Linux")
def test_as_root_workers_get_their_own_uid_and_cannot_read_the_checks(seen):
    seen, config = seen
    assert seen["uid"] >= isolation.UID_BASE
    assert seen["limits"]["RLIMIT_NPROC"] == config.processes
    assert seen["read_checks"] is False


def test_a_worker_killed_mid_request_is_reported_and_leaves_nothing_behind():
    from grader.sandbox import WorkerTimeout
    worker = Worker(GraderConfig())
    with pytest.raises(WorkerTimeout):
        worker.request({"op": "exec", "source": "import os\nfor _ in range(3):\n    os.fork()\n"
                                                 "while True:\n    pass"}, 1.0, "looping")
    if isolation.can_isolate():
        import subprocess
        ps = subprocess.run(["ps", "-o", "stat=", "-u", str(worker.uid)], capture_output=True, text=True)
        assert all(s.startswith("Z") for s in ps.stdout.split()), ps.stdout


@pytest.mark.skipif(not isolation.can_isolate(), reason="needs root on Linux")
def test_workers_die_with_a_killed_grader_forks_and_all():
    import subprocess
    import sys
    import time
    code = ("from grader.config import GraderConfig\nfrom grader.sandbox import Worker\n"
            "w = Worker(GraderConfig())\nprint(w.uid, flush=True)\n"
            "w.request({'op': 'exec', 'source': 'import os\\nfor _ in range(3):\\n    os.fork()\\n"
            "while True:\\n    pass'}, 100.0, 'looping')\n")
    grader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    uid = grader.stdout.readline().strip()
    time.sleep(0.5)
    grader.kill()
    grader.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-o", "stat=", "-u", uid], capture_output=True, text=True).stdout.split()
        if all(s.startswith("Z") for s in ps):
            break
        time.sleep(0.1)
    assert all(s.startswith("Z") for s in ps), ps
