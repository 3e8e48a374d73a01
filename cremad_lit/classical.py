"""Classical models (functionals + standardisation + logistic regression, or the majority class) as saved members.

    python -m cremad_lit baseline data=ravdess data.root=DIR method=compare_logreg data.speaker_norm=standard
    python evaluate.py ckpt_path=[<train run>/checkpoints/last.ckpt,<baseline run dir>] ensemble_weights=val

The baseline command fits one (`fit_classical`) and saves it into its run dir (`classical_model.npz`: plain arrays,
no pickled code; `classical_model.json`: what it reads and how), so evaluate.py and predict can use a baseline run
like a checkpoint: as an ensemble member beside deep models, its probabilities averaged with theirs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cremad_lit.data.features import Preprocessing
from cremad_lit.data.functionals import feature_dir, functionals_features, normalise_by_speaker
from cremad_lit.io import write_atomic, write_json

# method -> the features it reads (None: no features; fer2013: the zero-shot expression model's, face_expressions.py)
METHODS = {
    "egemaps_logreg": "egemaps",
    "compare_logreg": "compare",
    "ge2e_logreg": "ge2e",  # the pretrained GE2E speaker encoder's layer means and embedding (models/ge2e.py)
    "majority": None,
    "fer_zero_shot": "fer2013",
}
FACE_FEATURES = "fer2013"  # the one kind read from the video: the baseline reads video clips for it
ARRAYS_FILE = "classical_model.npz"
INFO_FILE = "classical_model.json"


@dataclasses.dataclass
class ClipSource:
    """The clips a classical model reads, without any loader: the assigned clips (with their split), the clips whose
    speech the speaker statistics read (Corpus.speaker_speech), the classes, and how clips are read (the caches' key
    for the corpus, the preprocessing, the decoder)."""

    clips: pd.DataFrame
    speech: pd.DataFrame
    classes: tuple
    cache_source: str
    prep: Preprocessing
    decoder: str = "decord"
    weights: dict | None = None  # training clip_id -> its weight (Corpus.training_weights); None: all alike

    @classmethod
    def of(cls, corpus, assigned, prep: Preprocessing, decoder: str = "decord") -> ClipSource:
        """From a Corpus and its Assignment (corpus.py)."""
        clips = assigned.clips
        train = clips[clips["split"] == "train"]
        weights = corpus.training_weights(train)
        weights = None if weights is None else dict(zip(train["clip_id"], weights, strict=True))
        return cls(
            clips, corpus.speaker_speech(clips), corpus.classes, corpus.cache_source, prep, decoder, weights
        )


def clip_features(source: ClipSource, kind: str | None, cache_dir, speaker_norm: str, workers: int = 0):
    """clip_id -> features for every clip of `source` (its functionals, cached per clip; one zero for the majority
    class), standardised per speaker over that speaker's speech when `speaker_norm` asks; and the clips that could
    not be read, with why."""
    clips = source.clips
    if kind is None:
        return {c: np.zeros(1, dtype=np.float32) for c in clips["clip_id"]}, []
    if kind == FACE_FEATURES:  # zero-shot: nothing to normalise per speaker
        from cremad_lit.face_expressions import expression_dir, expression_features

        at = expression_dir(cache_dir, source.cache_source, source.prep)
        return expression_features(clips, at, source.prep, source.decoder)
    # The speaker statistics read every clip of the speaker that data.speaker_stats names (with all_speech, also the
    # clips left out for their label); only the assigned clips get features back.
    speech = source.speech if speaker_norm != "none" else clips
    features_at = feature_dir(cache_dir, source.cache_source, source.prep.sample_rate, kind)
    features, skipped = functionals_features(speech, features_at, source.prep, workers, kind)
    speakers = dict(zip(speech["clip_id"], speech["actor_id"], strict=True))
    normalised = normalise_by_speaker(features, speakers, speaker_norm)
    wanted = set(clips["clip_id"])
    return {c: v for c, v in normalised.items() if c in wanted}, [
        s for s in skipped if s["clip_id"] in wanted
    ]


def design_matrix(clips, features: dict, classes, split: str):
    """x, y and clip ids of one split's clips that have features (`split="all"`: every clip)."""
    part = clips[clips["clip_id"].isin(features)]
    if split != "all":
        part = part[part["split"] == split]
    x = np.stack([features[c] for c in part["clip_id"]]) if len(part) else np.zeros((0, 1))
    return x, part["emotion"].map(list(classes).index).to_numpy(), part["clip_id"].tolist()


def fit_classical(method: str, train, val, c_grid, weights=None) -> tuple[dict, dict]:
    """Fit on train (x, y), choosing C on val for the logistic regression; return the model's arrays and what was
    chosen. `method`: majority | *_logreg. `weights`: per training clip (a mix's data.sampling), None: all alike."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val) = train, val
    labels = np.unique(y_train)
    if method == "majority":
        counts = np.bincount(y_train)
        prior = np.zeros(len(labels))
        prior[np.searchsorted(labels, counts.argmax())] = (
            1.0  # all mass on the most frequent, as DummyClassifier
        )
        return {"labels": labels, "prior": prior}, {}
    if not len(y_val) and len(c_grid) > 1:
        raise ValueError(
            f"no validation speakers to choose C from C_grid={list(c_grid)} on (final=all_speakers holds none out): "
            "give one value, such as C_grid=[0.01]"
        )
    scores = {}
    for c in c_grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), max_iter=5000))
        model.fit(x_train, y_train, logisticregression__sample_weight=weights)
        scores[float(c)] = float(model.score(x_val, y_val)) if len(y_val) else 0.0
    best = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best, max_iter=5000))
    model.fit(x_train, y_train, logisticregression__sample_weight=weights)
    scaler, logreg = model[0], model[1]
    arrays = {
        "labels": logreg.classes_,
        "mean": scaler.mean_,
        "scale": scaler.scale_,
        "coef": logreg.coef_,
        "intercept": logreg.intercept_,
    }
    return arrays, {"C": best, "val_accuracy_by_C": scores}


def probabilities(arrays: dict, x: np.ndarray, num_classes: int) -> np.ndarray:
    """N x num_classes probabilities (scikit-learn's predict_proba, from the saved arrays); classes the training set
    lacked get 0."""
    out = np.zeros((len(x), num_classes))
    labels = np.asarray(arrays["labels"], dtype=int)
    if "mapping" in arrays:  # fer_zero_shot: the expression model's probabilities, mapped onto the classes
        from cremad_lit.face_expressions import mapped_probabilities

        return mapped_probabilities(x, arrays["mapping"])
    if "prior" in arrays:
        out[:, labels] = arrays["prior"]
        return out
    logits = ((x - arrays["mean"]) / arrays["scale"]) @ arrays["coef"].T + arrays["intercept"]
    if logits.shape[1] == 1:  # two classes: one logistic unit
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        out[:, labels] = np.stack([1 - p, p], axis=1)
        return out
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    out[:, labels] = exp / exp.sum(axis=1, keepdims=True)
    return out


def fit_on_split(
    source: ClipSource,
    method: str,
    kind: str | None,
    c_grid,
    cache_dir,
    speaker_norm: str,
    workers: int = 0,
):
    """Features of every clip of `source`, then `fit_classical` on its train split (C chosen on its val split): the
    fitted arrays, what was chosen, the features (clip_id -> vector) and the clips that could not be read. The
    source's `weights` (a mix's data.sampling) weigh the training clips as the network's loader draws them."""
    features, skipped = clip_features(source, kind, cache_dir, speaker_norm, workers)
    classes = source.classes
    if method == "fer_zero_shot":  # nothing to fit: the mapping of its classes onto the corpus's is the model
        from cremad_lit.face_expressions import class_mapping

        return {"labels": np.arange(len(classes)), "mapping": class_mapping(classes)}, {}, features, skipped
    x, y, clip_ids = design_matrix(source.clips, features, classes, "train")
    val = design_matrix(source.clips, features, classes, "val")[:2]
    weights = None
    if source.weights is not None:  # scaled to a mean of 1, so that C means what it means without weights
        weights = np.array([source.weights[c] for c in clip_ids])
        weights *= len(weights) / weights.sum()
    fitted, chosen = fit_classical(method, (x, y), val, c_grid, weights)
    return fitted, chosen, features, skipped


def split_predictions(arrays: dict, clips, features: dict, classes, split: str) -> list[dict]:
    """One split's predictions (clip_id, label, pred, probs), as the networks' test loop gives them."""
    x, y, clip_ids = design_matrix(clips, features, classes, split)
    if not len(y):
        return []
    probs = probabilities(arrays, x, len(classes))
    return [
        {"clip_id": c, "label": int(label), "pred": int(p.argmax()), "probs": p.tolist()}
        for c, label, p in zip(clip_ids, y, probs, strict=True)
    ]


def save_classical(run_dir: Path, arrays: dict, info: dict) -> None:
    """The arrays and the settings (`info`: method, functionals, speaker_norm, classes, data, ...), each written
    atomically; the JSON last, so a folder with the JSON always has its arrays."""
    write_atomic(Path(run_dir) / ARRAYS_FILE, lambda handle: np.savez(handle, **arrays))
    write_json(Path(run_dir) / INFO_FILE, info)


def is_classical(path) -> bool:
    return (Path(str(path)) / INFO_FILE).is_file()


def load_classical(run_dir) -> tuple[dict, dict]:
    run_dir = Path(str(run_dir))
    if not is_classical(run_dir) or not (run_dir / ARRAYS_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no saved classical model ({INFO_FILE}, {ARRAYS_FILE}): is it a baseline run dir "
            "written by `python -m cremad_lit baseline` (0.5 or later)?"
        )
    info = json.loads((run_dir / INFO_FILE).read_text())
    with np.load(run_dir / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    return arrays, info
