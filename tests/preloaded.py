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

# Third-party only: what every command imports before it does anything (measured with python -X importtime).
PRELOAD = ["torch", "lightning", "pandas", "hydra", "omegaconf", "timm", "torchaudio"]
_context = None

# Exit handlers the preloaded libraries register while the server imports them (this module is imported first): a
# child must not run them on its way out, or it would remove what every later child shares (W&B's media folder,
# made once at import, was deleted by the first command to exit). Each child runs only the handlers it registers.
_register_exit = atexit.register
_inherited_exit = []


def _record_exit(func, *args, **kwargs):
    _inherited_exit.append(func)
    return _register_exit(func, *args, **kwargs)


atexit.register = _record_exit


def context():
    """The forkserver context, started once per test process with PRELOAD imported."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["tests.preloaded", *PRELOAD])
    return _context


def _command(args: list[str], env: dict, cwd: str, stdout: str, stderr: str) -> None:
    """In the forked child: become `python *args` run in `cwd` with `env`, writing to the two files."""
    atexit.register = _register_exit
    for func in _inherited_exit:
        atexit.unregister(func)
    for finalizer in list(weakref.finalize._registry):  # the server's temporary folders are every child's
        finalizer.atexit = False
    if weakref.finalize._registered_with_atexit:  # the child's own finalizers still run at its exit
        atexit.register(weakref.finalize._exitfunc)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        _run(args, cwd)
    finally:  # what the interpreter does on its way out, which a forked child's os._exit would skip
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


def _run(args: list[str], cwd: str) -> None:
    if args[0] == "-m":
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
