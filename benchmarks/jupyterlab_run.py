"""Open each lesson in a real JupyterLab, run it through the UI, and read what it shows.

    .venv/bin/python -m pip install playwright       # optional; uses /usr/bin/chromium
    .venv/bin/python benchmarks/jupyterlab_run.py --solutions --out /tmp/jlab       # every lesson
    .venv/bin/python benchmarks/jupyterlab_run.py --notebooks 03 05 --out /tmp/jlab

nbval talks to a kernel; a learner meets the lesson through JupyterLab. This starts
a real JupyterLab from this Python (free localhost port, token, private config,
data and runtime dirs and HOME) over a throw-away folder of COPIES of the
notebooks; Chromium, driven by Playwright, opens each, clears its outputs (Edit
menu) and runs it through the UI:
- solutions: Run > Run All Cells. No error allowed, every code cell must run and
  every figure the stored notebook has must render.
- learner notebooks: Run All would stop at the first stub's NotImplementedError,
  leaving the rest unchecked, so each cell is run with Shift+Enter as a learner
  reads (Ctrl+Enter on the last, which would add a cell). Every code cell must
  run; the only errors allowed are NotImplementedError.
Errors, execution counts and figures are read from the page; the notebook saved
(Ctrl+S) and read with nbformat must agree. A dialog ("kernel died") fails it at
once. --out gets a PNG per notebook, the saved notebooks and the server log.
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
    from playwright.sync_api import Error as PlaywrightError, sync_playwright
except ImportError:  # optional: main() says how to install it
    sync_playwright = PlaywrightError = None

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# A user setting in the private config dir: no "Jupyter news?" toast over the screenshots.
NO_NEWS = ("lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings",
           '{"fetchNews": "false"}')
DEAD = {"dead", "restarting", "autorestarting", "terminating"}

# What the page shows. JupyterLab renders an error, like a warning, as text of type
# application/vnd.jupyter.stderr: only the traceback's shape tells them apart.
DOM_STATE = r"""() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const dialog = document.querySelector('.jp-Dialog');
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const kernel = document.querySelector('.jp-Toolbar-kernelName');
  const stderr = c => [...c.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(o => o.textContent);
  const traceback = t => /Traceback \(most recent call last\)|^\s*Cell In\[\d+\], line \d+/m.test(t);
  const ename = t => (t.match(/^(\S+)\s+Traceback \(most recent call last\)/m)
                      || t.trim().split('\n').pop().match(/^([\w.]+)/) || [null, '?'])[1];
  return {
    // "idle" also while no kernel is attached yet; the kernel's name says when one is.
    status: kernel && kernel.textContent !== 'No Kernel' ? indicator?.getAttribute('data-status') : null,
    dialog: dialog ? dialog.innerText.replace(/\s+/g, ' ').trim() : null,
    active: cells.findIndex(c => c.classList.contains('jp-mod-active')),
    cells: cells.map(c => ({
      code: c.classList.contains('jp-CodeCell'),
      prompt: (c.querySelector('.jp-InputPrompt') || {}).textContent || '',
      errors: stderr(c).filter(traceback).map(ename),
      warnings: stderr(c).filter(t => !traceback(t)).length,
      figures: [...c.querySelectorAll('.jp-OutputArea-output img')].filter(i => i.naturalWidth > 0).length,
    })),
  };
}"""


class Broken(Exception):
    """The run cannot go on: a dialog, a dead kernel, a timeout."""


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    ran: int = 0
    code_cells: int = 0
    errors: list[str] = field(default_factory=list)
    figures: int = 0
    stderr: int = 0  # outputs on stderr that are not tracebacks: warnings, logging
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


def api(base: str, token: str, path: str, method: str = "GET"):
    """The server's JSON answer, or None while it does not answer."""
    request = urllib.request.Request(f"{base}/api/{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")
    except OSError:
        return None


@contextmanager
def jupyterlab(scratch: Path, log: Path):
    """A JupyterLab server over scratch/root, isolated from the user's Jupyter setup."""
    dirs = {name: scratch / name for name in ("root", "home", "config", "data", "runtime")}
    settings = dirs["config"] / NO_NEWS[0]
    for d in [*dirs.values(), settings.parent]:
        d.mkdir(parents=True, exist_ok=True)
    settings.write_text(NO_NEWS[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(HOME=str(dirs["home"]), JUPYTER_CONFIG_DIR=str(dirs["config"]),
               JUPYTER_DATA_DIR=str(dirs["data"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]))
    with socket.socket() as sock:  # a free port; --ServerApp.port_retries=0 says if it was taken since
        sock.bind(("127.0.0.1", 0))
        port, token = sock.getsockname()[1], secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={dirs['root']}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    command += ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        server = subprocess.Popen(command, env=env, cwd=dirs["root"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not api(base, token, "status"):  # None until the server answers
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
        if state["dialog"] or state["status"] in DEAD:
            raise Broken(f"{state['dialog'] or 'kernel ' + state['status']} while {what}"[:250])
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
        cells = len(nbformat.read(copy, as_version=4).cells)  # JupyterLab attaches them a few at a time
        wait_for(page, lambda s: s["status"] == "idle" and len(s["cells"]) == cells, deadline, "opening it")
        menu(page, "Edit", "Clear Outputs of All Cells")
        start = time.monotonic()
        (run_one_by_one if learner else run_all)(page, deadline)
        result.seconds = time.monotonic() - start
        state = page.evaluate(DOM_STATE)
        result.code_cells, result.ran, result.errors, result.figures = summary(state)
        result.stderr = sum(c["warnings"] for c in state["cells"])
        page.keyboard.press("Control+s")
        page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached", timeout=30_000)
        if summary(state) != saved_summary(copy):
            result.problems.append(f"page shows {summary(state)}, saved copy holds {saved_summary(copy)}")
        shutil.copy(copy, out / copy.name)  # as JupyterLab saved it, outputs and all
        if result.ran < result.code_cells:
            result.problems.append(f"{result.code_cells - result.ran} code cells did not run")
        if bad := [e for e in result.errors if not (learner and e == "NotImplementedError")]:
            result.problems.append("errors: " + ", ".join(bad))
        if not learner and result.figures != (stored := saved_summary(source)[3]):
            result.problems.append(f"{result.figures} figures rendered, the stored notebook has {stored}")
    except (Broken, PlaywrightError) as broken:  # a UI step that never came: say which, go on
        result.problems.append(str(broken).splitlines()[0])
    finally:
        figure = page.locator(".jp-OutputArea-output img")
        if figure.count():
            for _ in range(2):  # cells above it may resize once they are in view
                figure.first.evaluate("img => img.scrollIntoView({block: 'center'})")
                page.wait_for_timeout(300)
        page.screenshot(path=str(out / f"{copy.stem}.png"))
        page.close()
        for kernel in api(base, token, "kernels") or []:  # one kernel at a time
            api(base, token, f"kernels/{kernel['id']}", "DELETE")
    return result


def select(folder: Path, wanted: list[str]) -> list[Path]:
    """Lessons by number prefix (03) or notebook paths; none named means all of folder."""
    lessons = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    chosen = []
    for item in wanted:
        match = [Path(item).resolve()] if item.endswith(".ipynb") else [
            p for p in lessons if p.name.startswith(item)]
        if not match or not match[0].is_file():
            raise SystemExit(f"no notebook {item!r}; lessons in {folder}: {', '.join(p.stem for p in lessons)}")
        chosen += match
    return chosen or lessons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--solutions", action="store_true", help="run solutions/ (the default)")
    kind.add_argument("--notebooks", action="store_true", help="run the learner notebooks/ instead")
    parser.add_argument("lessons", nargs="*", help="lesson numbers (03) or .ipynb paths; default: all")
    parser.add_argument("--out", type=Path, required=True, help="folder for screenshots and the server log")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per notebook")
    args = parser.parse_args(argv)
    if sync_playwright is None or not CHROMIUM.exists():
        raise SystemExit("needs Playwright (.venv/bin/python -m pip install playwright) and Chromium at "
                         f"{CHROMIUM} (or set CHROMIUM=/path/to/chromium)")
    paths = select(ROOT / ("notebooks" if args.notebooks else "solutions"), args.lessons)
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    print(f"{'notebook':<36} {'seconds':>8} {'code cells run':>15}  errors  figures  stderr  verdict")
    with tempfile.TemporaryDirectory(prefix="jupyterlab_run_") as scratch, \
            jupyterlab(Path(scratch), args.out / "jupyterlab-server.log") as (root, base, token), \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        for path in paths:
            copy = Path(shutil.copy(path, root / path.name))
            r = check(browser, copy, path, args.notebooks, base, token, args.timeout, args.out)
            results.append(r)
            print(f"{r.name:<36} {r.seconds:8.1f} {f'{r.ran}/{r.code_cells}':>15} {len(r.errors):>7} "
                  f"{r.figures:>8} {r.stderr:>7}  {r.verdict}", flush=True)
    print(f"screenshots, saved notebooks and the server log: {args.out}")
    return 0 if all(r.verdict == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
