"""Utterance functionals from openSMILE, cached one .npy per clip, and their speaker-level normalisation. Used by the
baseline (`method=egemaps_logreg|compare_logreg`) and by the deep models' branch (`data.functionals=egemaps|compare`).

    from cremad_lit.data.functionals import functionals_features, normalise_by_speaker
    features, skipped = functionals_features(clips, feature_dir(cache, source, 16000, "compare"), prep, kind="compare")
    features = normalise_by_speaker(features, speakers, "standard")                             # per-speaker z-scores

`egemaps`: the 88 eGeMAPSv02 functionals (pitch, loudness, jitter, shimmer, formants: the field's minimal set).
`compare`: the 6,373 ComParE 2016 functionals (the INTERSPEECH Computational Paralinguistics challenge set: many more
spectral, MFCC and voicing statistics), 25 KB a clip.
`ge2e`: not openSMILE's but a pretrained network's: the GE2E speaker encoder shipped in Resemblyzer's wheel
(models/ge2e.py), each LSTM layer's mean state over the clip and the utterance embedding, 1,024 values, 4 KB a clip.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cremad_lit.data import canary
from cremad_lit.data.isolation import canary_in_worker, run_isolated
from cremad_lit.data.media import MediaError, read_audio
from cremad_lit.io import write_atomic

log = logging.getLogger(__name__)
# data.functionals / the baseline's feature set -> (openSMILE feature set, features per clip)
FEATURE_SETS = {
    "egemaps": ("eGeMAPSv02", 88),
    "compare": ("ComParE_2016", 6373),
    "ge2e": (
        "GE2E-resemblyzer-0.1.4",
        1024,
    ),  # keyed by the wheel the lock pins: its weights are the features
}
FUNCTIONALS = ("none", *FEATURE_SETS)


def feature_dir(cache_dir, cache_source: str, sample_rate: int, kind: str = "egemaps") -> Path:
    """Where a corpus's functionals are cached: beside its clip cache, shared by every run on it."""
    return Path(cache_dir) / cache_source / f"{kind}-{FEATURE_SETS[kind][0]}-{sample_rate}"


@lru_cache(maxsize=2)
def _smile(kind: str):
    import opensmile

    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, FEATURE_SETS[kind][0]),
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def functionals_of_audio(audio: np.ndarray, sample_rate: int, kind: str = "egemaps") -> np.ndarray:
    """The functionals of one mono float waveform (88 for egemaps, 6,373 for compare, 1,024 for ge2e)."""
    if kind == "ge2e":
        from cremad_lit.models.ge2e import waveform_features

        return waveform_features(audio, sample_rate)
    return _smile(kind).process_signal(audio, sample_rate).to_numpy(dtype=np.float32)[0]


def audio_functionals(
    video_path: str, audio_path: str, source: str, sample_rate: int, kind: str
) -> np.ndarray:
    """The functionals of a clip's audio; a failure is judged by the canary (data/canary.py): MediaError for a bad
    file, BrokenEnvironment when known-good audio fails the same way."""
    return canary.guarded(
        lambda v, a: functionals_of_audio(read_audio(v, a, source, sample_rate), sample_rate, kind),
        video_path,
        audio_path,
        purpose=f"functionals {kind} {source} {sample_rate}",
    )


def _functionals_one(job) -> tuple[str, np.ndarray | None, str | None]:
    clip_id, video_path, audio_path, source, sample_rate, entry, kind = job
    try:
        features = audio_functionals(video_path, audio_path, source, sample_rate, kind)
    except MediaError as error:
        return clip_id, None, f"{error.path}: {error.reason}"
    write_atomic(Path(entry), lambda handle: np.save(handle, features))
    return clip_id, features, None


def _functionals_canary(video_path: str, audio_path: str, source: str, sample_rate: int, kind: str) -> None:
    """The canary of a clip's kinds through the same functionals, in a fresh worker (after a crash or hang)."""

    def compute(video, audio):
        return functionals_of_audio(read_audio(video, audio, source, sample_rate), sample_rate, kind)

    canary.check(compute, video_path, audio_path, f"crash check functionals {kind}")


def load_cached_vector(entry: Path) -> np.ndarray | None:
    """A cached feature vector, or None when it is missing or does not read back whole (then computed again)."""
    if not entry.is_file():
        return None
    try:
        return np.load(entry)
    except (ValueError, OSError, EOFError) as error:
        log.warning("%s is damaged (%s): computing it again", entry, error)
        return None


def functionals_features(
    clips, cache_dir: Path, prep, workers: int = 0, kind: str = "egemaps", timeout: float | None = 300.0
) -> tuple[dict, list[dict]]:
    """clip_id -> the clip's functionals, computed once per clip and cached; clips that fail are returned with why."""
    if kind not in FEATURE_SETS:
        raise ValueError(f"functionals must be one of {tuple(FEATURE_SETS)}, not {kind!r}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    features, skipped, jobs = {}, [], []
    for row in clips.itertuples():
        entry = cache_dir / f"{row.clip_id}.npy"
        stored = load_cached_vector(entry)
        if stored is not None:
            features[row.clip_id] = stored
        else:
            jobs.append(
                (
                    row.clip_id,
                    row.video_path,
                    row.audio_path,
                    prep.audio_source,
                    prep.sample_rate,
                    str(entry),
                    kind,
                )
            )
    if jobs:
        # Each clip in a worker process (data/isolation.py): a crash or hang inside openSMILE or a decoder costs that
        # clip only. Inside a joblib worker of a parallel sweep, in turn.
        results = run_isolated(
            _functionals_one,
            jobs,
            workers,
            timeout,
            failed=lambda job, reason: (job[0], None, f"{job[1] or job[2]}: {reason}"),
            check_environment=lambda pool, job, reason: canary_in_worker(
                pool, _functionals_canary, job[1:5] + (job[6],), job[1] or job[2], timeout, reason
            ),
            threads=False,  # one openSMILE extractor per process: not shared between threads
        )
        results = tqdm(results, total=len(jobs), desc=FEATURE_SETS[kind][0], unit="clip")
        for clip_id, values, reason in results:
            if values is None:
                log.warning("skipped %s", reason)
                skipped.append({"clip_id": clip_id, "reason": reason})
            else:
                features[clip_id] = values
    return features, skipped


def normalise_by_speaker(features: dict, speakers: dict, mode: str) -> dict:
    """Each speaker's feature vectors minus that speaker's mean over all of their clips (mode="standard": also divided
    by the speaker's std), the labels unused: `data.speaker_norm`, as for the Mel images. `speakers`: clip_id ->
    speaker, for every clip of `features`."""
    if mode == "none":
        return features
    by_speaker: dict = {}
    for clip_id in features:
        by_speaker.setdefault(speakers[clip_id], []).append(clip_id)
    normalised = {}
    for ids in by_speaker.values():
        values = np.stack([features[c] for c in ids]).astype(np.float64)
        values -= values.mean(axis=0)
        if mode == "standard":
            values /= np.maximum(values.std(axis=0), 1e-6)
        normalised.update(zip(ids, values.astype(np.float32), strict=True))
    return normalised
