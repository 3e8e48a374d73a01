"""The body of train.py: config -> model, data, trainer -> fit -> test -> results in the run dir.

python train.py experiment=demo          # see train.py for more; defaults in conf/train.yaml
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cremad_lit.checkpointing import AtomicCheckpointIO
from cremad_lit.data.corpus import Corpus
from cremad_lit.data.encoder_cache import frozen_encoders
from cremad_lit.data.splits import LEAKY_WARNING
from cremad_lit.io import write_json, write_text
from cremad_lit.loggers import (
    build_loggers,
    finish_loggers,
    lightning_console_once,
    log_image,
    log_model_artifacts,
    log_predictions_table,
)
from cremad_lit.module import EmotionModule
from cremad_lit.objectives import CrossEntropy, Mixup, Objective, SpeakerAdversarial
from cremad_lit.partner import Pair, check_partner
from cremad_lit.pipeline import (
    build_datamodule,
    build_net,
    check_data_root,
    model_inputs,
    resolve_precision,
    run_info,
)
from cremad_lit.plots import draw_faces
from cremad_lit.results import scores_line, where_line, write_results

log = logging.getLogger(__name__)


def write_resume_command(run_dir: Path) -> Path:
    """`<run dir>/resume.sh`: the same command, into the same run dir, from its last checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    overrides = [
        o for o in HydraConfig.get().overrides.task if not o.startswith(("hydra.run.dir=", "ckpt_path="))
    ]
    # The train command of the package this run imported (train.py in a checkout is a wrapper of it).
    command = [
        sys.executable,
        "-m",
        "cremad_lit",
        "train",
        *overrides,
        f"hydra.run.dir={run_dir.resolve()}",
        "ckpt_path=last",
    ]
    path = run_dir / "resume.sh"
    write_text(
        path,
        f"#!/usr/bin/env bash\n# Resume this run after an interruption.\ncd {shlex.quote(os.getcwd())}\n{shlex.join(command)}\n",
    )
    path.chmod(0o755)
    return path


def build_callbacks(callbacks_cfg: DictConfig | None, with_loggers: bool) -> list:
    callbacks = []
    for name, config in (callbacks_cfg or {}).items():
        if config is None or "_target_" not in config:
            continue
        if name == "lr_monitor" and not with_loggers:  # LearningRateMonitor refuses to run without a logger
            continue
        callbacks.append(instantiate(config))
    return callbacks


def build_trainer(trainer_cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    precision = resolve_precision(
        trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto")
    )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    return instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],
    )


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` resumes from this run dir's checkpoints/last.ckpt when it exists; a path is used as given."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        candidate = run_dir / "checkpoints" / "last.ckpt"
        return str(candidate) if candidate.is_file() else None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
    return str(ckpt_path)


def check_functionals_size(cfg: DictConfig) -> None:
    """The functionals branch's input size must be the feature set's (88 eGeMAPS, 6,373 ComParE)."""
    from cremad_lit.data.functionals import FEATURE_SETS

    branch, kind = cfg.model.get("functionals"), cfg.data.get("functionals", "none")
    if branch is None or kind not in FEATURE_SETS:
        return
    size = FEATURE_SETS[kind][1]
    if int(branch.get("in_features", size)) != size:
        raise ValueError(
            f"data.functionals={kind} gives {size} features per clip but the functionals branch takes "
            f"{branch.in_features}: add model.functionals.in_features={size}"
        )


def check_run(cfg: DictConfig) -> None:
    """The cheap checks first: no weight download for a run that has no data or cannot finish."""
    if cfg.split.get("by", "actor") == "clip":
        log.warning(LEAKY_WARNING)
    check_data_root(cfg.data)
    check_functionals_size(cfg)
    if cfg.get("ensemble_with"):
        check_partner(cfg.ensemble_with, cfg.data)


def build_run(cfg: DictConfig) -> tuple[EmotionModule, object, dict]:
    """The module (net, loss, optimiser), the DataModule and the run's record (run_info.json)."""
    corpus = Corpus.from_config(cfg.data)
    classes = corpus.classes  # data.classes resolved on the corpus, once: the head's size, the data's labels
    net = build_net(cfg.model, classes, record=True)
    accelerated = torch.cuda.is_available() and cfg.trainer.get("accelerator", "auto") in (
        "auto",
        "gpu",
        "cuda",
    )
    inputs = model_inputs(
        net,
        cfg.model,
        frozen=frozen_encoders(net),
        frame_mixup=cfg.loss.get("mixup_alpha", 0.0) > 0,
        device="cuda" if accelerated else "cpu",
    )
    datamodule = build_datamodule(cfg.data, inputs, corpus=corpus)
    module = EmotionModule(
        net,
        optimizer=instantiate(cfg.optim.optimizer),
        classes=classes,
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        criterion=build_criterion(cfg.loss, datamodule),
        objectives=build_objectives(cfg, datamodule),
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    # the resolved list, so that evaluate rebuilds the same labels
    module.run_config["data"]["classes"] = list(classes)
    return module, datamodule, run_info()


def build_criterion(loss_cfg: DictConfig, datamodule) -> CrossEntropy:
    class_weights = None
    if loss_cfg.class_weights:
        class_weights = datamodule.class_weights().tolist()
        log.info("class weights %s", [round(w, 3) for w in class_weights])
    return CrossEntropy(class_weights, loss_cfg.label_smoothing)


def build_objectives(cfg: DictConfig, datamodule) -> dict[str, Objective]:
    """What the step minimises besides the criterion (objectives.py), by name: loss.mixup_alpha,
    loss.speaker_adversary, the balance= method, and each entry of `objectives` (your own: docs/extending.md)."""
    objectives = {}
    if cfg.loss.get("mixup_alpha", 0.0) > 0:
        objectives["mixup"] = Mixup(cfg.loss.mixup_alpha)
    if cfg.loss.get("speaker_adversary", 0.0) > 0:
        objectives["speaker_adversary"] = SpeakerAdversarial(
            float(cfg.loss.speaker_adversary), datamodule.training_speakers()
        )
    if cfg.get("balance"):  # balance=none is no objective
        objectives["balance"] = instantiate(cfg.balance)
    for name, config in (cfg.get("objectives") or {}).items():
        if config is not None:
            objectives[name] = instantiate(config)
    return objectives


def chosen_checkpoint(trainer: L.Trainer, cfg: DictConfig) -> tuple[str, float | None]:
    """The checkpoint to test and the monitored value sweepers get: the best one, or with test_checkpoint=last the
    end of the schedule."""
    checkpointing = trainer.checkpoint_callback
    tested = checkpointing.best_model_path if checkpointing else ""
    monitored = checkpointing.best_model_score if checkpointing else None
    if cfg.get("test_checkpoint", "best") == "last" and checkpointing and checkpointing.last_model_path:
        tested, monitored = checkpointing.last_model_path, None
    if monitored is None:
        monitored = trainer.callback_metrics.get(cfg.monitor.metric)
    return tested, float(monitored) if monitored is not None else None


def test_and_write(
    cfg, trainer, module, datamodule, tested: str, monitored, pair: Pair | None, info: dict
) -> None:
    """Test the chosen checkpoint (with its classical partner, when the run has one) and write the results."""
    run_dir = Path(cfg.paths.output_dir)
    if tested:
        # Exactly the weights stored in the checkpoint, as evaluate.py loads them: test(ckpt_path=...) would let a
        # WeightAveraging (EMA) callback put the raw, non-averaged weights back after loading.
        module.load_state_dict(torch.load(tested, map_location="cpu", weights_only=True)["state_dict"])
    trainer.test(module, datamodule=datamodule)
    if not trainer.is_global_zero:
        return
    about = datamodule.tested_on("test")
    results, predictions, ensemble = module.test_results, module.test_predictions, {}
    if pair:
        results, predictions, ensemble = pair.test(module, datamodule, about, trainer.loggers)
    metrics = write_results(
        run_dir,
        results,
        predictions,
        trainer.loggers,
        task="train",
        tested_on=about,
        # What these numbers measure: with a partner, the run folder (evaluate.py ckpt_path=<it> gives the ensemble
        # again; the network alone is a member); the network's own checkpoint either way.
        model=run_dir.resolve() if pair else (tested or None),
        checkpoint=tested or None,
        extra={
            "monitor": {cfg.monitor.metric: monitored},
            "selection": OmegaConf.to_container(cfg.selection) if cfg.get("selection") else None,
            **ensemble,
            **info,
        },
        data_root=datamodule.root,
        speakers=datamodule.speakers(),
        classes=module.classes,
    )
    log.info("test %s", scores_line(metrics))
    log_predictions_table(trainer.loggers, module.test_predictions, datamodule.clip_media, module.classes)


def train(cfg: DictConfig) -> float | None:
    """Build, fit, choose the checkpoint, test it and write the results; the monitored value, for sweepers."""
    lightning_console_once()
    run_dir = Path(cfg.paths.output_dir)
    check_run(cfg)
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule, info = build_run(cfg)
    resume_from = resolve_checkpoint(cfg.get("ckpt_path"), run_dir)
    loggers = build_loggers(cfg, run_dir, resuming=resume_from is not None)
    trainer = build_trainer(cfg.trainer, build_callbacks(cfg.get("callbacks"), bool(loggers)), loggers)
    if trainer.is_global_zero:
        write_json(run_dir / "run_info.json", info)
        log.info("to resume this run after an interruption: bash %s", write_resume_command(run_dir))
        if resume_from:
            log.info("resuming from %s", resume_from)
    for logger in loggers:
        logger.log_hyperparams({**module.run_config, "run_info": info})

    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    tested, monitored = chosen_checkpoint(trainer, cfg)
    pair = None
    if trainer.is_global_zero:
        if (
            datamodule.encoder_reports
        ):  # filled by the DataModule's setup: what the frozen encoders' cache holds
            info["encoder_cache"] = {
                modality: {**report, "skipped": len(report["skipped"])}
                for modality, report in datamodule.encoder_reports.items()
            }
            write_json(run_dir / "run_info.json", info)
            for logger in loggers:
                logger.log_hyperparams({"run_info": info})
        if draw_faces(datamodule, run_dir / "faces.png"):  # what the video branch saw
            log_image(loggers, "data/faces", run_dir / "faces.png")
        if cfg.get("ensemble_with") and tested:
            pair = Pair.fit(cfg.ensemble_with, datamodule, cfg.data, run_dir, tested)
    if cfg.get("test_after_fit", True):
        test_and_write(cfg, trainer, module, datamodule, tested, monitored, pair, info)
    # The clips a decoder crashed on while decoding on the fly (skipped, the epochs went on) are kept with the run.
    if trainer.is_global_zero and datamodule.decoder_crashes():
        info["decoder_crashes"] = datamodule.decoder_crashes()
        write_json(run_dir / "run_info.json", info)
    if trainer.is_global_zero:
        if cfg.get("logger") and cfg.logger.get("wandb", {}).get("log_model"):
            log_model_artifacts(loggers, tested or None, run_dir)
        finish_loggers(loggers)
        print(where_line(run_dir, "metrics.json", "confusion.png", "curves.png"))
    return monitored
