"""Errors that end a command with their message alone: the message names the file or folder and what to do.

    @hydra.main(...)
    @stops_cleanly
    def main(cfg): ...        # a Stop raised anywhere below prints "error: <message>" and exits with status 1

BrokenEnvironment (environment.py), DiskFull and NotWritable (io.py), BadCheckpoint, WeightsUnavailable and
MissingData are Stops (also when Hydra's instantiate wraps one): none is a bug whose
traceback would help the user, and none may be mistaken for bad data.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys


class Stop(Exception):
    """The run cannot go on, for a reason its message says in full."""


class BadCheckpoint(Stop, ValueError):
    """A file given as a checkpoint that is missing, truncated, or not one of ours."""


class WeightsUnavailable(Stop, OSError):
    """Pretrained weights that can be neither downloaded nor found locally."""


class MissingData(Stop, FileNotFoundError):
    """No corpus where data.root (or data.manifest) points."""


def stop_in(error: BaseException | None) -> Stop | None:
    """The Stop behind `error` (Hydra's instantiate wraps what a target raises), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Stop):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def stops_cleanly(main):
    """Print a Stop's message (no traceback) and exit 1; every other exception propagates as before."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        load_debug_plugins()  # a debug setting, empty in use (errors.py)
        try:
            return main(*args, **kwargs)
        except Exception as error:
            stop = stop_in(error)
            if stop is None:
                raise
            sys.stderr.write(f"error: {stop}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None

    return wrapper


# A debug setting, empty in use: modules to import in every process as it starts (the main one, DataLoader and
# prepare workers, the page's judge), so that a test can reach into them (tests/faults.py, tests/kill_points.py).
DEBUG_PLUGINS = "CREMAD_LIT_DEBUG_PLUGINS"


def load_debug_plugins() -> None:
    """Import the modules the debug setting DEBUG_PLUGINS names (once per process, as it starts)."""
    for name in filter(None, (n.strip() for n in os.environ.get(DEBUG_PLUGINS, "").split(","))):
        importlib.import_module(name)
