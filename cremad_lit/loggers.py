"""Experiment loggers (W&B offline by default) that read like the experiment, and the per-clip predictions table.

    python train.py -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2      # W&B: one group per multirun,
                                                                          # runs named "model=effnet_lstm seed=1"

Run name: the overrides that vary within the multirun (a single run: its own overrides, minus paths and the like).
Group: the multirun (a single run: its task). job_type: train / eval / baseline. Tags: model, modalities, dataset,
split protocol. Anything set under `logger.wandb` (name, group, job_type, tags) wins over these.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
# Overrides that say where things are or how fast they load, not what the experiment is.
_NOT_IN_NAMES = (
    "hydra.",
    "paths.",
    "logger.",
    "ckpt_path",
    "data.root",
    "data.manifest",
    "data.cache",
    "data.num_workers",
    "data.prepare_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "data.generate",
)


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_arguments(sweep_dir: str | Path) -> list[str]:
    """The multirun's own command-line overrides, from the `multirun.yaml` Hydra writes before any job starts.

    Read from there rather than sys.argv, which jobs of the joblib and SLURM launchers do not share."""
    saved = Path(sweep_dir) / "multirun.yaml"
    if not saved.is_file():
        return sys.argv[1:]
    return list(OmegaConf.load(saved).hydra.overrides.task)


def swept_keys(argv: list[str] | None = None) -> set[str]:
    """The keys a multirun sweeps over (`seed=0,1,2`, `model=a,b`, `x=range(3)`), read from its command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [a for a in (sys.argv[1:] if argv is None else argv) if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # a value Hydra itself would reject; no name is better than a crash
        return set()
    return {o.get_key_element() for o in overrides if o.is_sweep_override()}


def run_identity(cfg: DictConfig, job_type: str) -> dict:
    """name, group, job_type and tags for this run (see the module docstring)."""
    hydra_cfg = _hydra()
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg else []
    multirun = hydra_cfg is not None and str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    searched = (hydra_cfg.sweeper.get("params") or {}) if multirun else {}
    if searched:  # a search's trial (cremad_lit/search.py): its point and inner fold; its study is the group
        varying = {*searched, "split.inner_fold"}
        shown = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in varying]
        group = f"{cfg.task_name}/search/{hydra_cfg.sweeper.study_name}"
    elif multirun:
        varying = swept_keys(sweep_arguments(hydra_cfg.sweep.dir))
        shown = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in varying]
        group = f"{cfg.task_name}/{Path(hydra_cfg.sweep.dir).name}"
    else:
        shown = [o for o in overrides if not o.lstrip("+~").startswith(_NOT_IN_NAMES)]
        group = str(cfg.task_name)
    name = " ".join(shown) or (str(cfg.task_name) + (f" {hydra_cfg.job.num}" if multirun else ""))
    choices = dict(hydra_cfg.runtime.choices) if hydra_cfg else {}
    data = cfg.get("data") or {}
    tags = [f"model:{choices.get('model') or cfg.get('method') or 'checkpoint'}"]
    if data.get("modalities"):  # evaluate.py without data=<corpus> takes them from the checkpoint
        tags.append("modalities:" + "+".join(data.modalities))
    if data.get("dataset"):
        tags.append(f"dataset:{data.dataset}")
    split = cfg.get("split")
    if isinstance(split, DictConfig):
        tags.append(f"split:{split.get('by', 'actor')}")
    return {"name": name[:128], "group": group[:128], "job_type": job_type, "tags": tags}


class _NoAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def lightning_console_once() -> None:
    """Lightning, imported before Hydra sets up logging, adds console handlers of its own: each of its lines then
    shows twice (its "INFO: ..." and Hydra's). Leave its records to Hydra's handlers (the console and the run's log
    file), without its tips to install its cloud products, and without a deprecation notice that is between
    Lightning and torch (Lightning's own _pytree copy uses torch's LeafSpec), printed once per fit."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisements) for f in logger.filters):
            logger.addFilter(_NoAdvertisements())


def build_loggers(cfg: DictConfig, run_dir: Path, resuming: bool, job_type: str = "train") -> list:
    """Instantiate `cfg.logger`'s loggers; a resumed run continues the same W&B run (same id)."""
    loggers = []
    for config in (cfg.get("logger") or {}).values():
        if config is None or "_target_" not in config:
            continue
        if not config._target_.endswith("WandbLogger"):
            loggers.append(instantiate(config))
            continue
        identity = run_identity(cfg, job_type)
        extra = {k: v for k, v in identity.items() if not config.get(k)}
        if config.get("tags"):
            extra["tags"] = identity["tags"] + list(config.tags)
        previous = _wandb_run_id(run_dir) if resuming else None
        if previous:
            extra.update(id=previous, resume="allow")
        # Checkpoints go up as artifacts from here (log_model_artifacts), which also works offline.
        logger = instantiate(config, log_model=False, **extra)
        # Lightning passes wandb the retired `anonymous` setting even when unset, and wandb warns on every run.
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(logger)
    return loggers


def _wandb_run_id(run_dir: Path) -> str | None:
    runs = sorted((run_dir / "wandb").glob("*run-*-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def wandb_runs(loggers) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [logger.experiment for logger in loggers if isinstance(logger, WandbLogger)]


def finish_loggers(loggers) -> None:
    for run in wandb_runs(loggers):
        run.finish()


def log_model_artifacts(loggers, checkpoint: str | None, run_dir: Path) -> None:
    """The tested checkpoint and split.csv as W&B artifacts (stored in the offline run too; `wandb sync` uploads)."""
    import wandb

    for run in wandb_runs(loggers):
        if checkpoint:
            model = wandb.Artifact(
                f"model-{run.id}", type="model", metadata={"checkpoint": Path(checkpoint).name}
            )
            model.add_file(checkpoint)
            run.log_artifact(model, aliases=["tested"])
        split = run_dir / "split.csv"
        if split.is_file():
            table = wandb.Artifact(f"split-{run.id}", type="split")
            table.add_file(str(split))
            run.log_artifact(table)


def frame_strip(frames: np.ndarray, height: int = 96) -> np.ndarray:
    """(T, H, W, 3) uint8 frames side by side as one image, at most `height` pixels high (a table of a thousand
    clips stays small)."""
    import cv2

    if frames.shape[1] > height:
        width = round(frames.shape[2] * height / frames.shape[1])
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    return np.concatenate(list(frames), axis=1)


def mel_image(mel: np.ndarray) -> np.ndarray:
    """(1, F, W) dB Mel -> (F, W) uint8 with low frequencies at the bottom, for a W&B image."""
    values = mel.astype(np.float32)[0][::-1]
    low, high = np.percentile(values, [1, 99])
    return (np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def log_predictions_table(
    loggers, predictions: list[dict], media, classes, key: str = "test/predictions"
) -> None:
    """One row per clip: id, actor, true and predicted emotion, confidence, each class's probability, and its media
    (`media(clip_id)`: dataset.clip_media; a strip of the sampled frames when it has video, the audio, the Mel image).
    Sort by confidence to find the worst mistakes."""
    runs = wandb_runs(loggers)
    if not runs or not predictions:
        return
    import wandb

    classes = tuple(classes)
    columns = ["clip_id", "actor", "true", "predicted", "correct", "confidence"]
    columns += [f"p_{e}" for e in classes] + ["frames", "audio", "mel"]
    table = wandb.Table(columns=columns)
    for prediction in predictions:
        shown = media(prediction["clip_id"])
        probabilities = prediction["probs"]
        table.add_data(
            prediction["clip_id"],
            str(shown.get("actor", "")),
            classes[prediction["label"]],
            classes[prediction["pred"]],
            prediction["label"] == prediction["pred"],
            float(max(probabilities)),
            *[float(p) for p in probabilities],
            wandb.Image(frame_strip(shown["frames"])) if "frames" in shown else None,
            wandb.Audio(shown["audio"], sample_rate=shown["sample_rate"]) if "audio" in shown else None,
            wandb.Image(mel_image(shown["mel"])) if "mel" in shown else None,
        )
    for run in runs:
        run.log({key: table})


def log_image(loggers, key: str, path: Path) -> None:
    """A PNG of the run dir (faces.png, say) as a W&B image, when there is one and a W&B run."""
    runs = wandb_runs(loggers)
    if not runs or not Path(path).is_file():
        return
    import wandb

    for run in runs:
        run.log({key: wandb.Image(str(path))})


def log_config(loggers, cfg: DictConfig, **extra) -> None:
    for logger in loggers:
        logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), **extra})
