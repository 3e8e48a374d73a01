"""A DataLoader whose worker may die on a clip (a decoder that segfaults while decoding on the fly, data.cache=off)
without ending the epoch: that clip is skipped with its reason and the epoch's other batches go on.

    loader = CrashTolerantLoader(dataset, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate_skipping_bad)
    for batch in loader: ...
    loader.crashes      # [{"clip_id", "path", "reason"}], also logged; the run writes them to run_info.json

Each worker notes in shared memory which clip it is on (its pid and the index). When torch reports a worker killed by
a signal or gone, the clip that worker was on is the culprit. As in `prepare`, the first crash runs the canary in a
fresh process (data/canary.py): when known-good media crashes the same decoding too, the environment is broken and
the run stops. Otherwise the epoch's batches that were not yielded yet (drawn once per epoch, so the order holds) run
on in fresh workers without that clip.

torch's SIGCHLD handler raises a worker's death in whatever the main thread runs at that moment: most often a training
step, far from any loader, and the run would end. While a tolerant loader iterates, that handler is wrapped: the death
of one of its workers is noted, not raised, and the loader's own wait for its next batch finds the worker gone (torch
checks every 5 s) and skips the clip there. Every other loader's worker death raises as before.

A dataset read from the prepared cache decodes nothing and loads as any DataLoader does (persistent workers kept); in
this process (num_workers=0) a crash is the process's, as for any program.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import traceback

import torch
from torch.utils.data import DataLoader, get_worker_info

log = logging.getLogger(__name__)
# torch's words for a worker that died: "DataLoader worker (pid 123) is killed by signal: Segmentation fault." and
# "DataLoader worker (pid(s) 123, 124) exited unexpectedly".
_DEAD_WORKER = re.compile(r"DataLoader worker \(pid\(?s?\)? ([\d, ]+)\) (.*)")
_watched: list[torch.Tensor] = []  # the in-flight slots of the tolerant loaders iterating now
_noted: dict[int, str] = {}  # pid -> torch's words, for a death the SIGCHLD handler held back


def _dead_pids(error: BaseException) -> tuple[set[int], str] | None:
    """(pids, torch's words) of a worker death torch reports, or None for any other error."""
    found = _DEAD_WORKER.search(str(error))
    if not found:
        return None
    pids = {int(p) for p in found.group(1).replace(" ", "").split(",") if p}
    return pids, found.group(2).strip().rstrip(".")


def note_in_flight(slots: torch.Tensor | None, index: int) -> None:
    """In a worker: the clip `index` is being read now (-1: none). `slots` rows are (pid, index), one per worker."""
    info = get_worker_info()
    if slots is not None and info is not None:
        slots[info.id, 0] = os.getpid()
        slots[info.id, 1] = index


def _culprit(slots: torch.Tensor, error: RuntimeError) -> tuple[int, str] | None:
    """(dataset index, torch's words) of the clip a dead worker was on, or None when `error` is no worker death."""
    dead = _dead_pids(error)
    if dead is None:
        return None
    pids, words = dead
    for pid, index in slots.tolist():
        if pid in pids and index >= 0:
            return index, _noted.pop(pid, words)  # the signal's name, when the handler saw the death first
    return None


def _hold_worker_deaths() -> None:
    """Wrap the SIGCHLD handler (once; torch installs its own as its first multi-worker iterator starts) so that a dead
    worker of a tolerant loader is noted instead of raised in the middle of whatever runs (the module docstring)."""
    current = signal.getsignal(signal.SIGCHLD)
    if (
        getattr(current, "holds_worker_deaths", False)
        or threading.current_thread() is not threading.main_thread()
    ):
        return

    def handler(signum, frame):
        try:
            if callable(current):
                current(signum, frame)
        except RuntimeError as error:
            dead = _dead_pids(error)
            ours = {int(pid) for slots in _watched for pid in slots[:, 0].tolist()}
            if dead is None or not dead[0] & ours:
                raise
            _noted.update(dict.fromkeys(dead[0] & ours, dead[1]))

    handler.holds_worker_deaths = True
    signal.signal(signal.SIGCHLD, handler)


def _started(loader: DataLoader):
    """The loader's iterator, its workers started (and torch's SIGCHLD handler with them, the first time) and that
    handler wrapped. Only the caller's loop holds it, so that a worker's death shuts the other workers down at once."""
    batches = iter(loader)
    _hold_worker_deaths()
    return batches


def _check_environment(dataset, row, reason: str) -> None:
    """The canary of the clip's kinds, decoded the same way in a fresh process: BrokenEnvironment when it fails too."""
    from cremad_lit.data.cache import _decode_canary
    from cremad_lit.data.isolation import canary_in_worker, worker_pool

    pool = worker_pool(1)
    try:
        canary_in_worker(
            pool,
            _decode_canary,
            (dataset.prep, dataset.decoder, row.video_path, row.audio_path),
            row.video_path or row.audio_path,
            120,
            reason,
        )
    finally:
        pool.stop()
        pool.join()


class _WorkerStart:
    """The workers' start: the debug plugins (errors.py), then the loader's own worker_init_fn. A class, so
    that spawned workers can unpickle it."""

    def __init__(self, then=None):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        from cremad_lit.errors import load_debug_plugins

        load_debug_plugins()
        if self.then is not None:
            self.then(worker_id)


class CrashTolerantLoader(DataLoader):
    """DataLoader that turns a worker's death on one clip into that clip's skip (see the module docstring)."""

    def __init__(self, dataset, *args, **kwargs):
        super().__init__(dataset, *args, **kwargs)
        self.crashes: list[dict] = []
        self._skipped: set[int] = set()  # not read again in later epochs

    def __iter__(self):
        if self.num_workers == 0 or not getattr(self.dataset, "decodes_on_the_fly", False):
            return super().__iter__()
        return self._tolerant()

    def _tolerant(self):
        batches = [
            [i for i in b if i not in self._skipped] for b in self.batch_sampler
        ]  # the epoch's order, drawn once
        batches = [b for b in batches if b]
        slots = torch.full((self.num_workers, 2), -1, dtype=torch.long).share_memory_()
        self.dataset.in_flight = slots
        _watched.append(slots)
        done = 0
        try:
            while done < len(batches):
                slots.fill_(-1)
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=batches[done:],
                    num_workers=self.num_workers,
                    collate_fn=self.collate_fn,
                    pin_memory=self.pin_memory,
                    timeout=self.timeout,
                    worker_init_fn=_WorkerStart(self.worker_init_fn),
                    multiprocessing_context=self.multiprocessing_context,
                    prefetch_factor=self.prefetch_factor,
                )
                try:
                    for batch in _started(loader):
                        done += 1
                        yield batch
                except RuntimeError as error:
                    found = _culprit(slots, error)
                    if found is None:
                        raise
                    # torch raised it inside an `except` whose frame then refers to itself through the error: cleared,
                    # the dead loader is freed now and its other workers end with it, not at some later collection.
                    traceback.clear_frames(error.__traceback__)
                    index, words = found
                    self._skip(index, words)
                    rest = [[i for i in b if i != index] for b in batches[done:]]
                    batches = batches[:done] + [b for b in rest if b]
        finally:
            _watched[:] = [watched for watched in _watched if watched is not slots]  # by identity: tensors
            self.dataset.in_flight = None

    def _skip(self, index: int, words: str) -> None:
        row = self.dataset.clips.iloc[index]
        reason = f"decoder crashed in a DataLoader worker ({words})"
        if not self.crashes:  # a decoding that dies on every file is the environment's: the canary decides
            _check_environment(self.dataset, row, reason)
        path = row.video_path or row.audio_path
        log.warning("skipped clip %s: %s: %s; the epoch goes on", row.clip_id, path, reason)
        self.crashes.append({"clip_id": row.clip_id, "path": path, "reason": reason})
        self._skipped.add(index)
