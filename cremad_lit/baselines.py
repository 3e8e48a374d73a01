"""The baseline run: classical models fitted and tested on train.py's split (`run_baseline`).

Usage and options: commands/baseline.py (`python -m cremad_lit baseline`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from cremad_lit.classical import (
    FACE_FEATURES,
    METHODS,
    ClipSource,
    fit_on_split,
    save_classical,
    split_predictions,
)
from cremad_lit.data.corpus import Corpus, check_data_root
from cremad_lit.data.dataset import media_of
from cremad_lit.data.features import Preprocessing
from cremad_lit.data.splits import LEAKY_WARNING, save_split
from cremad_lit.environment import require_environment
from cremad_lit.io import write_json
from cremad_lit.loggers import build_loggers, finish_loggers, log_config, log_predictions_table
from cremad_lit.metrics import results_from_predictions
from cremad_lit.pipeline import run_info
from cremad_lit.results import scores_line, where_line, write_results

log = logging.getLogger(__name__)


def run_baseline(cfg: DictConfig) -> float:
    require_environment()  # a broken install stops here, before any clip is touched
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, not {cfg.method!r}")
    run_dir = Path(cfg.paths.output_dir)
    if cfg.split.get("by", "actor") == "clip":
        log.warning(LEAKY_WARNING)
    kind = METHODS[cfg.method]
    zero_shot = kind == FACE_FEATURES
    with open_dict(cfg):
        # Features come from the audio (the split is the same as train.py's), or for the face model the video.
        cfg.data.modalities = ["video"] if zero_shot else ["audio"]
        if zero_shot:
            cfg.data.speaker_norm = "none"
    if zero_shot:
        log.info("%s: nothing is trained, so every clip of every speaker is a test clip", cfg.method)
    # Only the clips and the split (no loader): the features and their speaker normalisation are made below.
    check_data_root(cfg.data)
    corpus = Corpus.from_config(cfg.data)
    assigned = corpus.assign(corpus.catalog(), eval_split="all" if zero_shot else "test")
    save_split(assigned.table, run_dir / "split.csv")
    clips = assigned.clips
    source = ClipSource.of(corpus, assigned, Preprocessing(**cfg.data.preprocessing), cfg.data.decoder)
    speaker_norm = cfg.data.get("speaker_norm", "none")
    fitted, chosen, features, skipped = fit_on_split(
        source,
        cfg.method,
        kind,
        list(cfg.C_grid)
        if OmegaConf.is_list(cfg.C_grid)
        else [float(cfg.C_grid)],  # a number: a grid of one (a search's C)
        cfg.paths.cache_dir,
        speaker_norm,
        int(cfg.data.prepare_workers),
    )
    speakers = dict(zip(clips["clip_id"], clips["actor_id"], strict=True))
    write_json(
        run_dir / "prepare_report.json", {"rejected": clips.attrs.get("rejected", []), "skipped": skipped}
    )
    classes = corpus.classes
    save_classical(
        run_dir,
        fitted,
        {
            "method": cfg.method,
            "functionals": kind,
            "speaker_norm": speaker_norm,
            "classes": list(classes),
            "data": OmegaConf.to_container(cfg.data, resolve=True),
            "cache_dir": str(cfg.paths.cache_dir),
            "run_dir": str(run_dir.resolve()),
            **chosen,
            **run_info(),
        },
    )
    predictions = split_predictions(fitted, clips, features, classes, "test")
    val_predictions = split_predictions(fitted, clips, features, classes, "val")
    n_train = int((clips["split"] == "train").sum())
    if not predictions:  # final=all_speakers: the model to ship, nobody held out, nothing to test
        print(
            f"{cfg.method}: trained on all {n_train} clips of {len(assigned.actors('train'))} speakers, "
            f"nothing held out{', C=' + str(chosen['C']) if chosen else ''}; the saved model (an ensemble member "
            f"for evaluate.py and predict): {run_dir.resolve()}"
        )
        return float("nan")
    val_accuracy = (
        float(np.mean([p["pred"] == p["label"] for p in val_predictions]))
        if val_predictions
        else float("nan")
    )
    loggers = build_loggers(cfg, run_dir, resuming=False, job_type="baseline")
    log_config(loggers, cfg)
    metrics = write_results(
        run_dir,
        results_from_predictions(predictions, classes),
        predictions,
        loggers,
        task="baseline",
        tested_on=assigned.tested_on("test"),
        model=run_dir.resolve(),
        extra={
            "method": cfg.method,
            "speaker_norm": speaker_norm,
            "val_accuracy": val_accuracy,
            "chosen": chosen,
            "selection": OmegaConf.to_container(cfg.selection) if cfg.get("selection") else None,
            "n_train": n_train,
            **run_info(),
        },
        data_root=corpus.root,
        speakers=speakers,
        classes=classes,
    )
    media = media_of(clips, source.prep, corpus.modalities, source.decoder)
    log_predictions_table(loggers, predictions, media, classes)
    finish_loggers(loggers)
    trained = (
        "zero-shot: nothing trained, every clip tested" if zero_shot else f"val accuracy {val_accuracy:.4f}"
    )
    print(
        f"{cfg.method}: test {scores_line(metrics)} "
        f"({trained}{', C=' + str(chosen['C']) if chosen else ''})\n{where_line(run_dir)}"
    )
    return val_accuracy
