"""Shared building blocks of the entry points (train.py, evaluate.py, prepare, predict): config -> objects.

    from cremad_lit.pipeline import build_net, build_datamodule, model_inputs
    corpus = Corpus.from_config(cfg.data)                       # which clips, classes, speakers
    net = build_net(cfg.model, corpus.classes)                  # Hydra-instantiated AudioVisualNet, its head sized
    datamodule = build_datamodule(cfg.data, model_inputs(net, cfg.model), corpus=corpus)

The DataModule never sees the model: what it must know of it (ModelInputs: frame size, mean, std, the audio input,
frozen encoders) is handed over once, at construction.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import cremad_lit
from cremad_lit.data.corpus import Corpus, check_data_root
from cremad_lit.data.datamodule import EmotionDataModule, ModelInputs
from cremad_lit.record import SCHEMA

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
    """The video encoder's input spec, read without downloading weights (for data-only commands; models/encoder.py).

    Audio-only configs still name a video backbone: its frame size keys the cache, so the audio-only runs of a model
    share the cache of its audio-visual runs (entries hold every modality a clip has)."""
    from cremad_lit.models.backbones import Backbone, backbone_input_spec
    from cremad_lit.models.encoder import input_spec_without_weights

    if not model_cfg.get("video_backbone"):
        return AUDIO_ONLY_SPEC
    backbone = OmegaConf.to_container(model_cfg.video_backbone, resolve=True)
    if get_class(backbone["_target_"]) is Backbone:  # a timm model: its data config, without building it
        extra = {
            k: v
            for k, v in backbone.items()
            if k not in ("_target_", "_partial_", "name", "pretrained", "pretrained_file", "input_size")
        }
        return backbone_input_spec(backbone["name"], backbone.get("input_size"), **extra)
    return input_spec_without_weights(backbone)


def cache_frame_spec(net, model_cfg: DictConfig) -> dict:
    """The frame spec that keys a run's cache: the net's own, or for an audio-only net its config's video backbone;
    with what its audio branch reads (`audio_input`: mel or waveform)."""
    spec = net.frame_input_spec() or frame_spec_without_weights(model_cfg)
    return {**spec, "audio_input": net.audio_input() or "mel"}


def model_inputs(net, model_cfg: DictConfig, **more) -> ModelInputs:
    """What the data must know of `net` (datamodule.ModelInputs); `more`: frozen=frozen_encoders(net), frame_mixup,
    device, for a training run whose frozen encoders may train from a feature cache."""
    return ModelInputs.of_spec(cache_frame_spec(net, model_cfg), **more)


def build_datamodule(
    data_cfg: DictConfig, inputs: ModelInputs | None = None, corpus: Corpus | None = None, **overrides
) -> EmotionDataModule:
    """The DataModule the data config describes (`overrides` replacing its keys), told what the model reads (`inputs`;
    default: the audio-only spec); `corpus`: the one already built from the same config."""
    check_data_root(data_cfg)
    inputs = inputs or ModelInputs.of_spec(AUDIO_ONLY_SPEC)
    return EmotionDataModule.from_config(data_cfg, inputs, corpus=corpus, **overrides)


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
        "schema": SCHEMA,  # record.py
        "version": cremad_lit.__version__,
        "git_commit": commit,
        "torch": torch.__version__,
        "pid": os.getpid(),
    }
