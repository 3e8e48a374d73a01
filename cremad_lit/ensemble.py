"""A train.py run's classical partner (`ensemble_with`): fitted on the run's own training speakers, its probabilities
averaged with the network's, so that the run folder is that ensemble for evaluate.py and predict.

    python train.py experiment=speech data=ravdess data.root=../shared/ravdess-speech   # network + ComParE LR
    python train.py experiment=speech ensemble_with=null ...                             # the network alone

The run dir then holds members/classical/ (the saved classical model), members/network/ and members/classical/
metrics.json (each member alone on the test speakers), ensemble.json (the members and their weights: what
`ckpt_path=<run dir>` loads) and, at the top, metrics.json and predictions.csv of the ensemble.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cremad_lit.classical import METHODS, fit_on_split, save_classical, split_predictions
from cremad_lit.evaluation import ENSEMBLE_FILE, average_predictions
from cremad_lit.io import write_json
from cremad_lit.metrics import results_from_predictions
from cremad_lit.pipeline import run_info

log = logging.getLogger(__name__)
PARTNER_DIR = Path("members") / "classical"
NETWORK_DIR = Path("members") / "network"


def check_partner(spec: DictConfig, data_cfg: DictConfig) -> None:
    """Before training: a partner the run can fit (its features come from the clips' audio)."""
    if spec.get("method") not in METHODS:
        raise ValueError(f"ensemble_with.method must be one of {tuple(METHODS)}, not {spec.get('method')!r}")
    if not 0.0 <= float(spec.get("network_weight", -1)) <= 1.0:
        raise ValueError(f"ensemble_with.network_weight must lie in [0, 1], not {spec.get('network_weight')}")
    if "audio" not in data_cfg.modalities:
        raise ValueError(
            f"ensemble_with.method={spec.method} reads the clips' audio, but data.modalities={list(data_cfg.modalities)}: "
            "add audio, or set ensemble_with=null"
        )


def fit_partner(spec: DictConfig, datamodule, data_cfg: DictConfig, run_dir: Path) -> dict:
    """Fit `spec.method` on the set-up DataModule's train split with the fixed `spec.C` (no validation speakers
    needed, so final=all_speakers gets the same partner), speaker-normalised as data.speaker_norm says; save it."""
    speaker_norm = data_cfg.get("speaker_norm", "none")
    kind = METHODS[spec.method]
    fitted, chosen, features, skipped = fit_on_split(
        datamodule,
        spec.method,
        kind,
        [float(spec.C)],
        datamodule.cache_dir,
        speaker_norm,
        int(datamodule.prepare_workers),
    )
    for clip in skipped:
        log.warning("classical partner: skipped clip %s: %s", clip["clip_id"], clip["reason"])
    save_classical(
        run_dir / PARTNER_DIR,
        fitted,
        {
            "method": spec.method,
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
        spec.method,
        spec.C,
        int((datamodule.clips["split"] == "train").sum()),
        run_dir / PARTNER_DIR,
    )
    return {"arrays": fitted, "features": features, "skipped": skipped}


def write_ensemble_file(run_dir: Path, checkpoint: str, network_weight: float) -> list[float]:
    """ensemble.json: the network's checkpoint and the partner, relative to the run dir, and their weights."""
    weights = [float(network_weight), 1.0 - float(network_weight)]
    checkpoint = Path(checkpoint).resolve()
    inside = checkpoint.is_relative_to(run_dir.resolve())
    write_json(
        run_dir / ENSEMBLE_FILE,
        {
            "members": [
                os.path.relpath(checkpoint, run_dir.resolve()) if inside else str(checkpoint),
                str(PARTNER_DIR),
            ],
            "weights": weights,
        },
    )
    return weights


def test_ensemble(partner: dict, network_predictions: list[dict], classes, weights, clips) -> dict:
    """Both members' and the ensemble's test predictions and results (on the clips both could read)."""
    partner_predictions = split_predictions(partner["arrays"], clips, partner["features"], classes, "test")
    fused = average_predictions(
        [{"predictions": network_predictions}, {"predictions": partner_predictions}], weights
    )
    return {
        "partner_predictions": partner_predictions,
        "partner_results": results_from_predictions(partner_predictions, classes),
        "predictions": fused,
        "results": results_from_predictions(fused, classes),
    }
