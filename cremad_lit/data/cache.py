"""Prepared cache: each clip decoded once into model-ready tensors, one folder per preprocessing setting.

    python -m cremad_lit prepare data.root=/path/to/CREMA-D       # the command; this module is its engine

Layout: `<cache_dir>/<corpus>-<hash of its root>/<Preprocessing.key()>/settings.json`, `<clip_id>.npz` (uint8 frames,
float16 Mel, and `info`: the modalities the clip lacks with the reason, how its face was found), `index.json` (every
entry's `info`, so a run knows which clips lack what without opening them) and `skipped.json` (clip, path, reason,
and the size and modification time of its files, for every clip with nothing usable). A clip is stored with whatever
modalities it has: a silent video is kept for video-only runs, and a run that needs its sound leaves it out by name. Every file is written to a temporary name and renamed, so a run killed at any point leaves only whole
entries and the next run resumes where it stopped.

Bad files never stop a build and a broken environment always does. A clip that fails with a MediaError (a file that
cannot be opened, is empty, truncated or too long, has no audio) or any other exception is judged by the canary
(data/canary.py): known-good media decoded the same way. If it decodes, the clip is recorded as skipped with the reason
and its files' fingerprint (decoded again once they change); if not, the build stops (BrokenEnvironment) and records
nothing. With `workers` > 0 each clip decodes in a worker process (pebble): a decoder that crashes its process or runs
past `decode_timeout_s` costs that clip only (skipped: "decoder crashed (SIGSEGV)" / "decoding took longer than ..."),
and the build goes on with a new worker. A full disk stops the build with the folder and the space needed (io.py); an
entry damaged on disk is found when it is loaded (`DamagedEntry`) and decoded again by the dataset.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: no lock; parallel jobs may then decode the same clip twice (harmless, atomic)
    fcntl = None

from cremad_lit.data import canary
from cremad_lit.data.faces import summarise
from cremad_lit.data.features import Preprocessing, clip_info, decode_clip, extract_clip
from cremad_lit.data.isolation import canary_in_worker, run_isolated
from cremad_lit.data.media import MediaError
from cremad_lit.errors import Stop
from cremad_lit.io import (
    DiskFull,
    explain_write_error,
    free_bytes,
    human,
    remove_dead_writers_files,
    write_atomic,
    write_json,
)

ROOM_SHARE = 0.95  # entries differ in size a little (clip lengths): stop early rather than fill the disk to the last byte
DEFAULT_DECODE_TIMEOUT_S = (
    300.0  # a ~3 s clip decodes in well under a second: only a hung decoder takes this long
)

log = logging.getLogger(__name__)


class DamagedEntry(MediaError):
    """A cache entry whose bytes no longer read back (changed on disk, truncated): decode the clip again."""


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
        self.estimate: dict | None = None  # the cache's size, measured on the first entry a build writes

    def entry(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.npz"

    def has(self, clip_id: str) -> bool:
        return self.entry(clip_id).is_file()

    def load(self, clip_id: str, names=None) -> dict:
        """The clip's stored arrays (`names`: only these, e.g. ("mel",); npz members are read one by one).
        DamagedEntry when the entry does not read back whole: each member carries a CRC-32 that is checked."""
        entry = self.entry(clip_id)
        try:
            with np.load(entry) as stored:
                return {name: stored[name] for name in stored.files if names is None or name in names}
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as error:
            if isinstance(error, OSError) and not entry.is_file():
                raise
            raise DamagedEntry(entry, f"cache entry is damaged ({type(error).__name__}: {error})") from error

    def decode_again(self, clip_id: str, video_path: str, audio_path: str, decoder: str) -> dict:
        """Decode a clip whose entry is damaged and store it again (the canary judges a failure, as in a build)."""
        with contextlib.suppress(FileNotFoundError):
            self.entry(clip_id).unlink()
        sample = decode_clip(video_path, audio_path, self.prep, decoder)
        self.save(clip_id, sample)
        return sample

    def save(self, clip_id: str, sample: dict) -> None:
        write_atomic(self.entry(clip_id), lambda handle: np.savez(handle, **sample))

    @property
    def index_file(self) -> Path:
        return self.dir / "index.json"

    def infos(self, clip_ids) -> dict[str, dict]:
        """clip_id -> stored `info` of each cached clip among `clip_ids` (index.json, else the entry itself)."""
        index = _read_json(self.index_file, {})
        found = {}
        for clip_id in clip_ids:
            if clip_id in index:
                found[clip_id] = index[clip_id]
            elif self.has(clip_id):
                try:
                    found[clip_id] = clip_info(self.load(clip_id, ("info",)))
                except DamagedEntry as error:  # read as missing: the next build decodes it again
                    log.warning("%s: decoding it again", error)
                    self.entry(clip_id).unlink(missing_ok=True)
        return found

    def partial(self, clip_ids) -> dict[str, str]:
        """clip_id -> why the cached clip decoded only in part (a file cut short: less than its header declares)."""
        return {c: info["partial"] for c, info in self.infos(clip_ids).items() if info.get("partial")}

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
        return {row["clip_id"]: row for row in _read_json(self.skipped_file, [])}

    def open(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise explain_write_error(error, self.dir / "settings.json") from error
        settings = self.dir / "settings.json"
        if not settings.exists():
            write_json(settings, self.prep.to_dict())

    def build(
        self,
        clips: pd.DataFrame,
        decoder: str = "decord",
        workers: int = 0,
        retry_skipped: bool = False,
        decode_timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    ) -> dict:
        """Decode every clip of `clips` that is not cached yet; return a report (also saved as skipped.json). A cache
        folder that refuses writes is read as it is when it already holds every clip, else NotWritable."""
        try:
            self.open()
            lock = open(self.dir / ".lock", "w")  # noqa: SIM115 (held for the whole build)
        except OSError as error:
            refused = explain_write_error(error, self.dir / ".lock")
            if isinstance(refused, Stop) and self.dir.is_dir() and not self._todo(clips, retry_skipped)[0]:
                log.info("cache %s is read-only and holds every clip: read as it is", self.dir)
                return self._report(clips, [], self._still_valid_skips(clips), time.perf_counter())
            raise refused from error
        # One builder at a time: jobs of a parallel sweep that start together wait, then find the clips cached.
        with lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            remove_dead_writers_files(self.dir)
            return self._build(clips, decoder, workers, retry_skipped, decode_timeout_s)

    def _todo(self, clips: pd.DataFrame, retry_skipped: bool) -> tuple[list[tuple[str, str, str]], dict]:
        """The (clip_id, video, audio) jobs to decode, and the recorded skips that still hold."""
        skipped = {} if retry_skipped else self._still_valid_skips(clips)
        stale = self._stale_partial_entries(clips, retry_skipped)
        todo = clips[~clips["clip_id"].map(lambda c: (self.has(c) and c not in stale) or c in skipped)]
        return list(zip(todo["clip_id"], todo["video_path"], todo["audio_path"], strict=True)), skipped

    def _build(self, clips, decoder: str, workers: int, retry_skipped: bool, decode_timeout_s) -> dict:
        jobs, skipped = self._todo(clips, retry_skipped)
        started = time.perf_counter()
        infos = {}
        paths_of = {clip_id: (video, audio) for clip_id, video, audio in jobs}
        results = run_isolated(
            functools.partial(_prepare_one, cache=self, decoder=decoder),
            jobs,
            workers,
            decode_timeout_s,
            failed=lambda job, reason: (job[0], job[1] or job[2], reason, None),
            check_environment=lambda pool, job, reason: canary_in_worker(
                pool,
                _decode_canary,
                (self.prep, decoder, job[1], job[2]),
                job[1] or job[2],
                decode_timeout_s,
                reason,
            ),
        )
        try:
            for clip_id, path, reason, info in tqdm(
                results, total=len(jobs), desc=f"prepare {self.dir.name}", unit="clip", disable=not jobs
            ):
                skipped.pop(clip_id, None)
                if info is not None:
                    if not infos:  # the first stored entry: does the rest fit on the disk?
                        self._check_room(clip_id, len(jobs))
                    infos[clip_id] = info
                if reason is not None:
                    files = file_fingerprint(*paths_of[clip_id])
                    skipped[clip_id] = {"clip_id": clip_id, "path": path, "reason": reason, "files": files}
                    log.warning("skipped %s: %s", path, reason)
        except BaseException:
            results.close()  # the workers stop: nothing more is decoded after a stop
            # What was decoded before a stop is whole and kept; a second failure (the same full disk) must not hide
            # the first.
            with contextlib.suppress(Stop):
                self._record(skipped, infos)
            raise
        self._record(skipped, infos)
        return self._report(clips, jobs, skipped, started)

    def _check_room(self, first: str, clips: int) -> None:
        """Estimate what `clips` entries take from the first one stored (this corpus, these settings); DiskFull with
        the numbers, before the rest is decoded, when the cache's disk cannot hold them."""
        per_clip = self.entry(first).stat().st_size
        needed, free = per_clip * (clips - 1), free_bytes(self.dir)
        self.estimate = {"clips": clips, "bytes_per_clip": per_clip, "bytes": per_clip * clips, "free": free}
        log.info(
            "cache %s: about %s for %d clips (%s each)",
            self.dir,
            human(per_clip * clips),
            clips,
            human(per_clip),
        )
        if free is not None and needed > ROOM_SHARE * free:
            raise DiskFull(
                f"the prepared cache needs about {human(per_clip * clips)} for {clips} clips ({human(per_clip)} a "
                f"clip, measured on the first) and {self.dir} has {human(free)} free: point paths.cache_dir at a "
                "larger disk, shrink what is stored (data.preprocessing.frames, image_size), or data.cache=off to "
                "decode on the fly. What was written is whole and kept."
            )

    def _record(self, skipped: dict, infos: dict) -> None:
        write_json(self.skipped_file, sorted(skipped.values(), key=lambda r: r["clip_id"]))
        self._update_index(infos)

    def _report(self, clips: pd.DataFrame, jobs: list, skipped: dict, started: float) -> dict:
        stored = self.infos(clips["clip_id"])
        with contextlib.suppress(Stop):  # a read-only cache keeps the index it has
            self._update_index(dict(stored.items()))
        return {
            "cache_dir": str(self.dir),
            "settings": self.prep.to_dict(),
            "clips": len(clips),
            "decoded_now": len(jobs),
            "size_estimate": self.estimate,  # from the first entry written by this build (None: nothing new)
            "seconds": round(time.perf_counter() - started, 2),
            "skipped": [skipped[c] for c in clips["clip_id"] if c in skipped],
            "absent": [
                {"clip_id": c, "modality": m, "reason": r}
                for c, info in stored.items()
                for m, r in sorted(info.get("absent", {}).items())
            ],
            "faces": summarise(
                self.prep.face_crop, {c: info["faces"] for c, info in stored.items() if "faces" in info}
            ),
        }

    def _update_index(self, infos: dict[str, dict]) -> None:
        """Merge `infos` into index.json (under the build lock; atomic, so readers see the old or the new)."""
        index = _read_json(self.index_file, {})
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


def _read_json(path: Path, empty):
    """A JSON file the cache keeps, or `empty` when it is missing or damaged (it is rebuilt from the entries)."""
    if not path.is_file():
        return empty
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        log.warning("%s is damaged (%s): rebuilt from the cache entries", path, error)
        return empty


def _prepare_one(job, cache: ClipCache, decoder: str):
    """(clip_id, path, skip reason or None, stored info or None). Raises only what stops the build."""
    clip_id, video_path, audio_path = job
    try:
        sample = decode_clip(video_path, audio_path, cache.prep, decoder)
    except MediaError as error:
        return clip_id, error.path, error.reason, None
    info = clip_info(sample)
    if info["absent"]:  # like a skip, a missing modality holds only for the files it was found in
        info["files"] = file_fingerprint(video_path, audio_path)
        sample["info"] = np.array(json.dumps(info))
    cache.save(clip_id, sample)
    return clip_id, video_path or audio_path, None, clip_info(sample)


def _decode_canary(prep, decoder, video_path, audio_path) -> None:
    modalities = ("audio", "video") if video_path else ("audio",)

    def decode(video, audio):
        return extract_clip(video, audio, prep, decoder, modalities)

    canary.check(decode, video_path, audio_path, "crash check")
