"""Prepared cache: each clip decoded once into model-ready tensors, one folder per preprocessing setting.

    python -m cremad_lit prepare data.root=/path/to/CREMA-D       # the command; this module is its engine

Layout: `<cache_dir>/<corpus>-<hash of its root>/<Preprocessing.key()>/settings.json`, `<clip_id>.npz` (uint8 frames,
float16 Mel, and `info`: the modalities the clip lacks with the reason, how its face was found), `index.json` (every
entry's `info`, so a run knows which clips lack what without opening them) and `skipped.json` (clip, path, reason,
and the size and modification time of its files, for every clip with nothing usable). A clip is stored with whatever
modalities it has: a silent video is kept for video-only runs, and a run that needs its sound leaves it out by name. Every file is written to a temporary name and renamed, so a run killed at any point leaves only whole
entries and the next run resumes where it stopped.

Only a MediaError (a file that cannot be opened, is empty or truncated, has no audio, is too long, will not decode) is
recorded as a skip. Any other exception is the environment's or the code's: it is reported, never stored, and when it
hits the first clips or most of them the build stops (BrokenEnvironment) instead of writing the corpus off. A skip
whose files changed since (repaired, replaced) is decoded again.
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

from cremad_lit.data.faces import summarise
from cremad_lit.data.features import Preprocessing, clip_info, extract_clip
from cremad_lit.data.media import MediaError
from cremad_lit.environment import BrokenEnvironment

# The build stops when its first this-many clips all fail with errors that are not bad media, or when most clips do.
FIRST_CLIPS_FAILING = 3

log = logging.getLogger(__name__)


def write_atomic(path: Path, write) -> None:
    """Call `write(handle)` on a temporary file beside `path` (its folder made if missing), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
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


def file_fingerprint(*paths: str) -> dict[str, list[int]]:
    """Size and modification time (ns) of each existing file: a skip is only valid for the files it was made on."""
    stamps = {}
    for path in paths:
        if path and os.path.exists(path):
            stat = os.stat(path)
            stamps[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def source_key(dataset: str, location: str | os.PathLike) -> str:
    """A cache namespace per corpus copy, so two roots (say real and generated CREMA-D) never share entries."""
    resolved = str(Path(location).expanduser().resolve())
    return f"{dataset}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


class ClipCache:
    def __init__(self, cache_dir: str | os.PathLike, prep: Preprocessing, source: str | None = None):
        self.prep = prep
        self.dir = Path(cache_dir) / (source or "") / prep.key()
        self.errors: dict[str, dict] = {}  # clips the last build could not prepare for a reason not their own

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
    def index_file(self) -> Path:
        return self.dir / "index.json"

    def infos(self, clip_ids) -> dict[str, dict]:
        """clip_id -> stored `info` of each cached clip among `clip_ids` (index.json, else the entry itself)."""
        index = json.loads(self.index_file.read_text()) if self.index_file.is_file() else {}
        found = {}
        for clip_id in clip_ids:
            if clip_id in index:
                found[clip_id] = index[clip_id]
            elif self.has(clip_id):
                found[clip_id] = clip_info(self.load(clip_id, ("info",)))
        return found

    def lacking(self, clips: pd.DataFrame, modalities) -> list[dict]:
        """The cached clips of `clips` without one of `modalities`, each with the modality and the reason."""
        paths = dict(
            zip(
                clips["clip_id"],
                clips["video_path"].where(clips["video_path"] != "", clips["audio_path"]),
                strict=True,
            )
        )
        rows = []
        for clip_id, info in self.infos(clips["clip_id"]).items():
            for modality in modalities:
                if modality in info.get("absent", {}):
                    rows.append(
                        {
                            "clip_id": clip_id,
                            "path": paths[clip_id],
                            "modality": modality,
                            "reason": info["absent"][modality],
                        }
                    )
                    break
        return rows

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
        skipped = {} if retry_skipped else self._still_valid_skips(clips)
        stale = self._stale_partial_entries(clips, retry_skipped)
        todo = clips[~clips["clip_id"].map(lambda c: (self.has(c) and c not in stale) or c in skipped)]
        started = time.perf_counter()
        jobs = list(zip(todo["clip_id"], todo["video_path"], todo["audio_path"], strict=True))
        self.errors = {}
        if jobs:
            paths_of = {clip_id: (video, audio) for clip_id, video, audio in jobs}
            done, results = 0, _run(jobs, self, decoder, workers)
            infos = {}
            try:
                for clip_id, path, reason, error, info in tqdm(
                    results, total=len(jobs), desc=f"prepare {self.dir.name}", unit="clip"
                ):
                    done += 1
                    skipped.pop(clip_id, None)
                    if info is not None:
                        infos[clip_id] = info
                    if reason is not None:
                        files = file_fingerprint(*paths_of[clip_id])
                        skipped[clip_id] = {
                            "clip_id": clip_id,
                            "path": path,
                            "reason": reason,
                            "files": files,
                        }
                        log.warning("skipped %s: %s", path, reason)
                    elif error is not None:
                        self.errors[clip_id] = {"clip_id": clip_id, "path": path, "error": error}
                        log.error("could not prepare %s (not a media problem, not recorded): %s", path, error)
                        if len(self.errors) == done == min(FIRST_CLIPS_FAILING, len(jobs)):
                            raise BrokenEnvironment(self._stop_message(done))
                if len(self.errors) > len(jobs) / 2:
                    raise BrokenEnvironment(self._stop_message(done))
            finally:
                results.close()  # on a stop: cancel what the workers have not started
                write_json(self.skipped_file, sorted(skipped.values(), key=lambda r: r["clip_id"]))
                self._update_index(infos)
        stored = self.infos(clips["clip_id"])
        self._update_index({c: i for c, i in stored.items()})
        report = {
            "cache_dir": str(self.dir),
            "settings": self.prep.to_dict(),
            "clips": len(clips),
            "decoded_now": len(jobs),
            "seconds": round(time.perf_counter() - started, 2),
            "skipped": [skipped[c] for c in clips["clip_id"] if c in skipped],
            # Left out of this run only: retried by the next one.
            "errors": list(self.errors.values()),
            "absent": [
                {"clip_id": c, "modality": m, "reason": r}
                for c, info in stored.items()
                for m, r in sorted(info.get("absent", {}).items())
            ],
            "faces": summarise(
                self.prep.face_crop, {c: info["faces"] for c, info in stored.items() if "faces" in info}
            ),
        }
        return report

    def _update_index(self, infos: dict[str, dict]) -> None:
        """Merge `infos` into index.json (under the build lock; atomic, so readers see the old or the new)."""
        index = json.loads(self.index_file.read_text()) if self.index_file.is_file() else {}
        if all(index.get(c) == i for c, i in infos.items()):
            return
        index.update(infos)
        write_json(self.index_file, dict(sorted(index.items())))

    def _still_valid_skips(self, clips: pd.DataFrame) -> dict[str, dict]:
        """The recorded skips whose files are unchanged; older records without a fingerprint are retried."""
        paths = clips.set_index("clip_id")[["video_path", "audio_path"]]
        valid = {}
        for clip_id, record in self.skipped().items():
            if clip_id not in paths.index:
                valid[clip_id] = record  # not asked for now: keep it as it is
            elif record.get("files") and record["files"] == file_fingerprint(*paths.loc[clip_id]):
                valid[clip_id] = record
        return valid

    def _stale_partial_entries(self, clips: pd.DataFrame, retry: bool) -> set[str]:
        """Cached clips stored without a modality whose files changed since (or all of them, with `retry`)."""
        paths = clips.set_index("clip_id")[["video_path", "audio_path"]]
        return {
            clip_id
            for clip_id, info in self.infos(clips["clip_id"]).items()
            if info.get("absent") and (retry or info.get("files") != file_fingerprint(*paths.loc[clip_id]))
        }

    def _stop_message(self, done: int) -> str:
        first = next(iter(self.errors.values()))
        return (
            f"stopped preparing {self.dir}: {len(self.errors)} of the {done} clips tried so far failed with errors "
            f"that are not bad media, e.g. {first['path']}: {first['error']}\n"
            "Nothing was recorded as skipped for them, so the next run decodes them again. This is most likely the "
            "environment (a library that does not load or run): python -m cremad_lit doctor names it."
        )


def _prepare_one(job, cache: ClipCache, decoder: str):
    """(clip_id, path, media reason or None, other error or None, stored info or None): only bad media is a skip."""
    clip_id, video_path, audio_path = job
    try:
        sample = extract_clip(video_path, audio_path, cache.prep, decoder)
        info = clip_info(sample)
        if info["absent"]:  # like a skip, a missing modality holds only for the files it was found in
            info["files"] = file_fingerprint(video_path, audio_path)
            sample["info"] = np.array(json.dumps(info))
        cache.save(clip_id, sample)
        return clip_id, video_path or audio_path, None, None, clip_info(sample)
    except MediaError as error:
        return clip_id, error.path, error.reason, None, None
    except Exception as error:  # reported and counted by the caller; one odd failure must not stop the others
        return clip_id, video_path or audio_path, None, f"{type(error).__name__}: {error}", None


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
        pool = ThreadPoolExecutor(max_workers=workers)
        results = pool.map(_prepare_one, jobs, [cache] * len(jobs), [decoder] * len(jobs))
    else:
        # spawn: forking a process that already runs torch/OpenMP threads can deadlock.
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
        results = pool.map(_prepare_one, jobs, [cache] * len(jobs), [decoder] * len(jobs), chunksize=8)
    try:
        yield from results
    finally:  # a build that stops early must not decode the rest first
        pool.shutdown(wait=True, cancel_futures=True)
