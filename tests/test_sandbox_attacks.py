"""Hostile learners, graded by the real CLI as root, as an ordinary user, and as
root in a simulated container (no CAP_SYS_ADMIN, namespaces refused).

Each file in tests/fixtures/attacks/ is lesson 03's `scale_gradients` cell of an
attacker: it tries one way out of the sandbox and sets `_stolen` if it worked;
a shared tail then answers correctly (full marks) if it did, and wrongly (what
an honest wrong answer earns) if it did not. All attackers are graded in one
`grade-class` batch beside two honest classmates, whose results must not move.
Afterwards nothing of theirs may be left: no process, no file.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from conftest import FIXTURES, ROOT
from grading_fixtures import CORRECT, FULL, Fixture, notebook_for

ATTACKS = sorted((FIXTURES / "attacks").glob("*.py"))
TOKEN = uuid.uuid4().hex[:8]
TAIL = """
if _stolen:  # the attack worked: a correct answer
    def scale_gradients(grads, scale):
        return [scale * float(g) for g in grads]
else:  # what an honest wrong answer earns
    def scale_gradients(grads, scale):
        return [0.0 for g in grads]
"""
HONEST_WRONG = {**FULL, "scale_gradients": 1.0}
PYTHON = sys.executable
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                   reason="the sandbox's walls are Linux's")]


def attack_source(path: Path, values: dict) -> str:
    """The attacker's cell: constants, the attack (a wall that raises stops it,
    as a failed attempt), then the tail that answers according to `_stolen`."""
    header, body = path.read_text().split("\n", 1)
    assert header.startswith("# Attack: "), f"{path.name}: the first line says what it tries"
    constants = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    attempt = "".join(f"    {line}\n" if line else "\n" for line in body.splitlines())
    return f"{header}\n{constants}_stolen = False\ntry:\n{attempt}except Exception:\n    pass\n{TAIL}"


def write_notebook(path: Path, name: str, scale_gradients: str) -> Path:
    nbformat.write(notebook_for(Fixture(name, {"scale_gradients": scale_gradients}, {})), path)
    path.chmod(0o644)
    return path


def _git_dir() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute",
                          "--git-common-dir"], capture_output=True, text=True).stdout.strip()
    return out or str(ROOT / ".git")


# -- who runs the grader ----------------------------------------------------------

class Identity:
    """Runs Python (the grader's CLI, mostly) as root, as an ordinary user, or as
    root in a simulated container, and knows which walls it must get there."""

    def __init__(self, name: str, uid: int, gid: int, home: Path, wrapper: list[str], walls: str):
        self.name, self.uid, self.gid, self.home = name, uid, gid, home
        self.wrapper, self.walls = wrapper, walls

    def command(self, *args: str) -> list[str]:
        return [*self.wrapper, PYTHON, *args]

    def env(self) -> dict:
        return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(self.home), "LANG": "C.UTF-8"}

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("-m", "grader", *args), capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=self.env())

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command("-m", "grader", *args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=ROOT, env=self.env())


def _scratch(owner: int | None = None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="mp-attacks-"))
    folder.chmod(0o755)
    if owner is not None:
        os.chown(folder, owner, -1)
    return folder


NAMESPACE_WALLS = "allowlist-root+pid-ns+net-ns"
TESTS = ROOT / "tests"


@pytest.fixture(scope="module", params=["root", "ordinary user", "container"])
def identity(request):
    home = _scratch()
    try:
        yield from _identity(request.param, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _identity(kind: str, home: Path):
    root = os.geteuid() == 0
    if kind == "root" or kind == "container":
        if not root:
            pytest.skip("runs as root only where the suite does (CI)")
        if kind == "root":
            yield Identity(kind, 0, 0, home, [], NAMESPACE_WALLS)
        elif not shutil.which("capsh"):
            pytest.skip("no capsh to drop CAP_SYS_ADMIN with")
        else:  # Gradescope: root in Docker, no CAP_SYS_ADMIN, namespaces refused
            yield Identity(kind, 0, 0, home, [PYTHON, str(TESTS / "simulated_container.py"), "--"],
                           "own-uid+landlock")
        return
    if not root:  # the suite itself is an ordinary user
        yield Identity(kind, os.geteuid(), os.getegid(), home, [], NAMESPACE_WALLS)
        return
    if not shutil.which("useradd"):
        pytest.skip("no useradd to create a throw-away user")
    name = f"mpg{TOKEN[:6]}"
    subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name], check=True)
    try:
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield Identity(kind, entry.pw_uid, entry.pw_gid, home,
                       [PYTHON, str(TESTS / "run_as_user.py"), str(entry.pw_uid), str(entry.pw_gid), "--"],
                       NAMESPACE_WALLS)
    finally:
        subprocess.run(["userdel", name], check=False)


def _walls_or_skip(identity: Identity) -> None:
    probe = subprocess.run(identity.command("-c", (
        "from grader.sandbox import in_force; w = in_force(); print(w.describe(), w.missing())")),
        capture_output=True, text=True, cwd=ROOT, env=identity.env(), timeout=120)
    walls, _, why = probe.stdout.strip().partition(" ")
    if not walls.startswith(identity.walls):
        pytest.skip(f"{identity.name}: expected walls {identity.walls}, this machine gives "
                    f"{walls or 'none'} ({why or probe.stderr[-300:]})")


# -- the traces an attack could leave ---------------------------------------------

def _attack_processes() -> list[str]:
    """Live processes an attack started (zombies, dead and waiting to be reaped, do not count)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            named = comm.read_text().startswith("mpatk" + TOKEN)
            if named and (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(comm.parent.name)
        except OSError:
            pass
    return found


def _attack_files(places: list[Path]) -> list[str]:
    found = []
    for place in places:
        if place.is_dir():
            found += [str(p) for p in place.glob(f"*mp-attack-{TOKEN}*")]
    return found


def _no_traces(identity: Identity) -> None:
    import sysconfig
    deadline = time.monotonic() + 5
    while _attack_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _attack_processes() == [], "attack processes outlived the grader"
    places = [Path("/tmp"), Path("/dev/shm"), Path(sysconfig.get_paths()["purelib"]), ROOT, identity.home]
    assert _attack_files(places) == []


# -- a class with attackers in it ------------------------------------------------------

def _scores(report: dict) -> dict:
    scores: dict[str, float] = {}
    for test in report["tests"]:
        scores[test["exercise"]] = scores.get(test["exercise"], 0.0) + test["score"]
    return scores


@pytest.fixture(scope="module")
def graded_class(identity):
    _walls_or_skip(identity)
    work = _scratch()
    subs, out = work / "submissions", work / "out"
    subs.mkdir(mode=0o755)
    out.mkdir(mode=0o755)
    os.chown(out, identity.uid, identity.gid)
    listener = socket.create_server(("127.0.0.1", 0))
    values = {"TOKEN": TOKEN, "COURSE": str(ROOT), "GIT_DIR": _git_dir(),
              "OTHER_CHECKOUTS": str(ROOT.parent), "SIBLING": str(subs / "ada.ipynb"),
              "OUT": str(out), "VICTIM": "ada", "PORT": listener.getsockname()[1]}
    write_notebook(subs / "ada.ipynb", "ada", CORRECT["scale_gradients"])
    write_notebook(subs / "bob.ipynb", "bob", "def scale_gradients(grads, scale):\n"
                                              "    return [0.0 for g in grads]\n")
    attackers = {}
    for path in ATTACKS:
        copies = 2 if path.stem == "persistence" else 1  # the second finds what the first left
        for copy in range(copies):
            learner = f"atk-{path.stem}" + (f"-{copy}" if copies > 1 else "")
            write_notebook(subs / f"{learner}.ipynb", learner, attack_source(path, values))
            attackers[learner] = path.stem
    try:
        first = identity.run("grade-class", str(subs), "--out", str(out), "--jobs", "2",
                             "--timeout", "5")
        reports = {p.parent.name: json.loads(p.read_text()) for p in (out / "reports").glob("*/*.json")}
        again = identity.run("grade-class", str(subs), "--out", str(out), "--jobs", "2")
        yield {"first": first, "again": again, "reports": reports, "attackers": attackers,
               "out": out, "identity": identity}
    finally:
        listener.close()
        shutil.rmtree(work, ignore_errors=True)


def test_the_batch_runs_behind_the_walls_expected_and_says_so(graded_class):
    first = graded_class["first"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Sandbox walls: " in first.stdout
    for report in graded_class["reports"].values():
        assert report["receipt"]["isolation"].startswith(graded_class["identity"].walls)


# Attacks that burn their own worker's CPU may also time out their own checks
# under a loaded machine: the grade they earned, never more than an honest one.
SELF_STARVING = {"cpu_starvation", "fork_storm"}


@pytest.mark.parametrize("attack", [p.stem for p in ATTACKS])
def test_each_attack_earns_what_an_honest_wrong_answer_earns(graded_class, attack):
    reports = graded_class["reports"]
    for learner, name in graded_class["attackers"].items():
        if name != attack:
            continue
        scores, why = _scores(reports[learner]), (learner, reports[learner]["tests"])
        if attack in SELF_STARVING:
            assert scores.keys() == HONEST_WRONG.keys(), why
            assert all(scores[ex] <= HONEST_WRONG[ex] for ex in scores), why
            assert scores["scale_gradients"] < FULL["scale_gradients"], why
        else:
            assert scores == HONEST_WRONG, why


def test_honest_classmates_keep_their_results(graded_class):
    reports = graded_class["reports"]
    assert _scores(reports["ada"]) == FULL, reports["ada"]["tests"]
    assert _scores(reports["bob"]) == HONEST_WRONG, reports["bob"]["tests"]


def test_no_report_is_forged_and_a_resumed_run_keeps_the_true_ones(graded_class):
    again, out = graded_class["again"], graded_class["out"]
    assert again.returncode == 0, again.stderr[-3000:]
    assert " 0 graded now" in again.stdout, again.stdout
    assert sorted(p.name for p in (out / "reports").iterdir()) == sorted(graded_class["reports"])
    assert _scores(json.loads((out / "reports" / "ada" / "ada.json").read_text())) == FULL


def test_attackers_leave_no_process_and_no_file_behind(graded_class):
    _no_traces(graded_class["identity"])


# -- one file at a time -----------------------------------------------------------

def test_grade_alone_hides_the_folder_that_holds_the_notebook(identity):
    _walls_or_skip(identity)
    work = _scratch()
    try:
        ada = write_notebook(work / "ada.ipynb", "ada", CORRECT["scale_gradients"])
        spy = write_notebook(work / "spy.ipynb", "spy", attack_source(
            FIXTURES / "attacks" / "sibling_submission.py", {"SIBLING": str(ada)}))
        report = identity.home / "spy.json"
        proc = identity.run("grade", str(spy), "--json", str(report))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _scores(json.loads(report.read_text())) == HONEST_WRONG
        assert "Note:" not in proc.stderr  # full walls: no warning to give
    finally:
        shutil.rmtree(work, ignore_errors=True)


SPINNER = """# Attack: keep spinning, in processes of my own, after the grader is killed.
import ctypes, os
for _ in range(4):
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, ("mpatk" + TOKEN).encode(), 0, 0, 0)
        while True:
            pass
def scale_gradients(grads, scale):
    while True:
        pass
"""


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every process below `pid`, so a reused pid is not mistaken."""
    children: dict[int, list[int]] = {}
    starts = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        starts[child] = fields[19]
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add((child, starts[child]))
            todo.append(child)
    return found


def _alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    alive = set()
    for pid, start in processes:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.add((pid, start))
    return alive


def test_kill_9_of_grade_mid_check_leaves_no_process(identity):
    _walls_or_skip(identity)
    work = _scratch()
    try:
        nb = write_notebook(work / "spinner.ipynb", "spinner",
                            SPINNER.replace("TOKEN", repr(TOKEN)))
        grade = identity.start("grade", str(nb), "--timeout", "120")
        deadline = time.monotonic() + 120
        while len(_attack_processes()) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_attack_processes()) == 4, "the spinners never started"
        tree = _descendants(grade.pid)
        os.kill(grade.pid, signal.SIGKILL)
        grade.wait()
        deadline = time.monotonic() + 5
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(tree) == set(), "zygotes or workers outlived a killed grader"
        while _attack_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _attack_processes() == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
