"""Errors that end a command with their message alone: the message names the file or folder and what to do.

    @hydra.main(...)
    @stops_cleanly
    def main(cfg): ...        # a Stop raised anywhere below prints "error: <message>" and exits with status 1

BrokenEnvironment (environment.py), DiskFull and NotWritable (io.py) and BadCheckpoint are Stops: none is a bug whose
traceback would help the user, and none may be mistaken for bad data.
"""

from __future__ import annotations

import functools
import sys


class Stop(Exception):
    """The run cannot go on, for a reason its message says in full."""


class BadCheckpoint(Stop, ValueError):
    """A file given as a checkpoint that is missing, truncated, or not one of ours."""


def stops_cleanly(main):
    """Print a Stop's message (no traceback) and exit 1; every other exception propagates as before."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Stop as stop:
            sys.stderr.write(f"error: {stop}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    return wrapper
