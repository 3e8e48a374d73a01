"""Classical baselines on exactly the split train.py would use, written like a training run (metrics.json, ...).

    python -m cremad_lit.baseline data=ravdess data.root=../shared/ravdess-speech split.folds=6 split.fold=0
    python -m cremad_lit.baseline -m data=ravdess data.root=DIR split.folds=6 split.fold=0,1,2,3,4,5 method=majority
    python -m cremad_lit.report logs/baseline/multiruns/<time>

`method=egemaps_logreg` (default): openSMILE's 88 eGeMAPSv02 functionals per clip (cached beside the clip cache),
standardised, logistic regression with C chosen on the validation actors. `method=compare_logreg`: the same on the
6,373 ComParE 2016 functionals. `method=majority`: the training set's most frequent emotion. `data.speaker_norm=standard`
z-scores each speaker's features over that speaker's clips first. Writes metrics.json, confusion.png, predictions.csv, split.csv and prepare_report.json into its run
dir, and logs to W&B like train.py when a logger is on. Defaults: conf/baseline.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, open_dict

from cremad_lit.data.cache import write_json
from cremad_lit.data.functionals import feature_dir, functionals_features, normalise_by_speaker
from cremad_lit.data.splits import LEAKY_WARNING
from cremad_lit.environment import require_environment
from cremad_lit.loggers import build_loggers, finish_loggers, log_config, log_predictions_table
from cremad_lit.module import results_from_predictions
from cremad_lit.pipeline import build_datamodule, run_info
from cremad_lit.results import write_results

log = logging.getLogger(__name__)
# method -> the functionals it reads (None: no features)
METHODS = {"egemaps_logreg": "egemaps", "compare_logreg": "compare", "majority": None}


def fit_and_predict(method: str, train, val, test, c_grid) -> tuple[object, dict]:
    """Fit on train (choosing C on val for the logistic regression); return the model and what was chosen."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val) = train, val
    if method == "majority":
        return DummyClassifier(strategy="most_frequent").fit(x_train, y_train), {}
    scores = {}
    for c in c_grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), max_iter=5000))
        model.fit(x_train, y_train)
        scores[float(c)] = float(model.score(x_val, y_val)) if len(y_val) else 0.0
    best = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    model = make_pipeline(StandardScaler(), LogisticRegression(C=best, max_iter=5000)).fit(x_train, y_train)
    return model, {"C": best, "val_accuracy_by_C": scores}


def run_baseline(cfg: DictConfig) -> float:
    require_environment()  # a broken install stops here, before any clip is touched
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, not {cfg.method!r}")
    run_dir = Path(cfg.paths.output_dir)
    if cfg.split.get("by", "actor") == "clip":
        log.warning(LEAKY_WARNING)
    with open_dict(cfg):
        cfg.data.modalities = ["audio"]  # features come from the audio (the split is the same as train.py's)
    # Only the clips and the split: the features (and their speaker normalisation) are made below.
    datamodule = build_datamodule(cfg.data, None, cache="off", speaker_norm="none", functionals="none")
    datamodule.prepare_data()
    datamodule.setup("test")
    clips = datamodule.clips
    kind = METHODS[cfg.method]
    if kind is None:
        features, skipped = {c: np.zeros(1, dtype=np.float32) for c in clips["clip_id"]}, []
    else:
        features_at = feature_dir(
            cfg.paths.cache_dir, datamodule.cache_source, datamodule.prep.sample_rate, kind
        )
        features, skipped = functionals_features(
            clips, features_at, datamodule.prep, int(cfg.data.prepare_workers), kind
        )
    speakers = dict(zip(clips["clip_id"], clips["actor_id"], strict=True))
    features = normalise_by_speaker(features, speakers, cfg.data.get("speaker_norm", "none"))
    write_json(
        run_dir / "prepare_report.json", {"rejected": clips.attrs.get("rejected", []), "skipped": skipped}
    )

    def arrays(split: str):
        part = clips[(clips["split"] == split) & clips["clip_id"].isin(features)]
        x = np.stack([features[c] for c in part["clip_id"]]) if len(part) else np.zeros((0, 1))
        return x, part["emotion"].map(list(classes).index).to_numpy(), part["clip_id"].tolist()

    classes = datamodule.classes
    x_train, y_train, _ = arrays("train")
    x_val, y_val, _ = arrays("val")
    x_test, y_test, test_ids = arrays("test")
    model, chosen = fit_and_predict(
        cfg.method, (x_train, y_train), (x_val, y_val), (x_test, y_test), cfg.C_grid
    )
    probabilities = np.zeros((len(y_test), len(classes)))
    probabilities[:, model.classes_] = model.predict_proba(x_test)
    predictions = [
        {"clip_id": c, "label": int(y), "pred": int(p.argmax()), "probs": p.tolist()}
        for c, y, p in zip(test_ids, y_test, probabilities, strict=True)
    ]
    val_accuracy = float(model.score(x_val, y_val)) if len(y_val) else float("nan")
    loggers = build_loggers(cfg, run_dir, resuming=False, job_type="baseline")
    log_config(loggers, cfg)
    metrics = write_results(
        run_dir,
        results_from_predictions(predictions, classes),
        predictions,
        loggers,
        extra={
            "task": "baseline",
            "method": cfg.method,
            "speaker_norm": cfg.data.get("speaker_norm", "none"),
            "split": "test",
            "split_by": datamodule.split_by,
            "protocol": datamodule.protocol,
            "dataset": datamodule.dataset,
            "test_actors": datamodule.actors("test"),
            "val_accuracy": val_accuracy,
            "chosen": chosen,
            "n_train": int(len(y_train)),
            **run_info(),
        },
        data_root=datamodule.root,
        speakers=speakers,
        classes=classes,
    )
    log_predictions_table(loggers, predictions, datamodule)
    finish_loggers(loggers)
    print(
        f"{cfg.method}: test accuracy (WAR) {metrics['accuracy']:.4f}, UAR {metrics['uar']:.4f}, macro F1 {metrics['f1_macro']:.4f} on "
        f"{metrics['n_test']} clips (val accuracy {val_accuracy:.4f}{', C=' + str(chosen['C']) if chosen else ''})\n"
        f"run dir: {run_dir.resolve()}"
    )
    return val_accuracy


@hydra.main(version_base="1.3", config_path="../conf", config_name="baseline")
def main(cfg: DictConfig) -> float:
    return run_baseline(cfg)


if __name__ == "__main__":
    main()
