"""Test-only: a command that starts commands (select's multiruns, bench_lockbox.py's runs) forks them from itself,
loaded by the debug setting (errors.py):

    CREMAD_LIT_DEBUG_PLUGINS=tests.fork_commands

A command run by the suite is forked from a process that has imported torch and Lightning (tests/preloaded.py), but
the commands it starts with `subprocess.run([sys.executable, ...])` were new interpreters, ~8 s of imports each before
any work. With this plugin such a call forks the command instead (tests.preloaded.fork_command: its own pid, argv,
working directory, environment and exit status, the project's modules imported afresh, writing where its parent
writes), so a kill of the child, or of its parent (`tree`, tests/kill_points.py), is what it was. Calls that capture
output, or that run anything else, go to subprocess as before. Tests turn it on with `fork_subcommands`
(tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.preloaded import fork_command

_run = getattr(
    subprocess.run, "unforked", subprocess.run
)  # imported afresh by each forked command: wrap once


def run(args, *rest, **options):
    plain = not rest and set(options) <= {"check", "env", "cwd"}
    if not (plain and isinstance(args, list) and args and args[0] == sys.executable):
        return _run(args, *rest, **options)
    env = dict(options.get("env") or os.environ)
    code = fork_command([str(a) for a in args[1:]], env, str(options.get("cwd") or os.getcwd()))
    if options.get("check") and code != 0:
        raise subprocess.CalledProcessError(code, args)
    return subprocess.CompletedProcess(args, code)


run.unforked = _run
subprocess.run = run
