"""Shared building blocks of the entry points (train.py, evaluate.py, prepare, predict): config -> objects.

    from cremad_lit.pipeline import build_net, build_datamodule
    datamodule = build_datamodule(cfg.data)                     # Hydra-instantiated EmotionDataModule
    net = build_net(cfg.model, datamodule.classes)              # Hydra-instantiated AudioVisualNet, its head sized
    datamodule.use_frame_spec(cache_frame_spec(net, cfg.model))

The DataModule never sees the model: only the video backbone's input spec (size, mean, std) crosses over.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

import cremad_lit
from cremad_lit.data.adapters.cremad import EXPECTED_LAYOUT
from cremad_lit.data.catalog import build_catalog
from cremad_lit.errors import MissingData

log = logging.getLogger(__name__)
AUDIO_ONLY_SPEC = {"image_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def resolve_precision(precision: str | int, accelerator: str = "auto") -> str | int:
    """`auto`: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU."""
    if str(precision) != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_net(model_cfg: DictConfig, classes, record: bool = False):
    """The Hydra-instantiated net, its head sized for `classes` (the run's ordered class list). `record`: write into `model_cfg` what a branch needs to be rebuilt without its
    source (a speech encoder's architecture, so the checkpoint's config rebuilds it offline)."""
    net = instantiate(model_cfg, num_classes=len(classes))
    if record:
        with open_dict(model_cfg):
            for branch in ("audio_backbone", "video_backbone"):
                part = getattr(net, branch, None)
                for key, value in (getattr(part, "architecture", dict)() if part is not None else {}).items():
                    model_cfg[branch][key] = value
    return net


def frame_spec_without_weights(model_cfg: DictConfig) -> dict:
    """The video backbone's input spec, read without downloading weights (for data-only commands).

    Audio-only configs still name a video backbone: its frame size keys the cache, so the audio-only runs of a model
    share the cache of its audio-visual runs (entries hold every modality a clip has)."""
    from cremad_lit.models.backbones import backbone_input_spec

    if not model_cfg.get("video_backbone"):
        return AUDIO_ONLY_SPEC
    backbone = OmegaConf.to_container(model_cfg.video_backbone, resolve=True)
    from hydra.utils import get_class

    target = get_class(backbone["_target_"])
    if hasattr(target, "static_input_spec"):  # a backbone whose preprocessing is fixed (fer_minixception)
        return target.static_input_spec(**backbone)
    extra = {
        k: v
        for k, v in backbone.items()
        if k not in ("_target_", "_partial_", "name", "pretrained", "pretrained_file", "input_size")
    }
    return backbone_input_spec(backbone["name"], backbone.get("input_size"), **extra)


def cache_frame_spec(net, model_cfg: DictConfig) -> dict:
    """The frame spec that keys a run's cache: the net's own, or for an audio-only net its config's video backbone;
    with what its audio branch reads (`audio_input`: mel or waveform)."""
    spec = net.frame_input_spec() or frame_spec_without_weights(model_cfg)
    return {**spec, "audio_input": net.audio_input() or "mel"}


def check_data_root(data_cfg: DictConfig) -> None:
    if data_cfg.get("generate"):
        return
    if data_cfg.get("dataset", "cremad") == "manifest":
        if not data_cfg.get("manifest") or not Path(str(data_cfg.manifest)).expanduser().is_file():
            raise MissingData(
                f"no manifest at data.manifest={data_cfg.get('manifest')} (a CSV: see conf/data/manifest.yaml)"
            )
        return
    root = Path(str(data_cfg.root))
    if not root.is_dir():
        layout = (
            EXPECTED_LAYOUT if data_cfg.get("dataset", "cremad") == "cremad" else f"a {data_cfg.dataset} root"
        )
        raise MissingData(f"no dataset at data.root={root}: {layout}")


def load_catalog(data_cfg: DictConfig, modalities=None):
    """The clips table the data config names (any adapter), without building a DataModule."""
    check_data_root(data_cfg)
    manifest = data_cfg.get("manifest")
    return build_catalog(
        None if manifest else data_cfg.root,
        data_cfg.get("dataset", "cremad"),
        modalities,
        OmegaConf.to_container(data_cfg.label_map) if data_cfg.get("label_map") else None,
        manifest,
        OmegaConf.to_container(data_cfg.options) if data_cfg.get("options") else None,
        _classes_setting(data_cfg),
    )


def _classes_setting(data_cfg: DictConfig):
    classes = data_cfg.get("classes", "default")
    return OmegaConf.to_container(classes) if isinstance(classes, ListConfig) else classes


def build_datamodule(data_cfg: DictConfig, frame_spec: dict | None = None, **overrides):
    """Instantiate the DataModule, with the frame size/mean/std taken from the video backbone (or given later:
    `datamodule.use_frame_spec`, once the net exists)."""
    frame_spec = frame_spec or AUDIO_ONLY_SPEC
    check_data_root(data_cfg)
    data_cfg = data_cfg.copy()
    with open_dict(data_cfg):
        data_cfg.preprocessing.image_size = int(frame_spec["image_size"])
        data_cfg.frame_mean = list(frame_spec["mean"])
        data_cfg.frame_std = list(frame_spec["std"])
        data_cfg.audio_input = frame_spec.get("audio_input", "mel")
        for key, value in overrides.items():
            data_cfg[key] = value
    return instantiate(data_cfg, _convert_="all")


def run_info() -> dict:
    """Package version and git commit of the code that ran (commit is None outside a git checkout)."""
    commit = None
    try:
        source = Path(cremad_lit.__file__).resolve().parent.parent
        commit = (
            subprocess.run(
                ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if commit and dirty:
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "version": cremad_lit.__version__,
        "git_commit": commit,
        "torch": torch.__version__,
        "pid": os.getpid(),
    }
