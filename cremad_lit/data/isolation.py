"""Work on untrusted files in worker processes, so that a decoder that crashes its process (a segfault on a hostile
file) or hangs costs that file only: `prepare`'s clip cache, the openSMILE/GE2E functionals and the page use it.

    from cremad_lit.data.isolation import run_isolated
    for result in run_isolated(one, jobs, workers=4, timeout=300, failed=skip, check_environment=canary):
        ...

Workers are pebble processes forked from a fork server (`worker_context`): not from the command itself, since forking
a process that already runs torch/OpenMP threads can deadlock, but from a fresh single-threaded process that has
imported torch and the decoders once, so a worker (or the replacement of a crashed one) starts without importing them
again; one torch thread each. Nor does a worker import the command's main module, as multiprocessing's workers do
by default: its jobs are functions of the package, and each of four workers importing `train`'s or `prepare`'s
command (Lightning, the DataModule) stalled every build ~15 s on 2 cores before its first clip. So a job's function
must be importable by name: a package function, never one of a script's own. A job whose worker dies or overruns
`timeout` yields `failed(job, reason)` in place of its result, and a new worker takes its place; the first such failure calls `check_environment(pool, job, reason)`
(the canary decoded the same way in a fresh worker: data/canary.py), which raises BrokenEnvironment when it fails too.

Debug setting: CREMAD_LIT_DEBUG_PLUGINS="module[,module]" names modules that every command (train.py, evaluate.py,
python -m cremad_lit ...) and every worker process (these, the DataLoader's and the page's) imports once as it starts.
The tests load tests/faults.py this way, which makes the decoders crash or hang on named files, and
tests/kill_points.py, which kills a command at a named write; nothing in the code they test knows about them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing import spawn

from cremad_lit.errors import DEBUG_PLUGINS, load_debug_plugins  # noqa: F401 (DEBUG_PLUGINS: its name here since 0.9)

# What the fork server imports once for every worker it forks: torch and the decoding and feature modules.
WORKER_PRELOAD = ["torch", "cremad_lit.data.cache", "cremad_lit.data.functionals"]


_launching = threading.local()


def _preparation_data(name: str, _original=spawn.get_preparation_data) -> dict:
    """What a new process is told to set up, less the main module for a worker of this module's pools."""
    data = _original(name)
    if getattr(_launching, "worker", False):
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


spawn.get_preparation_data = _preparation_data


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    """A fork-server process that does not import the launching command's main module."""

    @staticmethod
    def _Popen(process_obj):
        _launching.worker = True  # read on this thread only: other processes started meanwhile are left alone
        try:
            return multiprocessing.context.ForkServerProcess._Popen(process_obj)
        finally:
            _launching.worker = False


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess


def worker_context() -> multiprocessing.context.BaseContext:
    """The start method of every worker process the project starts for isolation (decoders, features, the page's
    judges, the canary): multiprocessing's fork server, with WORKER_PRELOAD imported in it once, and workers that
    skip the command's main module (see the module docstring)."""
    from multiprocessing import forkserver

    # One fork server a process: keep what another user of it (a test harness) preloads, not the main module.
    others = [m for m in getattr(forkserver._forkserver, "_preload_modules", []) if m != "__main__"]
    forkserver.set_forkserver_preload(list(dict.fromkeys([*others, *WORKER_PRELOAD])))
    return _WorkerContext()


def worker_pool(
    workers: int, then: Callable | None = None, then_args: tuple = (), started=None, one_thread=True
):
    """A pebble pool of `workers` processes (worker_context), each started as a spawned one would be: with this
    process's environment as it is now (the fork server keeps the one it started with), the debug plugins, one torch
    thread (`one_thread`), then `then(*then_args)`; `started` (a queue) is told each worker's pid once it is up."""
    import pebble

    return pebble.ProcessPool(
        max_workers=workers,
        context=worker_context(),
        initializer=_start_worker,
        initargs=(dict(os.environ), one_thread, then, then_args, started),
    )


def signal_name(exitcode) -> str:
    with contextlib.suppress(ValueError, TypeError):
        return signal.Signals(-exitcode).name
    return f"exit code {exitcode}"


def _start_worker(environment: dict, one_thread: bool, then, then_args: tuple, started) -> None:
    os.environ.clear()
    os.environ.update(environment)
    if one_thread:
        import torch

        torch.set_num_threads(1)
    load_debug_plugins()
    if then is not None:
        then(*then_args)
    if started is not None:  # the worker has read its share of the pool's state: the pool may now close
        started.put(os.getpid())
        # Written through before the first job: a worker that the job kills at once has still said it started.
        started.close()
        started.join_thread()


def _wait_for_starts(started, count: int, limit_s: float = 60.0) -> None:
    """Wait until `count` workers have started (or `limit_s` passed). Closing a pool unlinks the semaphores a starting
    worker still reads: one that started late would print a traceback of its own."""
    deadline = time.monotonic() + limit_s
    for _ in range(count):
        try:
            started.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return


def run_isolated(
    one: Callable,
    jobs: list,
    workers: int,
    timeout: float | None,
    failed: Callable[[object, str], object],
    check_environment: Callable[[object, object, str], None],
    threads: bool = True,
) -> Iterator:
    """`one(job)` for each job, in completion order, each in a worker process (see the module docstring). In this
    process (`workers` 0) or on threads (inside a joblib worker of a parallel sweep, where processes cannot start;
    `threads=False`: in turn, for work that is not thread-safe) nothing is isolated."""
    in_joblib = multiprocessing.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver")
    if workers <= 0 or (in_joblib and not threads):
        yield from (one(job) for job in jobs)
        return
    if in_joblib:
        # Inside a joblib (loky) worker, spawned children cannot start: threads, which the decoders, OpenCV and
        # torch mostly run outside the GIL.
        with ThreadPoolExecutor(max_workers=workers) as threads:
            futures = [threads.submit(one, job) for job in jobs]
            try:
                yield from (future.result() for future in as_completed(futures))
            finally:
                for future in futures:
                    future.cancel()
        return
    import pebble

    workers = min(workers, len(jobs))
    started = worker_context().Queue()  # every worker says when it is up; a dead one is replaced
    launched = workers
    pool = worker_pool(workers, started=started)
    try:
        futures = {pool.schedule(one, args=(job,), timeout=timeout): job for job in jobs}
        checked, finished = False, False
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
                continue
            except FutureTimeout:
                reason = f"decoding took longer than data.decode_timeout_s={timeout:g} s (stopped)"
            except pebble.ProcessExpired as error:
                reason = f"decoder crashed ({signal_name(error.exitcode)})"
            launched += 1
            if not checked:  # a decoder that dies on every file is the environment's: the canary decides
                checked = True
                check_environment(pool, job, reason)
            yield failed(job, reason)
        finished = True
    finally:  # a run that stops early must not work through the rest first; a finished one lets workers exit quietly
        _wait_for_starts(started, launched, 60.0 if finished else 10.0)
        if finished:
            pool.close()
        else:
            pool.stop()
        pool.join()


def canary_in_worker(pool, decode_canary: Callable, args: tuple, path: str, timeout, reason: str) -> None:
    """`decode_canary(*args)` in a fresh worker: a crash or hang there too means the environment is broken."""
    import pebble

    from cremad_lit.environment import BrokenEnvironment

    future = pool.schedule(decode_canary, args=args, timeout=timeout)
    try:
        future.result()
    except (FutureTimeout, pebble.ProcessExpired) as error:
        raise BrokenEnvironment(
            f"the environment is broken, so the run stopped: {path} failed ({reason}), and a known-good canary clip "
            f"decoded the same way fails too ({type(error).__name__}: {error}). "
            "python -m cremad_lit doctor shows the whole environment."
        ) from error
