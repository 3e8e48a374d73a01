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
from cremad_lit.data.splits import LEAKY_WARNING
from cremad_lit.encoder_cache import use_encoder_cache
from cremad_lit.ensemble import (
    NETWORK_DIR,
    PARTNER_DIR,
    check_partner,
    fit_partner,
    test_ensemble,
    write_ensemble_file,
)
from cremad_lit.environment import require_environment
from cremad_lit.io import write_json
from cremad_lit.loggers import (
    build_loggers,
    finish_loggers,
    lightning_console_once,
    log_image,
    log_model_artifacts,
    log_predictions_table,
)
from cremad_lit.module import EmotionModule
from cremad_lit.pipeline import (
    build_datamodule,
    build_net,
    cache_frame_spec,
    check_data_root,
    resolve_precision,
    resolve_run_classes,
    run_info,
)
from cremad_lit.results import write_results

log = logging.getLogger(__name__)


def write_resume_command(run_dir: Path) -> Path:
    """`<run dir>/resume.sh`: the same command, into the same run dir, from its last checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    overrides = [
        o for o in HydraConfig.get().overrides.task if not o.startswith(("hydra.run.dir=", "ckpt_path="))
    ]
    script = Path(sys.argv[0]).resolve()
    command = [
        sys.executable,
        str(script),
        *overrides,
        f"hydra.run.dir={run_dir.resolve()}",
        "ckpt_path=last",
    ]
    path = run_dir / "resume.sh"
    path.write_text(
        f"#!/usr/bin/env bash\n# Resume this run after an interruption.\ncd {shlex.quote(os.getcwd())}\n{shlex.join(command)}\n"
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


def train(cfg: DictConfig) -> float | None:
    require_environment()  # a broken install stops here, before any clip is touched
    lightning_console_once()
    run_dir = Path(cfg.paths.output_dir)
    if cfg.split.get("by", "actor") == "clip":
        log.warning(LEAKY_WARNING)
    check_data_root(cfg.data)  # cheap checks first: no weight download for a run that has no data
    check_functionals_size(cfg)
    if cfg.get("ensemble_with"):
        check_partner(cfg.ensemble_with, cfg.data)
    L.seed_everything(cfg.seed, workers=True)
    classes = resolve_run_classes(cfg)  # data.classes -> the ordered list: the head's size, the data's labels
    net = build_net(cfg.model, classes, record=True)
    datamodule = build_datamodule(cfg.data, cache_frame_spec(net, cfg.model), classes=list(classes))

    accelerated = torch.cuda.is_available() and cfg.trainer.get("accelerator", "auto") in (
        "auto",
        "gpu",
        "cuda",
    )
    encoder_cache = use_encoder_cache(
        net, datamodule, "cuda" if accelerated else "cpu", frame_mixup=cfg.loss.get("mixup_alpha", 0.0) > 0
    )
    class_weights = None
    if cfg.loss.class_weights:
        datamodule.prepare_data()
        datamodule.setup("fit")
        class_weights = datamodule.class_weights().tolist()
        log.info("class weights %s", [round(w, 3) for w in class_weights])
    module = EmotionModule(
        net,
        optimizer=instantiate(cfg.optim.optimizer),
        classes=classes,
        scheduler=instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None,
        class_weights=class_weights,
        label_smoothing=cfg.loss.label_smoothing,
        mixup_alpha=cfg.loss.get("mixup_alpha", 0.0),
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    module.run_config["data"]["classes"] = list(
        classes
    )  # the resolved list: evaluate rebuilds the same labels

    resume_from = resolve_checkpoint(cfg.get("ckpt_path"), run_dir)
    loggers = build_loggers(cfg, run_dir, resuming=resume_from is not None)
    trainer = build_trainer(cfg.trainer, build_callbacks(cfg.get("callbacks"), bool(loggers)), loggers)
    info = run_info()
    if encoder_cache:
        info["encoder_cache"] = {
            modality: {**report, "skipped": len(report["skipped"])}
            for modality, report in encoder_cache.items()
        }
    if trainer.is_global_zero:
        write_json(run_dir / "run_info.json", info)
        log.info("to resume this run after an interruption: bash %s", write_resume_command(run_dir))
        if resume_from:
            log.info("resuming from %s", resume_from)
    for logger in loggers:
        logger.log_hyperparams({**module.run_config, "run_info": info})

    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    if trainer.is_global_zero:
        log_image(
            loggers, "data/faces", run_dir / "faces.png"
        )  # written by prepare_data: what the video branch sees
    checkpointing = trainer.checkpoint_callback
    tested = checkpointing.best_model_path if checkpointing else ""
    # Sweepers get the monitored metric of the tested checkpoint: the best one, or with test_checkpoint=last the end.
    monitored = checkpointing.best_model_score if checkpointing else None
    if cfg.get("test_checkpoint", "best") == "last" and checkpointing and checkpointing.last_model_path:
        tested, monitored = checkpointing.last_model_path, None
    if monitored is None:
        monitored = trainer.callback_metrics.get(cfg.monitor.metric)
    partner, weights = None, None
    if cfg.get("ensemble_with") and trainer.is_global_zero and tested:
        partner = fit_partner(cfg.ensemble_with, datamodule, cfg.data, run_dir)
        weights = write_ensemble_file(run_dir, tested, cfg.ensemble_with.network_weight)
    if cfg.get("test_after_fit", True):
        if tested:
            # Exactly the weights stored in the checkpoint, as evaluate.py loads them: test(ckpt_path=...) would let
            # a WeightAveraging (EMA) callback put the raw, non-averaged weights back after loading.
            module.load_state_dict(torch.load(tested, map_location="cpu", weights_only=True)["state_dict"])
        trainer.test(module, datamodule=datamodule)
        if trainer.is_global_zero:
            about = {
                "split": "test",
                "split_by": datamodule.split_by,
                "protocol": datamodule.protocol,
                "dataset": datamodule.dataset,
                "test_actors": datamodule.actors("test"),
            }
            results, predictions, ensemble = module.test_results, module.test_predictions, {}
            if partner:
                tested_pair = test_ensemble(partner, predictions, classes, weights, datamodule.clips)
                for member, member_results, member_predictions, task in (
                    (NETWORK_DIR, results, predictions, "network"),
                    (
                        PARTNER_DIR,
                        tested_pair["partner_results"],
                        tested_pair["partner_predictions"],
                        cfg.ensemble_with.method,
                    ),
                ):
                    write_results(
                        run_dir / member,
                        member_results,
                        member_predictions,
                        extra={"task": "member", "member": task, **about},
                        speakers=datamodule.speakers(),
                        classes=classes,
                    )
                results, predictions = tested_pair["results"], tested_pair["predictions"]
                ensemble = {
                    "ensemble": {
                        "members": [tested, str((run_dir / PARTNER_DIR).resolve())],
                        "weights": weights,
                        "method": cfg.ensemble_with.method,
                        "member_accuracy": [
                            module.test_results["accuracy"],
                            tested_pair["partner_results"]["accuracy"],
                        ],
                    }
                }
                for logger in trainer.loggers:  # the ensemble is test/accuracy; each member beside it
                    logger.log_metrics(
                        {
                            "test/network_accuracy": module.test_results["accuracy"],
                            "test/partner_accuracy": tested_pair["partner_results"]["accuracy"],
                        }
                    )
                log.info(
                    "test accuracy: network %.4f, %s %.4f, their ensemble (weights %s) %.4f",
                    module.test_results["accuracy"],
                    cfg.ensemble_with.method,
                    tested_pair["partner_results"]["accuracy"],
                    weights,
                    results["accuracy"],
                )
            metrics = write_results(
                run_dir,
                results,
                predictions,
                trainer.loggers,
                extra={
                    "task": "train",
                    **about,
                    # What these numbers measure: with a partner, the run folder (evaluate.py ckpt_path=<it> gives the
                    # ensemble again); the network alone is a member.
                    "checkpoint": str(run_dir.resolve()) if partner else (tested or None),
                    **({"network_checkpoint": tested} if partner else {}),
                    "monitor": {cfg.monitor.metric: float(monitored) if monitored is not None else None},
                    **ensemble,
                    **info,
                },
                data_root=datamodule.root,
                speakers=datamodule.speakers(),
                classes=classes,
            )
            log.info(
                "test accuracy (WAR) %.4f, UAR %.4f, macro F1 %.4f on %d clips",
                metrics["accuracy"],
                metrics["uar"],
                metrics["f1_macro"],
                metrics["n_test"],
            )
            log_predictions_table(loggers, module.test_predictions, datamodule)
    if trainer.is_global_zero and cfg.get("logger") and cfg.logger.get("wandb", {}).get("log_model"):
        log_model_artifacts(loggers, tested or None, run_dir)
    if trainer.is_global_zero:
        finish_loggers(loggers)
    if trainer.is_global_zero:
        print(
            f"run dir: {run_dir.resolve()}\n  metrics: {run_dir / 'metrics.json'}\n  confusion matrix: {run_dir / 'confusion.png'}\n  curves: {run_dir / 'curves.png'}"
        )
    return float(monitored) if monitored is not None else None
