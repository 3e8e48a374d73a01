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

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cremad_lit.classical import clip_features, design_matrix, is_classical, load_classical
from cremad_lit.classical import probabilities as classical_probabilities
from cremad_lit.data.labels import EMOTIONS, shared_classes
from cremad_lit.environment import require_environment
from cremad_lit.errors import BadCheckpoint
from cremad_lit.lockbox import record_opening
from cremad_lit.loggers import (
    build_loggers,
    finish_loggers,
    lightning_console_once,
    log_config,
    log_predictions_table,
)
from cremad_lit.metrics import results_from_predictions
from cremad_lit.module import EmotionModule
from cremad_lit.pipeline import (
    build_datamodule,
    build_net,
    cache_frame_spec,
    resolve_precision,
    run_info,
)
from cremad_lit.results import write_results

log = logging.getLogger(__name__)
EVAL_SPLITS = ("train", "val", "test", "all", "lockbox")
ENSEMBLE_FILE = "ensemble.json"  # a train.py run with `ensemble_with`: its members and their weights
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
        raise BadCheckpoint(
            f"checkpoint {path} does not exist (train.py writes them to <run dir>/checkpoints/)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, damaged, not a torch file, or pickled code weights_only refuses
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise BadCheckpoint(
            f"{path} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint: truncated, damaged or "
            f"another kind of file ({type(error).__name__}: {first_line})"
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or not isinstance(checkpoint.get("cremad_lit"), dict)
        or not checkpoint["cremad_lit"].get("config")
    ):
        raise BadCheckpoint(
            f"{path} is a PyTorch file but not a cremad-lit checkpoint (no stored training config); was it "
            "written by train.py?"
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
    classes = checkpoint["cremad_lit"].get("emotions") or EMOTIONS  # checkpoints from before 0.4 had the six
    module = EmotionModule(
        build_net(model_cfg, classes),
        optimizer=None,
        classes=classes,
        class_weights=hparams.get("class_weights"),
        label_smoothing=hparams.get("label_smoothing", 0.0),
    )
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise BadCheckpoint(
            f"the checkpoint's weights do not match the model its config describes: {first_line}"
        ) from error
    module.eval()
    return module, config


def _same_path(a, b) -> bool:
    return (
        a is not None
        and b is not None
        and Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    )


def ensemble_members(run_dir: Path) -> list[tuple[str, float]]:
    """A train.py run that made an ensemble (`ensemble_with`): its members (paths stored relative to the run dir, so
    the folder can move) and their weights."""
    stored = json.loads((run_dir / ENSEMBLE_FILE).read_text())
    weights = normalised_weights(stored["weights"], len(stored["members"]))
    return [(str(run_dir / m), float(w)) for m, w in zip(stored["members"], weights, strict=True)]


def weighted_members(ckpt_path) -> list[tuple[str, float]]:
    """One checkpoint, a list of them, or a run / multirun folder -> (member, weight) pairs. In a folder: the
    checkpoint each train.py run tested (its metrics.json `checkpoint`), every baseline run's saved model, and both
    members of a run that made an ensemble (its ensemble.json, final=all_speakers runs included). Each run, checkpoint
    or baseline counts once (weight 1), shared among an ensemble run's members by the weights it stored."""
    if isinstance(ckpt_path, (list, tuple, ListConfig)):
        return [member for item in ckpt_path for member in weighted_members(item)]
    path = Path(str(ckpt_path))
    if (path / ENSEMBLE_FILE).is_file():
        return ensemble_members(path)
    if not path.is_dir() or is_classical(path):
        return [(str(path), 1.0)]
    found = []
    run_dirs = {
        f.parent for pattern in ("**/metrics.json", f"**/{ENSEMBLE_FILE}") for f in path.glob(pattern)
    }
    for run_dir in sorted(run_dirs):
        if (run_dir / ENSEMBLE_FILE).is_file():
            found += ensemble_members(run_dir)
            continue
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if metrics.get("task", "train") == "train" and metrics.get("checkpoint"):
            found.append((str(metrics["checkpoint"]), 1.0))
        elif metrics.get("task") == "baseline" and is_classical(run_dir):
            found.append((str(run_dir), 1.0))
    if not found:
        raise FileNotFoundError(
            f"no train.py run with a tested checkpoint and no baseline run under {path} (its metrics.json files)"
        )
    return found


def member_weights(cfg: DictConfig, found: list[tuple[str, float]]):
    """`ensemble_weights` when given; else the weights the runs stored (an ensemble run's, 1 for every other)."""
    given = cfg.get("ensemble_weights")
    return given if given is not None else [weight for _, weight in found]


def data_settings(cfg: DictConfig, data_cfg: DictConfig, trained_in: str | Path, out_dir: Path) -> bool:
    """Point a member's stored data settings at the clips `cfg` names (in place); True when that is the corpus it was
    trained on, whose exact split (the run's split.csv) is then reused."""
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
        saved_split = Path(trained_in) / "split.csv"
        if same_corpus and saved_split.is_file() and not data_cfg.subset.get("file"):
            data_cfg.subset.file = str(saved_split)  # the exact actors the run was tested on
    return same_corpus


def test_member(cfg: DictConfig, path: str, out_dir: Path) -> dict:
    """A checkpoint or a baseline run dir (a saved classical model), tested on the clips cfg names."""
    return test_classical(cfg, path, out_dir) if is_classical(path) else test_checkpoint(cfg, path, out_dir)


def test_checkpoint(cfg: DictConfig, ckpt_path: str, out_dir: Path) -> dict:
    """Test one checkpoint on the clips cfg names: its module, predictions, datamodule and what it was tested on."""
    checkpoint = load_checkpoint(ckpt_path)
    module, train_cfg = model_from_checkpoint(checkpoint)
    data_cfg = train_cfg.data
    same_corpus = data_settings(cfg, data_cfg, train_cfg.paths.output_dir, out_dir)
    datamodule = build_datamodule(
        data_cfg, cache_frame_spec(module.net, train_cfg.model), eval_split=cfg.subset
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
        "config": checkpoint["cremad_lit"]["config"],
        "classes": list(module.classes),
        "results": module.test_results,
        "datamodule": datamodule,
        "same_corpus": same_corpus,
        "data_root": str(data_cfg.get("manifest") or data_cfg.root),
        "predictions": module.test_predictions,
    }


def test_classical(cfg: DictConfig, run_dir: str, out_dir: Path) -> dict:
    """Test a baseline run's saved classical model the way test_checkpoint tests a checkpoint: the features of the
    clips cfg names (standardised per speaker over each speaker's clips, as it was trained), its probabilities."""
    arrays, info = load_classical(run_dir)
    data_cfg = OmegaConf.create(info["data"])
    same_corpus = data_settings(cfg, data_cfg, info["run_dir"], out_dir)
    datamodule = build_datamodule(
        data_cfg, None, cache="off", speaker_norm="none", functionals="none", eval_split=cfg.subset
    )
    datamodule.prepare_data()
    datamodule.setup("test")
    classes = list(info["classes"])
    features, skipped = clip_features(
        datamodule,
        info["functionals"],
        info["cache_dir"],
        info["speaker_norm"],
        int(data_cfg.prepare_workers),
    )
    for clip in skipped:
        log.warning("skipped clip %s: %s", clip["clip_id"], clip["reason"])
    clips = datamodule.clips[datamodule.clips["emotion"].isin(classes)]
    everything = cfg.subset in ("all", "lockbox")  # every clip set up is tested
    x, y, clip_ids = design_matrix(clips, features, classes, "all" if everything else cfg.subset)
    probabilities = classical_probabilities(arrays, x, len(classes))
    predictions = [
        {"clip_id": c, "label": int(label), "pred": int(p.argmax()), "probs": p.tolist()}
        for c, label, p in zip(clip_ids, y, probabilities, strict=True)
    ]
    return {
        "path": str(run_dir),
        "config": {"classical": {k: v for k, v in info.items() if k != "data"}, "data": info["data"]},
        "classes": classes,
        "results": results_from_predictions(predictions, classes),
        "datamodule": datamodule,
        "same_corpus": same_corpus,
        "data_root": str(data_cfg.get("manifest") or data_cfg.root),
        "predictions": predictions,
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


def weight_grid(members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every way to split 1 among the members in `step`s (2 members: 11 points, 3: 66)."""
    units = round(1 / step)

    def splits(left: int, parts: int):
        if parts == 1:
            yield (left,)
            return
        for first in range(left + 1):
            for rest in splits(left - first, parts - 1):
                yield (first, *rest)

    return [tuple(u / units for u in split) for split in splits(units, members)]


def choose_weights_on_validation(cfg: DictConfig, paths: list[str], run_dir: Path, how: str):
    """`ensemble_weights=val`: the members' probabilities on their own validation speakers (the corpus and split they
    were trained with, whatever cfg evaluates), the grid point with the best validation accuracy (ties: the one
    nearest equal weights). Only members that share their validation clips (seeds or methods of one split) can."""
    if how != "val":
        raise ValueError(f"ensemble_weights must be a list of numbers, null or 'val', not {how!r}")
    if cfg.subset == "val":
        raise ValueError(
            "ensemble_weights=val chooses the weights on the validation speakers: evaluate another split"
        )
    own = cfg.copy()
    with open_dict(own):
        own.split = "val"
        for key in CORPUS_KEYS:
            own.data[key] = None  # each member's own corpus and split.csv
    members = [test_member(own, p, run_dir / "validation" / str(i)) for i, p in enumerate(paths)]
    by_member, shared = shared_clips(
        members,
        "ensemble_weights=val: the members share no validation clip (fold models each have their own "
        "validation speakers); choose weights for members of one split, or give them as a list",
    )
    probs = np.stack([[b[c]["probs"] for c in shared] for b in by_member])  # members x clips x classes
    labels = np.array([by_member[0][c]["label"] for c in shared])
    equal = np.full(len(members), 1 / len(members))
    scores = {}
    for weights in weight_grid(len(members)):
        fused = np.tensordot(np.asarray(weights), probs, axes=1)
        scores[weights] = float((fused.argmax(axis=1) == labels).mean())
    best = max(scores, key=lambda w: (scores[w], -float(np.abs(np.asarray(w) - equal).sum())))
    alone = [float((p.argmax(axis=1) == labels).mean()) for p in probs]
    log.info(
        "ensemble weights %s chosen on %d validation clips (accuracy %.4f; the members alone %s)",
        list(best),
        len(shared),
        scores[best],
        [round(a, 4) for a in alone],
    )
    return list(best), {
        "weights_chosen_on": "val",
        "val_clips": len(shared),
        "val_accuracy": scores[best],
        "val_member_accuracy": alone,
        "val_accuracy_by_weights": {",".join(f"{x:.1f}" for x in w): a for w, a in scores.items()},
    }


def shared_clips(members: list[dict], none_shared: str) -> tuple[list[dict], list[str]]:
    """Each member's predictions by clip id, and the clips all of them predicted (sorted); `none_shared` if none."""
    by_member = [{p["clip_id"]: p for p in m["predictions"]} for m in members]
    shared = sorted(set.intersection(*(set(b) for b in by_member)))
    if not shared:
        raise ValueError(none_shared)
    return by_member, shared


def average_predictions(members: list[dict], weights) -> list[dict]:
    """The weighted mean of the members' probabilities for every clip all of them were tested on."""
    weights = normalised_weights(weights, len(members))
    by_member, shared = shared_clips(
        members,
        "the checkpoints share no test clip (fold models each test their own actors): "
        "evaluate them together with subset=all, or on another corpus",
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
    lightning_console_once()
    if cfg.get("split") is not None:
        raise ValueError(
            f"evaluate.py's split= is now subset= (subset={cfg.split}): split names the protocol in train.yaml"
        )
    if cfg.subset not in EVAL_SPLITS:
        raise ValueError(f"subset must be one of {EVAL_SPLITS}, not {cfg.subset!r}")
    run_dir = Path(cfg.paths.output_dir)
    found = weighted_members(cfg.ckpt_path)
    paths = [member for member, _ in found]
    members = [
        test_member(cfg, path, run_dir if len(paths) == 1 else run_dir / "members" / str(i))
        for i, path in enumerate(paths)
    ]
    first = members[0]
    datamodule = first["datamodule"]
    lockbox = {}
    if cfg.subset == "lockbox":
        if any(m["datamodule"].lockbox != datamodule.lockbox for m in members):
            raise ValueError(
                "the ensemble's members hold out different lockboxes: open one lockbox at a time"
            )
        entry = {"run": str(run_dir.resolve()), "checkpoint": [str(p) for p in paths]}
        lockbox = {
            "lockbox": record_opening(cfg.paths.log_dir, datamodule.cache_source, datamodule.lockbox, entry)
        }
    ensemble = {}
    if len(members) == 1:
        results, predictions = first["results"], first["predictions"]
    else:
        if any(m["classes"] != first["classes"] for m in members):
            raise ValueError(
                "the ensemble's members predict different class lists "
                f"({[m['classes'] for m in members]}): average only like with like"
            )
        weights, chosen = member_weights(cfg, found), {}
        if isinstance(weights, str):
            weights, chosen = choose_weights_on_validation(cfg, paths, run_dir, weights)
        predictions = average_predictions(members, weights)
        results = results_from_predictions(predictions, first["classes"])
        shared = {p["clip_id"] for p in predictions}
        ensemble = {
            "ensemble": {
                "members": paths,
                "weights": normalised_weights(weights, len(members)).tolist(),
                **chosen,
                "member_accuracy": [
                    results_from_predictions(
                        [p for p in m["predictions"] if p["clip_id"] in shared], m["classes"]
                    )["accuracy"]
                    for m in members
                ],
            }
        }
        log.info("ensemble of %d members on %d shared clips", len(members), len(predictions))
    classes = list(first["classes"])
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
                "model_classes": list(first["classes"]),
                "scored_on": classes,
                "clips_of_other_classes_left_out": len(not_a_class),
                "left_out_labels": sorted({str(r["label"]) for r in not_a_class}),
            }
        }
        log.info("scored on the %d classes the model and the corpus share: %s", len(classes), classes)
    loggers = build_loggers(cfg, run_dir, resuming=False, job_type="eval")
    log_config(loggers, cfg, checkpoint_config=first["config"])
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
            "split": cfg.subset,
            "split_by": datamodule.split_by,
            "protocol": datamodule.protocol,
            "dataset": datamodule.dataset,
            "cross_corpus": not first["same_corpus"],
            "actors": sorted({a for m in members for a in m["datamodule"].actors(cfg.subset)}, key=str)
            if len(members) > 1
            else datamodule.actors(cfg.subset),
            "checkpoint": str(paths[0]) if len(paths) == 1 else None,
            "data_root": first["data_root"],
            **ensemble,
            **mapping,
            **lockbox,
            **run_info(),
        },
        data_root=datamodule.root,
        speakers=speakers,
        classes=tuple(classes),
    )
    log_predictions_table(loggers, predictions, datamodule, key=f"{cfg.subset}/predictions", classes=classes)
    finish_loggers(loggers)
    print(
        f"accuracy (WAR) {metrics['accuracy']:.4f}, UAR {metrics['uar']:.4f}, macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} clips ({cfg.subset})"
        + (
            f", ensemble of {len(members)} members, weights {[round(w, 3) for w in ensemble['ensemble']['weights']]}"
            if len(members) > 1
            else ""
        )
    )
    print(
        f"run dir: {run_dir.resolve()}\n  metrics: {run_dir / 'metrics.json'}\n  confusion matrix: {run_dir / 'confusion.png'}"
    )
    return metrics
