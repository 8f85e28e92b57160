"""Run a command as another (ordinary) user, from root, the way an instructor would.

    python tests/run_as_user.py UID GID -- COMMAND...

The Python installation, the environment and the course may sit under a folder
an ordinary user cannot enter (CI runs as root; Python under /root/.pyenv, say).
In a private mount namespace, each such folder is covered by an open tmpfs that
holds only the paths the command needs, bound back in; nothing is changed on
the machine itself. Then the command runs under UID/GID with no capabilities.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grader.sandbox import kernel

HERE = Path(__file__).resolve().parent.parent


def _closed_ancestor(path: Path) -> Path | None:
    for parent in reversed(path.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return parent
    return None


def open_up(needed: list[Path]) -> None:
    """Make each needed path reachable by any user, in this mount namespace only."""
    kernel.unshare(kernel.CLONE_NEWNS)
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    covers: dict[Path, list[Path]] = {}
    for path in needed:
        closed = _closed_ancestor(path)
        if closed is not None:
            covers.setdefault(closed, []).append(closed / path.relative_to(closed).parts[0])
    for closed, keeps in covers.items():
        # Hold each kept path open, cover its parent, then bind it back from the
        # descriptor (/proc/self/fd/N still reaches what the cover hides).
        held = {keep: os.open(keep, os.O_PATH) for keep in sorted(set(keeps))}
        kernel.mount("tmpfs", str(closed), "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=0755")
        for keep, fd in held.items():
            (closed / keep.name).mkdir() if os.path.isdir(f"/proc/self/fd/{fd}") else (closed / keep.name).touch()
            kernel.mount(f"/proc/self/fd/{fd}", str(keep), None, kernel.MS_BIND | kernel.MS_REC)
            os.close(fd)


def main(argv: list[str]) -> None:
    uid, gid, sep, *command = argv
    assert sep == "--", "usage: run_as_user.py UID GID -- COMMAND..."
    open_up([Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), HERE])
    os.setgroups([])
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
