"""Utterance functionals: openSMILE's 88 eGeMAPSv02 features per clip (pitch, loudness, voice quality, formants...),
cached one .npy per clip, and their speaker-level normalisation. Used by the baseline and by `data.functionals=egemaps`.

    from cremad_lit.data.functionals import egemaps_features, normalise_by_speaker
    features, skipped = egemaps_features(clips, cache_dir / "egemaps-eGeMAPSv02-16000", prep)   # clip_id -> (88,)
    features = normalise_by_speaker(features, clips, "standard")                                # per-speaker z-scores
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cremad_lit.data.cache import write_atomic
from cremad_lit.data.media import MediaError, read_audio

log = logging.getLogger(__name__)
FEATURE_SET = "eGeMAPSv02"
FUNCTIONALS = ("none", "egemaps")
N_EGEMAPS = 88


def feature_dir(cache_dir, cache_source: str, sample_rate: int) -> Path:
    """Where a corpus's eGeMAPS features are cached: beside its clip cache, shared by every run on it."""
    return Path(cache_dir) / cache_source / f"egemaps-{FEATURE_SET}-{sample_rate}"


def _smile():
    import opensmile

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def egemaps_of_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The 88 eGeMAPSv02 functionals of one mono float waveform."""
    return _smile().process_signal(audio, sample_rate).to_numpy(dtype=np.float32)[0]


def _egemaps_one(job) -> tuple[str, np.ndarray | None, str | None]:
    clip_id, video_path, audio_path, source, sample_rate, entry = job
    try:
        features = egemaps_of_audio(read_audio(video_path, audio_path, source, sample_rate), sample_rate)
    except MediaError as error:
        return clip_id, None, f"{error.path}: {error.reason}"
    write_atomic(Path(entry), lambda handle: np.save(handle, features))
    return clip_id, features, None


def egemaps_features(clips, cache_dir: Path, prep, workers: int = 0) -> tuple[dict, list[dict]]:
    """clip_id -> 88 eGeMAPS functionals, computed once per clip and cached; clips that fail are returned with why."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    features, skipped, jobs = {}, [], []
    for row in clips.itertuples():
        entry = cache_dir / f"{row.clip_id}.npy"
        if entry.is_file():
            features[row.clip_id] = np.load(entry)
        else:
            jobs.append(
                (row.clip_id, row.video_path, row.audio_path, prep.audio_source, prep.sample_rate, str(entry))
            )
    if jobs:
        progress = {"total": len(jobs), "desc": "eGeMAPS", "unit": "clip"}
        # Inside a joblib (loky) worker of a parallel sweep, child processes cannot start: compute them in turn.
        if workers > 0 and multiprocessing.get_start_method(allow_none=True) in (
            None,
            "fork",
            "spawn",
            "forkserver",
        ):
            with ProcessPoolExecutor(workers) as pool:
                results = list(tqdm(pool.map(_egemaps_one, jobs, chunksize=8), **progress))
        else:
            results = [_egemaps_one(job) for job in tqdm(jobs, **progress)]
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
