"""The body of evaluate.py: checkpoint -> model and data settings -> test on a split -> results in the run dir.

python evaluate.py ckpt_path=PATH [subset=test|val|train|all|lockbox] [data.root=DIR]
python evaluate.py ckpt_path=PATH data=ravdess data.root=DIR subset=all          # another corpus (cross-corpus)
python evaluate.py ckpt_path=[A,B,C] subset=all ...      # an ensemble: the mean of their probabilities (ensemble_weights=)
python evaluate.py ckpt_path=logs/train/multiruns/<time> data=... subset=all   # every run's tested checkpoint
python evaluate.py ckpt_path=[<train run>/checkpoints/last.ckpt,<baseline run dir>] ensemble_weights=val
                                   # a deep model and a classical baseline, weights chosen on their validation speakers

The preprocessing and modalities always come from the checkpoint; `data=<corpus>` swaps only which clips are read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from cremad_lit.data.labels import shared_classes
from cremad_lit.lockbox import complete_opening, record_opening
from cremad_lit.loggers import (
    build_loggers,
    finish_loggers,
    lightning_console_once,
    log_config,
    log_predictions_table,
)
from cremad_lit.metrics import results_from_predictions
from cremad_lit.pipeline import run_info
from cremad_lit.predictors import TestResult, load_predictor
from cremad_lit.results import scores_line, where_line, write_results

log = logging.getLogger(__name__)
EVAL_SPLITS = ("train", "val", "test", "all", "lockbox")


def score_on_shared_classes(predictions: list[dict], classes, present) -> tuple[list[dict], list[str]]:
    """Predictions over only the model's classes that the data have (cross-corpus: an 8-class model on a six-class
    corpus): probabilities renormalised over those, labels and predictions re-indexed to them."""
    shared = shared_classes(classes, present)
    keep = [list(classes).index(c) for c in shared]
    restricted = []
    for p in predictions:
        probs = np.asarray(p["probs"], dtype=np.float64)[keep]
        probs = probs / max(probs.sum(), 1e-12)
        restricted.append(
            {
                **p,
                "label": shared.index(classes[p["label"]]),
                "pred": int(probs.argmax()),
                "probs": probs.tolist(),
            }
        )
    return restricted, shared


def network_checkpoint(path) -> str | None:
    """`path` when it is a network's checkpoint file (not a baseline run or an exported model)."""
    return str(path) if str(path).endswith(".ckpt") else None


def write_members(
    run_dir: Path, members: list[TestResult], present: set | None, speakers: dict
) -> list[float]:
    """An ensemble's members, each alone, into members/<i>/ (metrics.json, predictions.csv), scored as the ensemble is
    (on the classes a corpus shares with the model when `present` is given); their accuracies on the shared clips."""
    shared_clips = set.intersection(*({p["clip_id"] for p in m.predictions} for m in members))
    accuracies = []
    for i, member in enumerate(members):
        predictions = [p for p in member.predictions if p["clip_id"] in shared_clips]
        classes = list(member.classes)
        if present is not None:
            predictions, classes = score_on_shared_classes(predictions, classes, present)
        results = results_from_predictions(predictions, classes)
        folder = run_dir / "members" / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        write_results(
            folder,
            results,
            predictions,
            task="member",  # a row of its own nowhere: the ensemble's run has it
            tested_on={},
            model=member.path,
            checkpoint=network_checkpoint(member.path),
            extra={"member": i},
            speakers=speakers,
            classes=tuple(classes),
        )
        accuracies.append(results["accuracy"])
    return accuracies


def open_lockbox(cfg: DictConfig, tested: list[TestResult], run_dir: Path) -> dict:
    """`subset=lockbox`: record this opening in the corpus's ledger (lockbox.py); what metrics.json says of it."""
    lockbox = tested[0].assigned.lockbox
    if any(t.assigned.lockbox != lockbox for t in tested):
        raise ValueError("the ensemble's members hold out different lockboxes: open one lockbox at a time")
    entry = {"run": str(run_dir.resolve()), "checkpoint": [t.path for t in tested]}
    return {
        "lockbox": record_opening(
            cfg.paths.log_dir,
            tested[0].corpus.cache_source,
            lockbox,
            entry,
            cfg.get("lockbox_occasion"),
        )
    }


def evaluate(cfg: DictConfig) -> dict:
    lightning_console_once()
    if cfg.get("split") is not None:
        raise ValueError(
            f"evaluate.py's split= is now subset= (subset={cfg.split}): split names the protocol in train.yaml"
        )
    if cfg.subset not in EVAL_SPLITS:
        raise ValueError(f"subset must be one of {EVAL_SPLITS}, not {cfg.subset!r}")
    run_dir = Path(cfg.paths.output_dir)
    tested = load_predictor(cfg.ckpt_path, cfg.get("ensemble_weights")).test(cfg, run_dir)
    members = tested.members or [tested]
    lockbox = open_lockbox(cfg, members, run_dir) if cfg.subset == "lockbox" else {}
    results, predictions, classes = tested.results, tested.predictions, list(tested.classes)
    present = set(tested.assigned.clips["emotion"])
    mapping = {}
    if not tested.same_corpus and present != set(
        classes
    ):  # another corpus, fewer classes: score on the shared
        predictions, classes = score_on_shared_classes(predictions, classes, present)
        results = results_from_predictions(predictions, classes)
        not_a_class = [
            r for r in tested.corpus.catalog().attrs["rejected"] if "not in data.classes" in r["reason"]
        ]
        mapping = {
            "class_mapping": {
                "model_classes": list(tested.classes),
                "scored_on": classes,
                "clips_of_other_classes_left_out": len(not_a_class),
                "left_out_labels": sorted({str(r["label"]) for r in not_a_class}),
            }
        }
        log.info("scored on the %d classes the model and the corpus share: %s", len(classes), classes)
    # Clips decoded only in part are judged, and flagged: predictions.csv's warning column.
    partial = tested.partial
    if partial:
        log.warning("%d clip(s) decoded only in part (cut short?): flagged in predictions.csv", len(partial))
        predictions = [
            {**p, "warning": partial[p["clip_id"]]} if p["clip_id"] in partial else p for p in predictions
        ]
    speakers = {}
    for member in members:
        speakers.update(member.assigned.speakers())
    if tested.ensemble is not None:
        tested.ensemble["member_accuracy"] = write_members(
            run_dir, members, present if mapping else None, speakers
        )
    loggers = build_loggers(cfg, run_dir, resuming=False, job_type="eval")
    log_config(loggers, cfg, checkpoint_config=tested.config)
    ensemble = {"ensemble": tested.ensemble} if tested.ensemble is not None else {}
    metrics = write_results(
        run_dir,
        results,
        predictions,
        loggers,
        task="eval",
        tested_on={
            **tested.assigned.tested_on(cfg.subset, actors_key="actors"),
            **(
                {"actors": sorted({a for m in members for a in m.assigned.actors(cfg.subset)}, key=str)}
                if len(members) > 1
                else {}
            ),
        },
        # the model as it was named (an ensemble: its members are in members/ and `ensemble`)
        model=OmegaConf.to_container(cfg.ckpt_path)
        if isinstance(cfg.ckpt_path, ListConfig)
        else cfg.ckpt_path,
        checkpoint=None if ensemble else network_checkpoint(tested.path),
        extra={
            "cross_corpus": not tested.same_corpus,
            "data_root": tested.data_root,
            **ensemble,
            **mapping,
            **lockbox,
            **({"partial_clips": len(partial)} if partial else {}),
            **run_info(),
        },
        data_root=tested.corpus.root,
        speakers=speakers,
        classes=tuple(classes),
    )
    if lockbox:  # metrics.json is written: the opening completed (lockbox.py)
        complete_opening(lockbox["lockbox"]["ledger"], str(run_dir.resolve()), metrics["accuracy"])
    log_predictions_table(loggers, predictions, tested.media, classes, key=f"{cfg.subset}/predictions")
    finish_loggers(loggers)
    weights = f", weights {[round(w, 3) for w in ensemble['ensemble']['weights']]}" if ensemble else ""
    print(
        f"{scores_line(metrics)} ({cfg.subset})"
        + (f", ensemble of {len(members)} members{weights}" if ensemble else "")
    )
    print(where_line(run_dir, "metrics.json", "confusion.png"))
    return metrics
