"""Ensembles: the weighted mean of several models' probabilities. The one place that averages, weighs, finds an
ensemble's members in folders and reads or writes ensemble.json; and train.py's classical partner (`ensemble_with`).

    python evaluate.py ckpt_path=[A.ckpt,<baseline run>] ensemble_weights=val    # weights chosen on validation speakers
    python -m cremad_lit predict ckpt_path=logs/train/multiruns/<time> inputs=DIR   # every run of a sweep, averaged
    python train.py experiment=speech data=ravdess data.root=../shared/ravdess-speech   # network + ComParE LR

    from cremad_lit.predictors import load_predictor
    ensemble = load_predictor(["a.ckpt", "b.ckpt"], weights=[0.3, 0.7])   # an Ensemble: predict(), test()

A train.py run with a partner holds members/classical/ (the saved classical model), members/network/ and
members/classical/ metrics.json (each member alone on the test speakers), ensemble.json (the members, relative to the
run dir, and their weights: what `ckpt_path=<run dir>` loads) and, at the top, the ensemble's metrics.json and
predictions.csv.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cremad_lit.classical import (
    METHODS,
    ClipSource,
    fit_on_split,
    is_classical,
    save_classical,
    split_predictions,
)
from cremad_lit.io import write_json
from cremad_lit.metrics import results_from_predictions
from cremad_lit.pipeline import run_info
from cremad_lit.predictors import CORPUS_KEYS, Predictor
from cremad_lit.record import find_runs
from cremad_lit.results import write_results

log = logging.getLogger(__name__)
PARTNER_DIR = Path("members") / "classical"
NETWORK_DIR = Path("members") / "network"
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

    def test(self, cfg: DictConfig, out_dir: Path) -> dict:
        """Each member tested on the clips cfg names (in out_dir/members/<i>), then the weighted mean of their
        probabilities on the clips all of them read; the first member's data stand for the ensemble's."""
        tested = [m.test(cfg, out_dir / "members" / str(i)) for i, m in enumerate(self.models)]
        chosen = {}
        weights = self.weights
        if isinstance(weights, str):
            weights, chosen = self.choose_weights_on_validation(cfg, out_dir, weights)
        predictions = average_predictions(tested, weights)
        shared = {p["clip_id"] for p in predictions}
        classes = list(self.classes)
        log.info("ensemble of %d members on %d shared clips", len(tested), len(predictions))
        return {
            **tested[0],
            "path": self.path,
            "results": results_from_predictions(predictions, classes),
            "predictions": predictions,
            "members": tested,
            "ensemble": {
                "members": [m.path for m in self.models],
                "weights": normalised_weights(weights, len(tested)).tolist(),
                **chosen,
                "member_accuracy": [
                    results_from_predictions(
                        [p for p in m["predictions"] if p["clip_id"] in shared], m["classes"]
                    )["accuracy"]
                    for m in tested
                ],
            },
        }

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


def partner_methods(spec: DictConfig) -> list[str]:
    """`ensemble_with.method`: one classical method, or a list of them (each a member of its own)."""
    method = spec.get("method")
    return [str(m) for m in method] if isinstance(method, (list, tuple, ListConfig)) else [str(method)]


def partner_dirs(methods: list[str]) -> list[Path]:
    """Where each classical member is saved: members/classical for one (as since 0.6), members/classical-<method>
    for several."""
    if len(methods) == 1:
        return [PARTNER_DIR]
    return [PARTNER_DIR.with_name(f"classical-{method}") for method in methods]


def check_partner(spec: DictConfig, data_cfg: DictConfig) -> None:
    """Before training: partners the run can fit (their features come from the clips' audio)."""
    methods = partner_methods(spec)
    for method in methods:
        if method not in METHODS:
            raise ValueError(
                f"ensemble_with.method must be one of {tuple(METHODS)} (or a list), not {method!r}"
            )
    if len(set(methods)) != len(methods):
        raise ValueError(f"ensemble_with.method names a method twice: {methods}")
    if not 0.0 <= float(spec.get("network_weight", -1)) <= 1.0:
        raise ValueError(f"ensemble_with.network_weight must lie in [0, 1], not {spec.get('network_weight')}")
    if "audio" not in data_cfg.modalities:
        raise ValueError(
            f"ensemble_with.method={methods} reads the clips' audio, but data.modalities={list(data_cfg.modalities)}: "
            "add audio, or set ensemble_with=null"
        )


def fit_partner(spec: DictConfig, method: str, datamodule, data_cfg: DictConfig, member_dir: Path) -> dict:
    """Fit `method` on the set-up DataModule's train split with the fixed `spec.C` (no validation speakers
    needed, so final=all_speakers gets the same partner), speaker-normalised as data.speaker_norm says; save it."""
    speaker_norm = data_cfg.get("speaker_norm", "none")
    kind = METHODS[method]
    source = ClipSource.of(datamodule.corpus, datamodule.assignment(), datamodule.prep, datamodule.decoder)
    fitted, chosen, features, skipped = fit_on_split(
        source,
        method,
        kind,
        [float(spec.C)],
        datamodule.cache_dir,
        speaker_norm,
        int(datamodule.prepare_workers),
    )
    for clip in skipped:
        log.warning("classical partner: skipped clip %s: %s", clip["clip_id"], clip["reason"])
    run_dir = member_dir.parent.parent
    save_classical(
        member_dir,
        fitted,
        {
            "method": method,
            "functionals": kind,
            "speaker_norm": speaker_norm,
            "classes": list(datamodule.classes),
            "data": {**OmegaConf.to_container(data_cfg, resolve=True), "classes": list(datamodule.classes)},
            "cache_dir": str(datamodule.cache_dir),
            "run_dir": str(run_dir.resolve()),  # its split.csv: the partner's split is the network's
            "skipped": skipped,
            **chosen,
            **run_info(),
        },
    )
    log.info(
        "classical partner %s (C=%s) fitted on %d training clips: %s",
        method,
        spec.C,
        int((datamodule.clips["split"] == "train").sum()),
        member_dir,
    )
    return {"method": method, "dir": member_dir, "arrays": fitted, "features": features, "skipped": skipped}


def write_ensemble_file(
    run_dir: Path, checkpoint: str, network_weight: float, partners: list[Path]
) -> list[float]:
    """ensemble.json: the network's checkpoint and the partners, relative to the run dir, and their weights (the
    network's share, the rest split equally among the partners)."""
    rest = (1.0 - float(network_weight)) / len(partners)
    weights = [float(network_weight)] + [rest] * len(partners)
    checkpoint = Path(checkpoint).resolve()
    inside = checkpoint.is_relative_to(run_dir.resolve())
    write_json(
        run_dir / ENSEMBLE_FILE,
        {
            "members": [
                os.path.relpath(checkpoint, run_dir.resolve()) if inside else str(checkpoint),
                *(str(p) for p in partners),
            ],
            "weights": weights,
        },
    )
    return weights


def test_ensemble(partners: list[dict], network_predictions: list[dict], classes, weights, clips) -> dict:
    """Every member's and the ensemble's test predictions and results (on the clips all of them could read)."""
    partner_predictions = [
        split_predictions(p["arrays"], clips, p["features"], classes, "test") for p in partners
    ]
    fused = average_predictions(
        [{"predictions": network_predictions}, *({"predictions": p} for p in partner_predictions)], weights
    )
    return {
        "partner_predictions": partner_predictions,
        "partner_results": [results_from_predictions(p, classes) for p in partner_predictions],
        "predictions": fused,
        "results": results_from_predictions(fused, classes),
    }


class Pair:
    """A train.py run's network and its classical partners (`ensemble_with`), fitted on the same training speakers."""

    def __init__(
        self, spec: DictConfig, partners: list[dict], weights: list[float], run_dir: Path, checkpoint: str
    ):
        self.spec, self.partners, self.weights = spec, partners, weights
        self.run_dir, self.checkpoint = run_dir, checkpoint

    @classmethod
    def fit(cls, spec: DictConfig, datamodule, data_cfg: DictConfig, run_dir: Path, checkpoint: str) -> Pair:
        """Fit the partners and write ensemble.json (the run folder is then the ensemble for evaluate and predict)."""
        methods = partner_methods(spec)
        dirs = partner_dirs(methods)
        partners = [
            fit_partner(spec, method, datamodule, data_cfg, run_dir / member)
            for method, member in zip(methods, dirs, strict=True)
        ]
        weights = write_ensemble_file(run_dir, checkpoint, spec.network_weight, dirs)
        return cls(spec, partners, weights, run_dir, checkpoint)

    def test(self, module, datamodule, about: dict, loggers) -> tuple[dict, list[dict], dict]:
        """Each member's test results into members/<name>/, and the ensemble's results, predictions and record."""
        classes = module.classes
        tested = test_ensemble(
            self.partners, module.test_predictions, classes, self.weights, datamodule.clips
        )
        members = [(NETWORK_DIR, module.test_results, module.test_predictions, "network")]
        members += [
            (p["dir"].relative_to(self.run_dir), results, predictions, p["method"])
            for p, results, predictions in zip(
                self.partners, tested["partner_results"], tested["partner_predictions"], strict=True
            )
        ]
        for member, results, predictions, task in members:
            write_results(
                self.run_dir / member,
                results,
                predictions,
                task="member",
                tested_on=about,
                model=self.checkpoint if task == "network" else self.run_dir / member,
                checkpoint=self.checkpoint if task == "network" else None,
                extra={"member": task},
                speakers=datamodule.speakers(),
                classes=classes,
            )
        accuracy = [results["accuracy"] for _, results, _, _ in members]
        # The ensemble is test/accuracy; each member beside it (the first partner under its 0.6 name).
        logged = {"test/network_accuracy": accuracy[0]}
        for i, (partner, value) in enumerate(zip(self.partners, accuracy[1:], strict=True)):
            logged["test/partner_accuracy" + ("" if i == 0 else "_" + partner["method"])] = value
        for logger in loggers:
            logger.log_metrics(logged)
        log.info(
            "test accuracy: network %.4f, %s, their ensemble (weights %s) %.4f",
            accuracy[0],
            ", ".join(f"{p['method']} {a:.4f}" for p, a in zip(self.partners, accuracy[1:], strict=True)),
            self.weights,
            tested["results"]["accuracy"],
        )
        methods = [p["method"] for p in self.partners]
        record = {
            "members": [self.checkpoint, *(str(p["dir"].resolve()) for p in self.partners)],
            "weights": self.weights,
            "method": methods[0] if len(methods) == 1 else methods,
            "member_accuracy": accuracy,
        }
        return tested["results"], tested["predictions"], {"ensemble": record}
