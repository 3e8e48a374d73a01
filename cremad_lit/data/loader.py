"""A DataLoader whose worker may die on a clip (a decoder that segfaults while decoding on the fly, data.cache=off)
without ending the epoch: that clip is skipped with its reason and the epoch's other batches go on.

    loader = CrashTolerantLoader(dataset, batch_size=8, shuffle=True, num_workers=2, collate_fn=collate_skipping_bad)
    for batch in loader: ...
    loader.crashes      # [{"clip_id", "path", "reason"}], also logged; the run writes them to run_info.json

Each worker notes in shared memory which clip it is on (its pid and the index). When torch reports a worker killed by
a signal or gone, the clip that worker was on is the culprit. As in `prepare`, the first crash runs the canary in a
fresh process (data/canary.py): when known-good media crashes the same decoding too, the environment is broken and
the run stops. Otherwise the epoch's batches that were not yielded yet (drawn once per epoch, so the order holds) run
on in fresh workers without that clip. A dataset read from the prepared cache decodes nothing and loads as any
DataLoader does (persistent workers kept); in this process (num_workers=0) a crash is the process's, as for any program.
"""

from __future__ import annotations

import logging
import os
import re

import torch
from torch.utils.data import DataLoader, get_worker_info

log = logging.getLogger(__name__)
# torch's words for a worker that died: "DataLoader worker (pid 123) is killed by signal: Segmentation fault." and
# "DataLoader worker (pid(s) 123, 124) exited unexpectedly".
_DEAD_WORKER = re.compile(r"DataLoader worker \(pid\(?s?\)? ([\d, ]+)\) (.*)")


def note_in_flight(slots: torch.Tensor | None, index: int) -> None:
    """In a worker: the clip `index` is being read now (-1: none). `slots` rows are (pid, index), one per worker."""
    info = get_worker_info()
    if slots is not None and info is not None:
        slots[info.id, 0] = os.getpid()
        slots[info.id, 1] = index


def _culprit(slots: torch.Tensor, error: RuntimeError) -> tuple[int, str] | None:
    """(dataset index, torch's words) of the clip a dead worker was on, or None when `error` is no worker death."""
    found = _DEAD_WORKER.search(str(error))
    if not found:
        return None
    pids = {int(p) for p in found.group(1).replace(" ", "").split(",") if p}
    for pid, index in slots.tolist():
        if pid in pids and index >= 0:
            return index, found.group(2).strip().rstrip(".")
    return None


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
                    for batch in loader:
                        done += 1
                        yield batch
                except RuntimeError as error:
                    found = _culprit(slots, error)
                    if found is None:
                        raise
                    index, words = found
                    self._skip(index, words)
                    rest = [[i for i in b if i != index] for b in batches[done:]]
                    batches = batches[:done] + [b for b in rest if b]
        finally:
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
