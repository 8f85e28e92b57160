"""What learner code can see and do inside a worker, and how the walls are chosen."""

import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT
from grader.config import GraderConfig
from grader.runner import CHECKS_DIR, check_points
from grader.sandbox import WORKER_ENV, Worker, WorkerTimeout, in_force, launch
from grader.sandbox import allowlist, uids

LINUX = sys.platform.startswith("linux")
PROBE = """
import os, resource, sys
seen = {
    "env": sorted(os.environ),
    "argv": sys.argv, "orig_argv": sys.orig_argv, "isolated": sys.flags.isolated,
    "cmdline": open("/proc/self/cmdline", "rb").read().decode("latin-1")
               if os.path.exists("/proc/self/cmdline") else None,
    "grader_modules": [m for m in sys.modules if m.split(".")[0] == "grader"],
    "main_file": getattr(sys.modules["__main__"], "__file__", None),
    "uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
    "limits": {name: resource.getrlimit(getattr(resource, name))[0]
               for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE")},
}
def readable(path):
    try:
        with open(path, "rb") as f:
            return len(f.read(1)) >= 0
    except OSError:
        return False
seen["read_checks"] = readable(CHECKS + "/test_03_loss_scaling.py")
"""
NAMESPACES = in_force().mode == "namespaces"
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="no namespace walls on this machine: "
                                      + in_force().missing())


def _run(worker: Worker, source: str, name: str = "seen"):
    worker.request({"op": "exec", "source": source}, 10, "probing")
    return worker.request({"op": "get", "target": name}, 10, "probing")["ok"]


@pytest.fixture(params=["zygote", "spawn"])
def seen(request):
    config = GraderConfig(use_zygote=request.param == "zygote")
    worker = Worker(config)
    try:
        return _run(worker, f"CHECKS = {str(CHECKS_DIR)!r}\n" + PROBE), config, request.param
    finally:
        worker.kill()


def test_learner_code_sees_a_plain_interpreter_not_a_grader(seen):
    seen, _, mode = seen
    assert set(seen["env"]) <= set(WORKER_ENV) | {"HOME", "TMPDIR"}
    assert seen["grader_modules"] == [] and seen["main_file"] is None
    assert seen["isolated"] == 0
    if mode == "zygote" and LINUX:  # a Jupyter kernel's command line, byte for byte
        assert seen["orig_argv"][1:3] == ["-m", "ipykernel_launcher"]
        assert seen["argv"][0].endswith("ipykernel_launcher.py") and seen["argv"][1] == "-f"
        assert seen["cmdline"] == "\0".join(seen["orig_argv"]) + "\0"


def test_every_worker_runs_under_the_configured_limits(seen):
    seen, config, _ = seen
    assert seen["limits"]["RLIMIT_AS"] == config.memory_limit
    assert seen["limits"]["RLIMIT_CPU"] == config.cpu_seconds
    assert seen["limits"]["RLIMIT_FSIZE"] == config.file_size
    assert seen["limits"]["RLIMIT_CORE"] == 0


@needs_namespaces
def test_a_worker_is_an_ordinary_uid_with_its_own_process_cap_and_no_checks(seen):
    seen, config, mode = seen
    if mode != "zygote":
        pytest.skip("spawned workers (platforms without fork) get rlimits only")
    assert seen["uid"] == 1000 and seen["pid"] == 1 and seen["cwd"] == "/tmp"
    assert seen["limits"]["RLIMIT_NPROC"] == config.processes
    assert seen["read_checks"] is False


WALLS = """
import os, subprocess
seen = {"root": sorted(os.listdir("/")), "proc": sorted(p for p in os.listdir("/proc") if p.isdigit()),
        "tmp": sorted(os.listdir("/tmp")), "shm": sorted(os.listdir("/dev/shm"))}
seen["grader"] = sorted(os.listdir(GRADER)) if os.path.isdir(GRADER) else None
seen["course"] = sorted(os.listdir(COURSE)) if os.path.isdir(COURSE) else []
for place in ("/tmp/mine", "/dev/shm/mine", "/usr/mine", PURELIB + "/mine.pth", "/mine"):
    try:
        open(place, "w").close()
        seen.setdefault("wrote", []).append(place)
    except OSError as exc:
        seen.setdefault("refused", []).append(exc.errno)
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    seen["remount"] = libc.mount(None, b"/usr", None, 32 | 4096, None)  # MS_REMOUNT|MS_BIND: rw
    child = os.fork()
    if child == 0:  # not a session leader, so only the filter can refuse it
        os._exit(0 if libc.setsid() != -1 else ctypes.get_errno())
    seen["setsid"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
except OSError:
    pass
"""


@needs_namespaces
def test_a_worker_sees_only_the_allowlist_read_only_and_a_private_tmp():
    import sysconfig
    values = {"GRADER": str(allowlist.GRADER_DIR), "COURSE": str(ROOT),
              "PURELIB": sysconfig.get_paths()["purelib"]}
    source = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + WALLS
    first, second = Worker(GraderConfig()), Worker(GraderConfig())
    try:
        seen = _run(first, source)
        again = _run(second, source)  # another worker: its own /tmp, empty
    finally:
        first.kill()
        second.kill()
    assert set(seen["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin",
                                 "sys", "tmp", "usr"} | {Path(p).parts[1] for p in
                                                          allowlist.plan(str(ROOT))["read"]}
    assert seen["proc"] == ["1"]
    assert set(seen["course"]) <= {".venv", "grader"}  # only the way to the allowed folders
    assert seen["grader"] == ["__init__.py", "sandbox", "wire.py"]  # no checks, no judge
    # empty, but for the way to a course that itself lives under /tmp
    under_tmp = {Path(p).parts[2] for p in allowlist.plan(str(ROOT))["read"] if p.startswith("/tmp/")}
    assert set(seen["tmp"]) == set(again["tmp"]) == under_tmp
    assert seen["shm"] == [] and again["shm"] == []
    assert seen["wrote"] == ["/tmp/mine", "/dev/shm/mine"]
    assert seen["remount"] == -1 and seen["setsid"] == 1  # EPERM


@needs_namespaces
def test_a_fork_bomb_stops_at_the_process_cap():
    worker = Worker(GraderConfig(processes=16))
    try:
        made = _run(worker, "import os, time\nmade = 0\nfor _ in range(100):\n"
                            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
                            "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
                            "    made += 1\n", "made")
    finally:
        worker.kill()
    assert 0 < made < 16


@needs_namespaces
def test_the_private_tmp_is_bounded_in_size():
    worker = Worker(GraderConfig(tmp_size=2**20))
    try:
        wrote = _run(worker, "wrote = 0\ntry:\n    with open('/tmp/big', 'wb') as f:\n"
                             "        for _ in range(64):\n            f.write(b'x' * 2**16)\n"
                             "            f.flush()\n            wrote += 2**16\nexcept OSError:\n    pass\n",
                     "wrote")
    finally:
        worker.kill()
    assert 0 < wrote <= 2**20


def test_a_submission_budget_ends_a_request_before_its_own_timeout():
    worker = Worker(GraderConfig(), deadline=time.monotonic() + 1.0)
    start = time.monotonic()
    with pytest.raises(WorkerTimeout):
        worker.request({"op": "exec", "source": "while True:\n    pass\n"}, 30.0, "looping")
    assert time.monotonic() - start < 5


# Root of a user and mount namespace of its own, with mounts private to it.
OWN_MOUNTS = """
import os, sys, tempfile
from grader.sandbox import allowlist, kernel, walls
uid, gid = os.geteuid(), os.getegid()
kernel.unshare(kernel.CLONE_NEWUSER | kernel.CLONE_NEWNS)
kernel.write_text("/proc/self/setgroups", "deny")
kernel.write_text("/proc/self/uid_map", f"0 {uid} 1")
kernel.write_text("/proc/self/gid_map", f"0 {gid} 1")
kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
"""

REMOUNT_EACH = OWN_MOUNTS + """
new = tempfile.mkdtemp()
kernel.mount("tmpfs", new, "tmpfs", 0, "size=1m")
for path in allowlist.plan(sys.argv[1])["read"]:
    walls._bind(os.open(path, os.O_PATH), new + path)
points = walls.mount_points(new)
for point in points:
    walls.remount_read_only(point)
refused = 0
for point in points:
    try:
        open(os.path.join(point, "mine"), "w") if os.path.isdir(point) else open(point, "a")
    except OSError as exc:
        refused += exc.errno == 30
print(len(points), refused)
"""


@needs_namespaces
def test_without_mount_setattr_each_bind_is_remounted_read_only_keeping_its_locked_flags():
    """The path for kernels before 5.12, tried on this machine's own mounts."""
    out = subprocess.run([sys.executable, "-c", REMOUNT_EACH, str(ROOT)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    points, refused = map(int, out.stdout.split())
    assert points > 3 and refused == points


BIND_COVERED = OWN_MOUNTS + """
stage = tempfile.mkdtemp()
course = os.path.join(stage, "course")
os.mkdir(course)
with open(os.path.join(course, "lesson.txt"), "w") as f:
    f.write("still here")
fd = os.open(course, os.O_PATH)
kernel.mount("tmpfs", stage, "tmpfs", 0, "size=1m")  # as the staging root covers /tmp
walls._bind(fd, stage + course)
print(open(os.path.join(stage + course, "lesson.txt")).read())
"""


@needs_namespaces
def test_a_course_below_the_folder_the_root_is_staged_in_is_still_bound():
    """A course (and its .venv) in /tmp: the staging tmpfs over /tmp must not hide it."""
    out = subprocess.run([sys.executable, "-c", BIND_COVERED], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "still here", out.stderr[-2000:]


def _named(token: str) -> list[str]:
    """Live processes with this name (a zombie is dead, only not yet reaped)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if (comm.read_text().strip() == token
                    and (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"):
                found.append(comm.parent.name)
        except OSError:
            pass
    return found


SPAWN_AND_SPIN = ("import ctypes, os\nfor _ in range(3):\n    if os.fork() == 0:\n"
                  "        ctypes.CDLL(None).prctl(15, {token!r}.encode(), 0, 0, 0)\n"
                  "        while True:\n            pass\nwhile True:\n    pass\n")


@pytest.mark.skipif(not LINUX, reason="process names via /proc")
def test_a_worker_killed_mid_request_is_reported_and_leaves_nothing_behind():
    token = "mpx" + uuid.uuid4().hex[:8]
    worker = Worker(GraderConfig())
    with pytest.raises(WorkerTimeout):
        worker.request({"op": "exec", "source": SPAWN_AND_SPIN.format(token=token)}, 1.0, "looping")
    deadline = time.monotonic() + 5
    while _named(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _named(token) == []


@pytest.mark.skipif(not LINUX, reason="process names via /proc")
def test_workers_die_with_a_killed_grader_forks_and_all():
    token = "mpx" + uuid.uuid4().hex[:8]
    code = ("from grader.config import GraderConfig\nfrom grader.sandbox import Worker\n"
            "w = Worker(GraderConfig())\n"
            f"w.request({{'op': 'exec', 'source': {SPAWN_AND_SPIN.format(token=token)!r}}}, 100.0, 'x')\n")
    grader = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while len(_named(token)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_named(token)) == 3
    grader.kill()
    grader.wait()
    deadline = time.monotonic() + 5
    while _named(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _named(token) == []


# -- the boundary in the code -------------------------------------------------------

JUDGE_SIDE = ("judge", "launch", "allowlist", "uids")


def _module_path(module: str) -> Path | None:
    base = allowlist.GRADER_DIR.parent / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _grader_imports(path: Path) -> set[str]:
    """The grader modules a file imports, wherever in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grader"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("grader")}
    return {m for m in found if _module_path(m)}


def test_the_judge_side_never_imports_the_learner_side():
    sandbox = allowlist.GRADER_DIR / "sandbox"
    for name in JUDGE_SIDE:
        imported = _grader_imports(sandbox / f"{name}.py")
        assert not any(m.endswith((".worker", ".zygote", ".walls")) for m in imported), (name, imported)
    # and at run time: a judge that used a worker holds none of the learner's modules
    out = subprocess.run([sys.executable, "-c", (
        "import sys\nfrom grader.config import GraderConfig\nfrom grader.sandbox import Worker\n"
        "w = Worker(GraderConfig()); w.request({'op': 'ping'}, 10, 'x'); w.kill()\n"
        "print(sorted(m for m in sys.modules if m.startswith('grader.sandbox.')))")],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    loaded = eval(out.stdout.strip())  # noqa: S307 - our own printout of module names
    assert not {"grader.sandbox.worker", "grader.sandbox.walls", "grader.sandbox.zygote"} & set(loaded)


def test_the_learner_side_imports_only_the_files_a_worker_can_see():
    visible = {f"grader.{name[:-3].replace('/', '.')}".removesuffix(".__init__")
               for name in allowlist.LEARNER_MODULES}
    todo, seen = ["grader.sandbox.worker"], set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _grader_imports(_module_path(module))
    assert seen <= visible, seen - visible


# -- choosing the walls -------------------------------------------------------------------

def test_worker_uids_avoid_login_users_systemd_and_subordinate_ranges():
    first, last = uids.UID_BASE, uids.UID_BASE + uids.UID_SLOTS - 1
    assert 60578 <= first and last <= 61183  # systemd's unused gap: not DynamicUser (61184-65519)


def test_a_class_is_refused_without_walls_and_the_refusal_names_the_missing_piece(monkeypatch):
    monkeypatch.setitem(launch._in_force, True, launch.Walls(
        "none", ("rlimits",), ["namespaces: user namespaces are not allowed here (EPERM)"]))
    why = launch.refusal(GraderConfig())
    assert "user namespaces are not allowed here" in why and "--no-sandbox" in why


def test_own_uid_walls_refuse_a_class_while_other_users_can_read_the_course(monkeypatch):
    monkeypatch.setitem(launch._in_force, True, launch.Walls(
        "uid", ("own-uid", "file-permissions", "rlimits", "nproc"), []))
    open_folder = Path(tempfile.mkdtemp())
    open_folder.chmod(0o755)
    hidden = open_folder / "submissions"
    hidden.mkdir()
    (hidden / "ada.ipynb").write_text("{}")
    hidden.chmod(0o755)
    (hidden / "ada.ipynb").chmod(0o644)
    monkeypatch.setattr(allowlist, "private_paths", lambda root, extra=(): [hidden])
    assert str(hidden) in launch.refusal(GraderConfig(), [hidden])
    hidden.chmod(0o750)
    assert launch.refusal(GraderConfig(), [hidden]) is None
    shutil.rmtree(open_folder)


@pytest.mark.skipif(os.geteuid() != 0 or not LINUX, reason="simulates a container as root")
def test_in_a_container_without_landlock_grade_class_refuses_while_the_checks_are_readable(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    command = [sys.executable, str(ROOT / "tests" / "simulated_container.py"), "--no-landlock", "--",
               sys.executable, "-m", "grader", "grade-class", str(subs), "--out", str(tmp_path / "out")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to start" in proc.stderr and "other users can read" in proc.stderr
    assert str(CHECKS_DIR) in proc.stderr
    anyway = subprocess.run(command + ["--no-sandbox"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert anyway.returncode == 0, anyway.stdout + anyway.stderr
    assert "Sandbox walls: none (rlimits only)" in anyway.stdout
    # `grade` never refuses: it says so, in one line
    one = subprocess.run(command[:7] + ["grade", str(ROOT / "tests/fixtures/grading/correct.ipynb")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    full = sum(check_points("03_loss_scaling").values())
    assert one.returncode == 0 and f"Score: {full:g} / {full:g}" in one.stdout, one.stdout + one.stderr
    assert [line for line in one.stderr.splitlines() if line.startswith("Note: no full sandbox")]
