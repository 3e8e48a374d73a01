"""Test-only kills at named moments (kill -9 as a user or the OOM killer gives it), loaded into a command's processes by
the debug setting (data/isolation.py):

    CREMAD_LIT_DEBUG_PLUGINS=tests.kill_points CREMAD_LIT_TEST_KILL="<file name>:<n>:<before|while|after>[:tree]"

The process SIGKILLs itself at its n-th atomic write (io.write_atomic) of a file so named: before it, while writing it
(its temporary file half written, as a kill mid-write leaves it), or just after it; `tree` kills its parent too (a
multirun that `select` started, with `select`). Tests set it up with `kill_at` (tests/conftest.py).
"""

from __future__ import annotations

import io as bytes_io
import os
import signal
import sys
from pathlib import Path

from cremad_lit import io

VARIABLE = "CREMAD_LIT_TEST_KILL"
_spec = os.environ.get(VARIABLE, "").split(":")
NAME, NTH, WHEN, TREE = (
    _spec[0],
    int(_spec[1]) if len(_spec) > 1 else 1,
    _spec[2] if len(_spec) > 2 else "before",
    "tree" in _spec[3:],
)
_original = io.write_atomic
_seen = 0


def _die() -> None:
    if TREE:
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(path, write, durable: bool = False) -> None:
    global _seen
    if Path(path).name == NAME:
        _seen += 1
        if _seen == NTH:
            if WHEN == "before":
                _die()
            if WHEN == "while":
                buffer = bytes_io.BytesIO()
                write(buffer)
                data = buffer.getvalue()
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp").write_bytes(
                    data[: len(data) // 2]
                )
                _die()
            _original(path, write, durable)
            _die()
    _original(path, write, durable)


if NAME:
    io.write_atomic = write_atomic
    for module in list(sys.modules.values()):  # the modules that imported it by name already
        if (
            getattr(module, "__name__", "").startswith("cremad_lit")
            and getattr(module, "write_atomic", None) is _original
        ):
            module.write_atomic = write_atomic
