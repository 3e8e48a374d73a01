"""Project commands run in processes forked from one that has already imported torch and Lightning.

    run_cli("train.py", ...)   # tests/conftest.py: forked here unless the call changes the environment

Every command in the suite is a fresh process, but a fresh interpreter spends ~8 s of this machine's CPU importing
torch, Lightning (which imports torchmetrics, torchvision and part of transformers) and pandas before it reads its
first argument: about 100 commands made that most of the suite's time. multiprocessing's forkserver imports those
libraries once; each command is then a child forked from it (the preloader pattern of Rails' Spring or Android's
zygote): its own pid, argv, working directory, stdout/stderr, exit status, logging and global state, exactly as
`python train.py ...`, minus the imports. The project's own modules are not preloaded, so each command imports
cremad_lit afresh. A command whose environment differs from the suite's (a broken library, offline variables read
at import time) runs as a real interpreter instead: see `run_cli`.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import sys
import threading
import weakref
from pathlib import Path

# Third-party only: what every command imports before it does anything (measured with python -X importtime), and
# what every command's environment check (environment.py) and the classical models import (~0.7 s a command).
PRELOAD = ["torch", "lightning", "pandas", "hydra", "omegaconf", "timm", "torchaudio"]
PRELOAD += ["av", "decord", "opensmile", "facenet_pytorch", "sklearn.linear_model", "pebble", "optuna"]
# Top-level packages of this checkout, which a command imports for itself (benchmarks/ puts `common` on the path).
PROJECT = {"cremad_lit", "tests", "common"}
KEPT = {"tests", "tests.preloaded"}  # the forking itself
_context = None


def context():
    """The forkserver context, started once per test process with PRELOAD imported."""
    global _context
    if _context is None:
        from cremad_lit.data.isolation import WORKER_PRELOAD

        # One fork server a process: it also forks the workers the code under test isolates (data/isolation.py).
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["tests.preloaded", *PRELOAD, *WORKER_PRELOAD])
    return _context


def _command(args: list[str], env: dict, cwd: str, stdout: str | None, stderr: str | None) -> None:
    """In the forked child: become `python *args` run in `cwd` with `env`, writing to the two files (None: to the
    parent's)."""
    # Exit handlers registered before the fork (the preloaded libraries', a parent command's) must not run on the child's
    # way out, or it would remove what later children share (W&B's media folder, made once at import, was deleted by
    # the first command to exit): the child runs only the handlers it registers.
    atexit._clear()
    for finalizer in list(weakref.finalize._registry):  # nor are its temporary folders
        finalizer.atexit = False
    if weakref.finalize._registered_with_atexit:  # the child's own finalizers still run at its exit
        atexit.register(weakref.finalize._exitfunc)
    for fd, path in ((1, stdout), (2, stderr)):
        if path is None:
            continue
        if fd == 2 and path == stdout:  # both into one file, in the order written (as 2>&1)
            os.dup2(1, 2)
            continue
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    # A child of the fork server inherits its start method (forkserver); a new interpreter has none, so its DataLoader
    # workers fork. With forkserver each command started a fork server of its own, a bare interpreter that imported
    # torch afresh for every epoch's workers (~10 s an epoch for train.py with data.num_workers=2).
    multiprocessing.set_start_method(None, force=True)
    before = os.environ.get("PYTHONPATH")
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    # PYTHONPATH is read by a new interpreter as it starts: its folders come first on the path.
    if env.get("PYTHONPATH") != before:
        sys.path[1:1] = [folder for folder in env.get("PYTHONPATH", "").split(os.pathsep) if folder]
    # The project's modules are imported afresh, as in a new interpreter (a child of a command has them already).
    for name in [n for n in sys.modules if n.split(".")[0] in PROJECT and n not in KEPT]:
        del sys.modules[name]
    try:
        _run(args, cwd)
    finally:  # what the interpreter does on its way out, which a forked child's os._exit would skip
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


def fork_command(args: list[str], env: dict, cwd: str) -> int:
    """Run `python *args` as a child forked from this process (a command that starts a command), writing where this
    process writes; returns its exit status (negative: killed by that signal), as subprocess.run does."""
    child = multiprocessing.get_context("fork").Process(
        target=_command, args=(list(args), env, cwd, None, None)
    )
    child.start()
    child.join()
    return child.exitcode


def _run(args: list[str], cwd: str) -> None:
    if args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        sys.path[0] = ""
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    elif args[0] == "-m":
        module = args[1]
        spec = __import__("importlib.util").util.find_spec(module)
        main_file = (
            spec.submodule_search_locations and Path(spec.submodule_search_locations[0]) / "__main__.py"
        )
        sys.argv = [str(main_file or spec.origin), *args[2:]]
        sys.path[0] = cwd
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = str(Path(cwd, args[0]).resolve())
        sys.argv = [script, *args[1:]]
        sys.path[0] = str(Path(script).parent)
        runpy.run_path(script, run_name="__main__")


def start_forked(args: list[str], env: dict, cwd: Path, output: Path):
    """Start `python *args` as a forked child writing its stdout and stderr into `output`, and return it running
    (multiprocessing's Process: is_alive, terminate, join, exitcode): a server a test talks to."""
    child = context().Process(target=_command, args=(list(args), env, str(cwd), str(output), str(output)))
    child.start()
    return child


def run_forked(args: list[str], env: dict, cwd: Path, timeout: float, out_dir: Path):
    """Run `python *args` as a forked child; returns (returncode, stdout, stderr) like subprocess.run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = out_dir / "stdout", out_dir / "stderr"
    child = context().Process(target=_command, args=(list(args), env, str(cwd), str(stdout), str(stderr)))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        raise TimeoutError(f"{' '.join(args)} ran past {timeout} s")
    return child.exitcode, stdout.read_text(errors="replace"), stderr.read_text(errors="replace")
