"""Open each lesson in a real JupyterLab, run it through the UI, and read what it shows.

    .venv/bin/python -m pip install playwright       # optional; no browser download needed
    .venv/bin/python benchmarks/jupyterlab_run.py --solutions --out /tmp/jlab       # every lesson
    .venv/bin/python benchmarks/jupyterlab_run.py --notebooks 03 05 --out /tmp/jlab

nbval and nbclient talk to a kernel directly; a learner meets the lesson through
JupyterLab's front end (rendering, trust, widgets, the Run menu). So this starts
a real JupyterLab server from this Python, on a free localhost port with a token,
over a throw-away folder holding COPIES of the notebooks, with private Jupyter
config/data/runtime dirs and HOME (nothing leaks in from, or out to, the user's
setup). Debian's Chromium, driven by Playwright, opens each notebook, clears its
outputs (Edit menu) and runs it:

- solutions: Run menu > Run All Cells. No error output is allowed, every code
  cell must get an execution count, and every stored figure must render again.
- learner notebooks: Run All stops at the first error, and the first exercise
  stub raises NotImplementedError, which would leave the rest of the lesson
  unchecked. So each cell is run in turn with Shift+Enter (Ctrl+Enter on the
  last, which would otherwise add a cell), as a learner reads the lesson; every
  code cell must run and the only errors allowed are NotImplementedError.

Errors, execution counts and figures are read from the rendered DOM; the
notebook is then saved through the UI (Ctrl+S) and the saved copy, read with
nbformat, must agree. A dialog (the "kernel died" one, say) fails the notebook
at once. One PNG per notebook goes to --out, with the first figure in view.
Exit status 1 if any notebook fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright
except ImportError:  # optional: main() says how to install it
    sync_playwright = None

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# A user setting in the private config dir: no "Jupyter news?" toast over the screenshots.
NO_NEWS = ("lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings",
           '{"fetchNews": "false"}')
DEAD = {"dead", "restarting", "autorestarting", "terminating"}

# What the page shows. JupyterLab renders an error output as text of mime type
# application/vnd.jupyter.stderr, like a stream to stderr (a warning); only the
# traceback's shape tells them apart, so the saved copy is cross-checked below.
DOM_STATE = r"""() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const dialog = document.querySelector('.jp-Dialog');
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = document.querySelector('.jp-Toolbar-kernelName');
  const traceback = t => /Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+/m.test(t);
  const ename = t => (t.match(/^(\S+)\s+Traceback \(most recent call last\)/m)
                      || t.trim().split('\n').pop().match(/^([\w.]+)/) || [null, '?'])[1];
  return {
    // "idle" also while no kernel is attached yet; the kernel's name says when one is.
    status: indicator && kernel && kernel.textContent !== 'No Kernel' ? indicator.getAttribute('data-status') : null,
    dialog: dialog ? dialog.innerText.replace(/\s+/g, ' ').trim() : null,
    active: cells.findIndex(c => c.classList.contains('jp-mod-active')),
    cells: cells.map(c => ({
      code: c.classList.contains('jp-CodeCell'),
      prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
      errors: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
        .map(o => o.textContent).filter(traceback).map(ename),
      figures: [...c.querySelectorAll('.jp-OutputArea-output img')]
        .filter(i => i.complete && i.naturalWidth > 0).length,
    })),
  };
}"""


class Broken(Exception):
    """The run cannot go on: a dialog, a dead kernel, a timeout."""


if sync_playwright is None:
    PlaywrightError = Broken


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    ran: int = 0
    code_cells: int = 0
    errors: list[str] = field(default_factory=list)
    figures: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "ok" if not self.problems else "FAIL: " + "; ".join(self.problems)


def executed(cell: dict) -> bool:
    return bool(re.search(r"\[\d+\]", cell["prompt"]))


def summary(state: dict) -> tuple[int, int, list[str], int]:
    code = [c for c in state["cells"] if c["code"]]
    return (len(code), sum(executed(c) for c in code),
            [e for c in code for e in c["errors"]], sum(c["figures"] for c in code))


def saved_summary(path: Path) -> tuple[int, int, list[str], int]:
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    return (len(code), sum(c.execution_count is not None for c in code),
            [o.ename for o in outputs if o.output_type == "error"],
            sum(any(k.startswith("image/") for k in o.get("data", {})) for o in outputs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(scratch: Path, log: Path):
    """A JupyterLab server over scratch/root, isolated from the user's Jupyter setup."""
    dirs = {name: scratch / name for name in ("root", "home", "config", "data", "runtime")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    settings = dirs["config"] / NO_NEWS[0]
    settings.parent.mkdir(parents=True)
    settings.write_text(NO_NEWS[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(HOME=str(dirs["home"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_DATA_DIR=str(dirs["data"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]))
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
               f"--ServerApp.root_dir={dirs['root']}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, cwd=dirs["root"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield dirs["root"], base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def wait_for(page, done, deadline: float, what: str) -> dict:
    """Poll the page until done(state); a dialog or a dead kernel ends the wait at once."""
    while True:
        state = page.evaluate(DOM_STATE)
        if state["dialog"]:
            raise Broken(f"dialog while {what}: {state['dialog'][:200]}")
        if state["status"] in DEAD:
            raise Broken(f"kernel {state['status']} while {what}")
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise Broken(f"timed out while {what}")
        time.sleep(0.2)


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=top).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def run_all(page, deadline: float) -> None:
    menu(page, "Run", "Run All Cells")
    # Finished: nothing queued, kernel idle, and every code cell ran or one raised
    # (Run All stops there, and the cells after it never get a count).
    wait_for(page, lambda s: s["status"] == "idle" and not any("*" in c["prompt"] for c in s["cells"])
             and (all(executed(c) for c in s["cells"] if c["code"]) or summary(s)[2]),
             deadline, "running all cells")


def run_one_by_one(page, deadline: float) -> None:
    cells = page.evaluate(DOM_STATE)["cells"]
    page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Escape")  # command mode: the keys below act on the notebook
    for index, cell in enumerate(cells):
        active = page.evaluate(DOM_STATE)["active"]
        if active != index:
            raise Broken(f"expected cell {index + 1} to be selected, found cell {active + 1}")
        page.keyboard.press("Shift+Enter" if index < len(cells) - 1 else "Control+Enter")
        if cell["code"]:
            wait_for(page, lambda s: s["status"] == "idle" and executed(s["cells"][index]),
                     deadline, f"running cell {index + 1}")


def check(browser, copy: Path, source: Path, learner: bool, base: str, token: str,
          timeout: float, out: Path) -> Result:
    result = Result(copy.stem)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{base}/lab/tree/{copy.name}?reset&token={token}")
        deadline = time.monotonic() + timeout
        # JupyterLab attaches a long notebook's cells a few at a time: wait for them all.
        cells = len(nbformat.read(copy, as_version=4).cells)
        wait_for(page, lambda s: s["status"] == "idle" and len(s["cells"]) == cells, deadline,
                 "opening the notebook")
        menu(page, "Edit", "Clear Outputs of All Cells")
        start = time.monotonic()
        (run_one_by_one if learner else run_all)(page, deadline)
        result.seconds = time.monotonic() - start
        state = page.evaluate(DOM_STATE)
        result.code_cells, result.ran, result.errors, result.figures = summary(state)
        page.keyboard.press("Control+s")
        page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached", timeout=30_000)
        if summary(state) != saved_summary(copy):
            result.problems.append(f"page shows {summary(state)}, saved copy holds {saved_summary(copy)}")
        if result.ran < result.code_cells:
            result.problems.append(f"{result.code_cells - result.ran} code cells did not run")
        allowed = {"NotImplementedError"} if learner else set()
        if bad := [e for e in result.errors if e not in allowed]:
            result.problems.append("errors: " + ", ".join(bad))
        if not learner and result.figures != (stored := saved_summary(source)[3]):
            result.problems.append(f"{result.figures} figures rendered, the stored notebook has {stored}")
    except (Broken, PlaywrightError) as broken:  # a UI step that never came: say which, go on
        result.problems.append(str(broken).splitlines()[0])
    finally:
        figure = page.locator(".jp-OutputArea-output img")
        if figure.count():
            figure.first.evaluate("img => img.scrollIntoView({block: 'center'})")
        page.screenshot(path=str(out / f"{copy.stem}.png"))
        page.close()
        shut_down_kernels(base, token)
    return result


def shut_down_kernels(base: str, token: str) -> None:
    """One kernel at a time: close each notebook's kernel before the next opens."""
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels", headers=headers)) as r:
        kernels = json.load(r)
    for kernel in kernels:
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{kernel['id']}",
                                                      headers=headers, method="DELETE"))


def select(folder: Path, wanted: list[str]) -> list[Path]:
    """Lessons by number prefix (03) or notebook paths; none named means all of folder."""
    lessons = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not wanted:
        return lessons
    chosen = []
    for item in wanted:
        if item.endswith(".ipynb"):
            chosen.append(Path(item).resolve())
        elif not (match := [p for p in lessons if p.name.startswith(item)]):
            raise SystemExit(f"no lesson {item!r} in {folder}; there are: "
                             + ", ".join(p.stem for p in lessons))
        else:
            chosen += match
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--solutions", action="store_true", help="run solutions/ (the default)")
    kind.add_argument("--notebooks", action="store_true", help="run the learner notebooks/")
    parser.add_argument("lessons", nargs="*", help="lesson numbers (03) or .ipynb paths; default: all")
    parser.add_argument("--out", type=Path, required=True, help="folder for screenshots and the server log")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per notebook")
    args = parser.parse_args(argv)
    if sync_playwright is None:
        raise SystemExit("Playwright is not installed: .venv/bin/python -m pip install playwright")
    if not CHROMIUM.exists():
        raise SystemExit(f"no Chromium at {CHROMIUM}; install it or set CHROMIUM=/path/to/chromium")
    paths = select(ROOT / ("notebooks" if args.notebooks else "solutions"), args.lessons)
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"no notebook at {path}")
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    print(f"{'notebook':<36} {'seconds':>8} {'code cells run':>15} {'errors':>7} {'figures':>8}  verdict")
    with tempfile.TemporaryDirectory(prefix="jupyterlab_run_") as scratch, \
            jupyterlab(Path(scratch), args.out / "jupyterlab-server.log") as (root, base, token), \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        for path in paths:
            copy = Path(shutil.copy(path, root / path.name))
            r = check(browser, copy, path, args.notebooks, base, token, args.timeout, args.out)
            results.append(r)
            print(f"{r.name:<36} {r.seconds:8.1f} {f'{r.ran}/{r.code_cells}':>15} {len(r.errors):>7} "
                  f"{r.figures:>8}  {r.verdict}", flush=True)
        browser.close()
    print(f"screenshots and the server log: {args.out}")
    return 0 if all(r.verdict == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
