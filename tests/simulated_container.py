"""Run a command as a grading container would: root without CAP_SYS_ADMIN, under a
seccomp profile that refuses namespaces, as Docker's default profile does.

As in a container image, the Python installation is readable by every user
(on this machine it may sit under /root: it is opened up in a private mount
namespace first, as tests/run_as_user.py does).

    python tests/simulated_container.py [--no-landlock] -- COMMAND...

`--no-landlock` also refuses Landlock, as Docker releases before 23 did.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from pathlib import Path

from grader.sandbox import kernel, seccomp
from run_as_user import HERE, open_up

NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
DOCKER_DEFAULT = [("unshare", errno.EPERM, None), ("setns", errno.EPERM, None),
                  ("mount", errno.EPERM, None), ("umount2", errno.EPERM, None),
                  ("pivot_root", errno.EPERM, None), ("clone", errno.EPERM, NAMESPACE_FLAGS),
                  ("clone3", errno.ENOSYS, None)]


def main(argv: list[str]) -> None:
    rules = list(DOCKER_DEFAULT)
    if argv and argv[0] == "--no-landlock":
        rules.append(("landlock_create_ruleset", errno.ENOSYS, None))
        argv = argv[1:]
    command = argv[1:] if argv[:1] == ["--"] else argv
    open_up([Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), HERE])
    kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
    seccomp.install(rules)
    os.execvp("capsh", ["capsh", "--drop=cap_sys_admin", "--", "-c", shlex.join(command)])


if __name__ == "__main__":
    main(sys.argv[1:])
