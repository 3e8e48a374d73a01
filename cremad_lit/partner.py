"""train.py's classical partner (`ensemble_with`): after fit, a classical model fitted on the same training speakers,
saved beside the network, and the run folder made an ensemble of the two (ensemble.json).

    python train.py experiment=speech data=ravdess data.root=../shared/ravdess-speech   # network + ComParE LR

A train.py run with a partner holds members/classical/ (the saved classical model), members/network/ and
members/classical/ metrics.json (each member alone on the test speakers), ensemble.json (the members, relative to the
run dir, and their weights: what `ckpt_path=<run dir>` loads) and, at the top, the ensemble's metrics.json and
predictions.csv.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from cremad_lit.classical import METHODS, ClipSource, fit_on_split, save_classical, split_predictions
from cremad_lit.io import write_json
from cremad_lit.metrics import results_from_predictions
from cremad_lit.pipeline import run_info
from cremad_lit.predictors.ensemble import ENSEMBLE_FILE, average_predictions
from cremad_lit.results import write_results

log = logging.getLogger(__name__)
PARTNER_DIR = Path("members") / "classical"
NETWORK_DIR = Path("members") / "network"


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
    fused = average_predictions([network_predictions, *partner_predictions], weights)
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
