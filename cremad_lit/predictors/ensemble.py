"""Ensembles: the weighted mean of several models' probabilities. The one place that averages, weighs, and finds an
ensemble's members in folders (and in ensemble.json, which train.py's partner step writes: partner.py).

    python evaluate.py ckpt_path=[A.ckpt,<baseline run>] ensemble_weights=val    # weights chosen on validation speakers
    python -m cremad_lit predict ckpt_path=logs/train/multiruns/<time> inputs=DIR   # every run of a sweep, averaged

    from cremad_lit.predictors import load_predictor
    ensemble = load_predictor(["a.ckpt", "b.ckpt"], weights=[0.3, 0.7])   # an Ensemble: predict(), test()
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, open_dict

from cremad_lit.classical import is_classical
from cremad_lit.metrics import results_from_predictions
from cremad_lit.predictors.base import CORPUS_KEYS, Predictor, TestResult
from cremad_lit.record import find_runs

log = logging.getLogger(__name__)
ENSEMBLE_FILE = "ensemble.json"  # a run that is an ensemble (`ensemble_with`): its members and their weights


class Ensemble(Predictor):
    """Models (Network or Classical) and their weights (normalised; `val`: chosen by test() on the members' shared
    validation speakers)."""

    def __init__(self, models: list[Predictor], weights):
        self.models = list(models)
        self.path = ",".join(m.path for m in self.models)
        if any(m.classes != self.models[0].classes for m in self.models):
            raise ValueError(
                "the ensemble's members predict different class lists "
                f"({[list(m.classes) for m in self.models]}): average only like with like"
            )
        self.classes = self.models[0].classes
        self.weights = weights if isinstance(weights, str) else normalised_weights(weights, len(self.models))

    @property
    def members(self) -> list[tuple[Predictor, float]]:
        if isinstance(self.weights, str):
            raise ValueError(
                f"ensemble_weights={self.weights}: predicting has no labels to choose weights with; give the weights "
                "`evaluate.py ... ensemble_weights=val` chose (its metrics.json: ensemble.weights)"
            )
        return list(zip(self.models, self.weights.tolist(), strict=True))

    def predict_each(self, files: list[Path], device: str = "cpu", speaker: str = "folder"):
        members = self.members
        rows = [model.predict(files, device, speaker) for model, _ in members]
        return average_files(rows, [w for _, w in members]), rows

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        return self.predict_each(files, device, speaker)[0]

    def test(self, cfg: DictConfig, out_dir: Path) -> TestResult:
        """Each member tested on the clips cfg names (in out_dir/members/<i>), then the weighted mean of their
        probabilities on the clips all of them read; the first member's data stand for the ensemble's."""
        tested = [m.test(cfg, out_dir / "members" / str(i)) for i, m in enumerate(self.models)]
        chosen = {}
        weights = self.weights
        if isinstance(weights, str):
            weights, chosen = self.choose_weights_on_validation(cfg, out_dir, weights)
        predictions = average_predictions([t.predictions for t in tested], weights)
        shared = {p["clip_id"] for p in predictions}
        classes = list(self.classes)
        log.info("ensemble of %d members on %d shared clips", len(tested), len(predictions))
        # the first member's data stand for the ensemble's
        return dataclasses.replace(
            tested[0],
            path=self.path,
            results=results_from_predictions(predictions, classes),
            predictions=predictions,
            members=tested,
            ensemble={
                "members": [m.path for m in self.models],
                "weights": normalised_weights(weights, len(tested)).tolist(),
                **chosen,
                "member_accuracy": [
                    results_from_predictions([p for p in m.predictions if p["clip_id"] in shared], m.classes)[
                        "accuracy"
                    ]
                    for m in tested
                ],
            },
        )

    def choose_weights_on_validation(self, cfg: DictConfig, run_dir: Path, how: str):
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
            own.subset = "val"
            for key in CORPUS_KEYS:
                own.data[key] = None  # each member's own corpus and split.csv
        members = [m.test(own, run_dir / "validation" / str(i)) for i, m in enumerate(self.models)]
        by_member, shared = shared_clips(
            [m.predictions for m in members],
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
    runs = {run.dir: run for run in find_runs(path, tasks=("train", "baseline"))}
    # an ensemble run folder without its metrics.json (final=all_speakers tests nothing) is a model too
    ensembles = {f.parent for f in path.glob(f"**/{ENSEMBLE_FILE}")}
    for run_dir in sorted(set(runs) | ensembles):
        if run_dir in ensembles:
            found += ensemble_members(run_dir)
        elif runs[run_dir].task == "train" and runs[run_dir].checkpoint:
            found.append((str(runs[run_dir].checkpoint), 1.0))
        elif runs[run_dir].task == "baseline" and is_classical(run_dir):
            found.append((str(run_dir), 1.0))
    if not found:
        raise FileNotFoundError(
            f"no train.py run with a tested checkpoint and no baseline run under {path} (its metrics.json files)"
        )
    return found


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


def shared_clips(members: list[list[dict]], none_shared: str) -> tuple[list[dict], list[str]]:
    """Each member's predictions by clip id, and the clips all of them predicted (sorted); `none_shared` if none."""
    by_member = [{p["clip_id"]: p for p in predictions} for predictions in members]
    shared = sorted(set.intersection(*(set(b) for b in by_member)))
    if not shared:
        raise ValueError(none_shared)
    return by_member, shared


def average_predictions(members: list[list[dict]], weights) -> list[dict]:
    """The weighted mean of the members' probabilities (each a list of per-clip predictions) for every clip all of
    them were tested on."""
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


def average_files(members: list[list[dict]], weights) -> list[dict]:
    """Per file, the weighted mean of the members' probabilities (a file any member could not read keeps its error)."""
    weights = normalised_weights(weights, len(members))
    fused = []
    for rows in zip(*members, strict=True):
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            fused.append({"file": rows[0]["file"], "error": errors[0]})
            continue
        classes = list(rows[0]["probabilities"])  # one list for all: Ensemble checks it when built
        probabilities = {
            e: float(sum(w * r["probabilities"][e] for w, r in zip(weights, rows, strict=True)))
            for e in classes
        }
        warnings = [r["warning"] for r in rows if "warning" in r]
        fused.append(
            {
                "file": rows[0]["file"],
                "prediction": max(probabilities, key=probabilities.get),
                "probabilities": probabilities,
                **({"warning": warnings[0]} if warnings else {}),
            }
        )
    return fused
