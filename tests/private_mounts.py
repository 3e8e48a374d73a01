"""Test-only read-only mounts for one command, loaded into its processes by the debug setting (data/isolation.py):

    CREMAD_LIT_DEBUG_PLUGINS=tests.private_mounts CREMAD_LIT_TEST_READ_ONLY="bind:<folder>,tmpfs:<folder>"

The command that loads it first moves into a mount namespace of its own (as `unshare -m` does) and mounts there
`bind:` folders as read-only binds of themselves and `tmpfs:` folders as empty read-only tmpfs (as mount(8) would):
the command a user runs under such mounts, forked from the suite's preloader instead of a new interpreter. The
processes it starts share its namespace and leave it as it is. Root's mount rights are needed.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNS = 0x00020000
SPEC, DONE = "CREMAD_LIT_TEST_READ_ONLY", "CREMAD_LIT_TEST_READ_ONLY_SET_UP"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


if os.environ.get(SPEC) and not os.environ.get(DONE):
    os.environ[DONE] = str(os.getpid())  # inherited: the command's own processes are in its namespace already
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    _mount("--make-rprivate", "/")  # nothing mounted here reaches the suite's own namespace
    for item in os.environ[SPEC].split(","):
        kind, folder = item.split(":", 1)
        if kind == "bind":
            _mount("--bind", folder, folder)
            _mount("-o", "remount,bind,ro", folder)
        else:
            _mount("-t", "tmpfs", "none", folder)
            _mount("-o", "remount,ro", folder)
