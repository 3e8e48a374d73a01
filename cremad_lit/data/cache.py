"""Prepared cache: each clip decoded once into model-ready tensors, one folder per preprocessing setting.

    python -m cremad_lit.prepare data.root=/path/to/CREMA-D       # the command; this module is its engine

Layout: `<cache_dir>/<corpus>-<hash of its root>/<Preprocessing.key()>/settings.json`, `<clip_id>.npz` (uint8 frames, float16 Mel) and
`skipped.json` (clip, path, reason of every clip that could not be used). Every file is written to a temporary name and
renamed, so a run killed at any point leaves only whole entries and the next run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no lock; parallel jobs may then decode the same clip twice (harmless, atomic)
    fcntl = None

from cremad_lit.data.features import Preprocessing, extract_clip
from cremad_lit.data.media import MediaError

log = logging.getLogger(__name__)


def write_atomic(path: Path, write) -> None:
    """Call `write(handle)` on a temporary file beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, payload) -> None:
    write_atomic(Path(path), lambda handle: handle.write(json.dumps(payload, indent=2, default=str).encode()))


def source_key(dataset: str, location: str | os.PathLike) -> str:
    """A cache namespace per corpus copy, so two roots (say real and generated CREMA-D) never share entries."""
    resolved = str(Path(location).expanduser().resolve())
    return f"{dataset}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


class ClipCache:
    def __init__(self, cache_dir: str | os.PathLike, prep: Preprocessing, source: str | None = None):
        self.prep = prep
        self.dir = Path(cache_dir) / (source or "") / prep.key()

    def entry(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.npz"

    def has(self, clip_id: str) -> bool:
        return self.entry(clip_id).is_file()

    def load(self, clip_id: str, names=None) -> dict:
        """The clip's stored arrays (`names`: only these, e.g. ("mel",); npz members are read one by one)."""
        with np.load(self.entry(clip_id)) as stored:
            return {name: stored[name] for name in stored.files if names is None or name in names}

    def save(self, clip_id: str, sample: dict) -> None:
        write_atomic(self.entry(clip_id), lambda handle: np.savez(handle, **sample))

    @property
    def skipped_file(self) -> Path:
        return self.dir / "skipped.json"

    def skipped(self) -> dict[str, dict]:
        if not self.skipped_file.is_file():
            return {}
        return {row["clip_id"]: row for row in json.loads(self.skipped_file.read_text())}

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = self.dir / "settings.json"
        if not settings.exists():
            write_json(settings, self.prep.to_dict())

    def build(
        self, clips: pd.DataFrame, decoder: str = "decord", workers: int = 0, retry_skipped: bool = False
    ) -> dict:
        """Decode every clip of `clips` that is not cached yet; return a report (also saved as skipped.json)."""
        self.open()
        # One builder at a time: jobs of a parallel sweep that start together wait, then find the clips cached.
        with open(self.dir / ".lock", "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            return self._build(clips, decoder, workers, retry_skipped)

    def _build(self, clips: pd.DataFrame, decoder: str, workers: int, retry_skipped: bool) -> dict:
        skipped = {} if retry_skipped else self.skipped()
        todo = clips[~clips["clip_id"].map(lambda c: self.has(c) or c in skipped)]
        started = time.perf_counter()
        jobs = list(zip(todo["clip_id"], todo["video_path"], todo["audio_path"], strict=True))
        if jobs:
            results = _run(jobs, self, decoder, workers)
            for clip_id, path, reason in tqdm(
                results, total=len(jobs), desc=f"prepare {self.dir.name}", unit="clip"
            ):
                if reason is not None:
                    skipped[clip_id] = {"clip_id": clip_id, "path": path, "reason": reason}
                    log.warning("skipped %s: %s", path, reason)
            write_json(self.skipped_file, sorted(skipped.values(), key=lambda r: r["clip_id"]))
        report = {
            "cache_dir": str(self.dir),
            "settings": self.prep.to_dict(),
            "clips": len(clips),
            "decoded_now": len(jobs),
            "seconds": round(time.perf_counter() - started, 2),
            "skipped": [skipped[c] for c in clips["clip_id"] if c in skipped],
        }
        return report


def _prepare_one(job, cache: ClipCache, decoder: str):
    clip_id, video_path, audio_path = job
    try:
        cache.save(clip_id, extract_clip(video_path, audio_path, cache.prep, decoder))
        return clip_id, video_path, None
    except MediaError as error:
        return clip_id, error.path, error.reason
    except Exception as error:  # an unexpected decoder failure must not stop the other clips
        return clip_id, video_path, f"{type(error).__name__}: {error}"


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run(jobs, cache: ClipCache, decoder: str, workers: int):
    if workers <= 0:
        yield from (_prepare_one(job, cache, decoder) for job in jobs)
        return
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork", "spawn", "forkserver"):
        # Inside a joblib (loky) worker of a parallel sweep, spawned children cannot start: decode on threads,
        # which the decoders, OpenCV and torch mostly run outside the GIL.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(_prepare_one, jobs, [cache] * len(jobs), [decoder] * len(jobs))
        return
    # spawn: forking a process that already runs torch/OpenMP threads can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        yield from pool.map(_prepare_one, jobs, [cache] * len(jobs), [decoder] * len(jobs), chunksize=8)
