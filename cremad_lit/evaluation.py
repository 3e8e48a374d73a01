"""The body of evaluate.py: checkpoint -> model and data settings -> test on a split -> results in the run dir.

python evaluate.py ckpt_path=PATH [split=test|val|train|all] [data.root=DIR]
python evaluate.py ckpt_path=PATH data=ravdess data.root=DIR split=all          # another corpus (cross-corpus)
python evaluate.py ckpt_path=[A,B,C] split=all ...      # an ensemble: the mean of their probabilities (ensemble_weights=)
python evaluate.py ckpt_path=logs/train/multiruns/<time> data=... split=all   # every run's tested checkpoint

The preprocessing and modalities always come from the checkpoint; `data=<corpus>` swaps only which clips are read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cremad_lit.data.labels import shared_classes
from cremad_lit.environment import require_environment
from cremad_lit.loggers import build_loggers, finish_loggers, log_config, log_predictions_table
from cremad_lit.module import EmotionModule, results_from_predictions
from cremad_lit.pipeline import (
    build_datamodule,
    build_net,
    cache_frame_spec,
    resolve_precision,
    run_info,
)
from cremad_lit.results import write_results

log = logging.getLogger(__name__)
EVAL_SPLITS = ("train", "val", "test", "all")
# What `data=<corpus>` replaces in the checkpoint's data settings: which clips, and how to load them.
CORPUS_KEYS = ("dataset", "root", "manifest", "label_map", "options")
LOADER_KEYS = (
    "eval_batch_size",
    "num_workers",
    "cache",
    "cache_dir",
    "decoder",
    "pin_memory",
    "persistent_workers",
)


def load_checkpoint(path: str | Path) -> dict:
    """Read a cremad-lit checkpoint safely (weights_only: tensors and plain data, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (train.py writes them to <run dir>/checkpoints/)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or not checkpoint.get("cremad_lit", {}).get("config")
    ):
        raise ValueError(
            f"{path} is not a cremad-lit checkpoint (no stored training config); was it written by train.py?"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> tuple[EmotionModule, DictConfig]:
    """Rebuild the trained module (no weight download: the checkpoint holds every weight)."""
    config = OmegaConf.create(checkpoint["cremad_lit"]["config"])
    model_cfg = config.model
    with open_dict(model_cfg):
        for branch in ("video_backbone", "audio_backbone"):
            if branch in model_cfg:
                model_cfg[branch].pretrained = False
                model_cfg[branch].pretrained_file = None
    hparams = checkpoint.get("hyper_parameters", {})
    module = EmotionModule(
        build_net(model_cfg),
        optimizer=None,
        class_weights=hparams.get("class_weights"),
        label_smoothing=hparams.get("label_smoothing", 0.0),
        classes=checkpoint["cremad_lit"].get("emotions"),  # the six in checkpoints from before 0.4
    )
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ValueError(
            f"the checkpoint's weights do not match the model its config describes: {error}"
        ) from error
    module.eval()
    return module, config


def _same_path(a, b) -> bool:
    return (
        a is not None
        and b is not None
        and Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    )


def checkpoint_paths(ckpt_path) -> list[str]:
    """One checkpoint, a list of them, or a run / multirun folder: there, the checkpoint each run tested (the
    `checkpoint` of every train metrics.json below it)."""
    if isinstance(ckpt_path, (list, tuple, ListConfig)):
        return [p for item in ckpt_path for p in checkpoint_paths(item)]
    path = Path(str(ckpt_path))
    if not path.is_dir():
        return [str(path)]
    found = []
    for metrics_file in sorted(path.glob("**/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("task", "train") == "train" and metrics.get("checkpoint"):
            found.append(str(metrics["checkpoint"]))
    if not found:
        raise FileNotFoundError(
            f"no train.py run with a tested checkpoint under {path} (its metrics.json files)"
        )
    return found


def test_checkpoint(cfg: DictConfig, ckpt_path: str, out_dir: Path) -> dict:
    """Test one checkpoint on the clips cfg names: its module, predictions, datamodule and what it was tested on."""
    checkpoint = load_checkpoint(ckpt_path)
    module, train_cfg = model_from_checkpoint(checkpoint)
    data_cfg = train_cfg.data
    given = OmegaConf.to_container(cfg.data, resolve=True)
    if given.get("dataset"):  # data=<corpus> on the command line: read those clips instead
        overrides = {k: given.get(k) for k in CORPUS_KEYS + LOADER_KEYS}
    else:
        overrides = {k: v for k, v in given.items() if v is not None}
    corpus = {k: overrides.get(k, data_cfg.get(k)) for k in CORPUS_KEYS}
    same_corpus = corpus.get("dataset", "cremad") == data_cfg.get("dataset", "cremad") and _same_path(
        corpus.get("manifest") or corpus.get("root"), data_cfg.get("manifest") or data_cfg.get("root")
    )
    with open_dict(data_cfg):
        for key, value in overrides.items():
            data_cfg[key] = value  # replaced, not merged: another corpus's options must not mix with these
        data_cfg.output_dir = str(out_dir)
        data_cfg.generate = None
        saved_split = Path(train_cfg.paths.output_dir) / "split.csv"
        if same_corpus and saved_split.is_file() and not data_cfg.split.get("file"):
            data_cfg.split.file = str(saved_split)  # the exact actors the run was tested on
    datamodule = build_datamodule(
        data_cfg, cache_frame_spec(module.net, train_cfg.model), eval_split=cfg.split
    )
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(out_dir),
    )
    trainer.test(module, datamodule=datamodule)
    return {
        "path": str(ckpt_path),
        "checkpoint": checkpoint,
        "module": module,
        "datamodule": datamodule,
        "same_corpus": same_corpus,
        "data_root": str(data_cfg.get("manifest") or data_cfg.root),
        "predictions": module.test_predictions,
    }


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


def normalised_weights(weights, members: int) -> np.ndarray:
    """`ensemble_weights` (null: equal) as non-negative weights summing to 1, one per member."""
    weights = np.asarray(list(weights) if weights is not None else [1.0] * members, dtype=np.float64)
    if len(weights) != members or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"ensemble_weights must be {members} non-negative numbers, not {weights.tolist()}")
    return weights / weights.sum()


def average_predictions(members: list[dict], weights) -> list[dict]:
    """The weighted mean of the members' probabilities for every clip all of them were tested on."""
    weights = normalised_weights(weights, len(members))
    by_member = [{p["clip_id"]: p for p in m["predictions"]} for m in members]
    shared = sorted(set.intersection(*(set(b) for b in by_member)))
    if not shared:
        raise ValueError(
            "the checkpoints share no test clip (fold models each test their own actors): "
            "evaluate them together with split=all, or on another corpus"
        )
    fused = []
    for clip_id in shared:
        probs = sum(w * np.asarray(b[clip_id]["probs"]) for w, b in zip(weights, by_member, strict=True))
        fused.append(
            {
                "clip_id": clip_id,
                "label": by_member[0][clip_id]["label"],
                "pred": int(probs.argmax()),
                "probs": probs.tolist(),
            }
        )
    return fused


def evaluate(cfg: DictConfig) -> dict:
    require_environment()  # a broken install stops here, before any clip is touched
    if cfg.split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}, not {cfg.split!r}")
    run_dir = Path(cfg.paths.output_dir)
    paths = checkpoint_paths(cfg.ckpt_path)
    members = [
        test_checkpoint(cfg, path, run_dir if len(paths) == 1 else run_dir / "members" / str(i))
        for i, path in enumerate(paths)
    ]
    first = members[0]
    datamodule = first["datamodule"]
    ensemble = {}
    if len(members) == 1:
        results, predictions = first["module"].test_results, first["predictions"]
    else:
        weights = cfg.get("ensemble_weights")
        predictions = average_predictions(members, weights)
        results = results_from_predictions(predictions, first["module"].classes)
        shared = {p["clip_id"] for p in predictions}
        ensemble = {
            "ensemble": {
                "members": paths,
                "weights": normalised_weights(weights, len(members)).tolist(),
                "member_accuracy": [
                    results_from_predictions(
                        [p for p in m["predictions"] if p["clip_id"] in shared], m["module"].classes
                    )["accuracy"]
                    for m in members
                ],
            }
        }
        log.info("ensemble of %d checkpoints on %d shared clips", len(members), len(predictions))
    classes = list(first["module"].classes)
    present = set(datamodule.clips["emotion"])
    mapping = {}
    if not first["same_corpus"] and present != set(
        classes
    ):  # another corpus, fewer classes: score on the shared
        predictions, classes = score_on_shared_classes(predictions, classes, present)
        results = results_from_predictions(predictions, classes)
        not_a_class = [
            r for r in datamodule.catalog().attrs["rejected"] if "not in data.classes" in r["reason"]
        ]
        mapping = {
            "class_mapping": {
                "model_classes": list(first["module"].classes),
                "scored_on": classes,
                "clips_of_other_classes_left_out": len(not_a_class),
                "left_out_labels": sorted({str(r["label"]) for r in not_a_class}),
            }
        }
        log.info("scored on the %d classes the model and the corpus share: %s", len(classes), classes)
    loggers = build_loggers(cfg, run_dir, resuming=False, job_type="eval")
    log_config(loggers, cfg, checkpoint_config=first["checkpoint"]["cremad_lit"]["config"])
    speakers = {}
    for member in members:
        speakers.update(member["datamodule"].speakers())
    metrics = write_results(
        run_dir,
        results,
        predictions,
        loggers,
        extra={
            "task": "eval",
            "split": cfg.split,
            "split_by": datamodule.split_by,
            "protocol": datamodule.protocol,
            "dataset": datamodule.dataset,
            "cross_corpus": not first["same_corpus"],
            "actors": sorted({a for m in members for a in m["datamodule"].actors(cfg.split)}, key=str)
            if len(members) > 1
            else datamodule.actors(cfg.split),
            "checkpoint": str(paths[0]) if len(paths) == 1 else None,
            "data_root": first["data_root"],
            **ensemble,
            **mapping,
            **run_info(),
        },
        data_root=datamodule.root,
        speakers=speakers,
        classes=tuple(classes),
    )
    log_predictions_table(loggers, predictions, datamodule, key=f"{cfg.split}/predictions", classes=classes)
    finish_loggers(loggers)
    print(
        f"accuracy (WAR) {metrics['accuracy']:.4f}, UAR {metrics['uar']:.4f}, macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} clips ({cfg.split})"
        + (f", ensemble of {len(members)} checkpoints" if len(members) > 1 else "")
    )
    print(
        f"run dir: {run_dir.resolve()}\n  metrics: {run_dir / 'metrics.json'}\n  confusion matrix: {run_dir / 'confusion.png'}"
    )
    return metrics
