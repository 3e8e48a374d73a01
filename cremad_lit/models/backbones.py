"""Image backbones from timm behind one small interface: `Backbone(x) -> (B, out_features)`, plus its input spec.

    from cremad_lit.models.backbones import Backbone
    video = Backbone("efficientnet_b0")                        # ImageNet weights from the hub
    audio = Backbone("resnet18", in_chans=1)                   # 1-channel Mel image; timm adapts the stem weights
    offline = Backbone("efficientnet_b0", pretrained_file="/weights/efficientnet_b0.safetensors")
    folder = Backbone("vit_base_patch16_224", pretrained_dir="/weights/some-timm-face-vit")  # a timm hub snapshot
    frozen = Backbone("efficientnet_b0", freeze=True)          # not trained; per-frame features cached (encoder_cache)
    video.input_spec()                                         # {'image_size': 224, 'mean': (...), 'std': (...)}

The frame preprocessing (size, mean, std) is derived from the model via timm's `resolve_model_data_config`, never
repeated in configs. `input_size` overrides it (and sets `img_size` for ViTs) for small or fast runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import timm
import torch
from torch import nn

from cremad_lit.errors import WeightsUnavailable


class ImageEncoder(nn.Module):
    """What every per-frame (or Mel image) encoder shares: `freeze`, which stops its weights from training and keeps
    it in eval mode (BatchNorm statistics and dropout fixed, so a frame gives the same features in training and
    testing), and `feature_cache`, which lets a frozen video encoder run once per clip (cremad_lit/encoder_cache.py)."""

    def __init__(self, freeze: bool = False, feature_cache: bool = True):
        super().__init__()
        self.frozen, self.feature_cache = bool(freeze), bool(feature_cache)

    def freeze_weights(self) -> None:
        if self.frozen:
            for parameter in self.model.parameters():
                parameter.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self


class Backbone(ImageEncoder):
    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        pretrained_file: str | None = None,
        in_chans: int = 3,
        input_size: int | None = None,
        pretrained_dir: str | None = None,
        architecture: str | None = None,
        architecture_args: dict | None = None,
        recorded_spec: dict | None = None,
        freeze: bool = False,
        feature_cache: bool = True,
        **timm_kwargs,
    ):
        super().__init__(freeze, feature_cache)
        self._architecture, stored = {}, {}
        if (
            pretrained_dir and pretrained
        ):  # a timm hub snapshot (config.json + weights): timm's own local-dir source
            name = f"local-dir:{timm_folder(pretrained_dir)}"
        elif (
            pretrained_dir and architecture
        ):  # a checkpoint: the architecture the folder named, weights from it
            stored = {
                k: v for k, v in dict(architecture_args or {}).items() if k not in ("num_classes", "in_chans")
            }
            name = architecture
        if (
            not name.startswith("local-dir:")
            and name not in timm.list_models()
            and name not in timm.list_models(pretrained=True)
        ):
            raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models() for the names")
        kwargs = dict(timm_kwargs)
        local = name.startswith("local-dir:")
        family = json.loads((Path(name[10:]) / "config.json").read_text())["architecture"] if local else name
        if _is_vit(family):
            if input_size is not None:
                kwargs.setdefault("img_size", input_size)
            # Interpolate position embeddings at run time, so a ViT also takes the 64x128 Mel image.
            kwargs.setdefault("dynamic_img_size", True)
        for key, value in stored.items():  # as timm's local-dir loading applies the folder's model_args
            kwargs.setdefault(key, value)
        if pretrained_file:
            if not os.path.isfile(pretrained_file):
                raise FileNotFoundError(
                    f"pretrained_file {pretrained_file} does not exist (a timm .safetensors/.pth for {name})"
                )
            # timm's own path for local weights: same key remapping and in_chans adaptation as a hub download.
            kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
            pretrained = True
        self.name = name
        try:
            self.model = timm.create_model(
                name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs
            )
        except (
            OSError
        ) as error:  # a hub download that cannot happen (offline, no cache): one line, the ways out
            if not pretrained or pretrained_file or local:
                raise
            first_line = (str(error).strip().splitlines() or [""])[0][:200]
            raise WeightsUnavailable(
                f"cannot download the pretrained weights of {name} from the Hugging Face hub ({type(error).__name__}: "
                f"{first_line}). Offline, give the branch (model.video_backbone or model.audio_backbone) local "
                "weights: pretrained_file=<a timm .safetensors/.pth> or pretrained_dir=<a timm hub snapshot>; or "
                "pretrained=false to start from random weights"
            ) from error
        self.freeze_weights()
        if local:
            config = json.loads((Path(name[10:]) / "config.json").read_text())
            self._architecture = {
                "architecture": config["architecture"],
                "architecture_args": dict(config.get("model_args") or {}),
            }
        # Some models (MobileNetV3, ...) keep a hidden head layer after pooling: that is what forward() returns.
        self.out_features: int = getattr(self.model, "head_hidden_size", None) or self.model.num_features
        config = timm.data.resolve_model_data_config(self.model)
        self._spec = {
            "image_size": int(input_size or config["input_size"][-1]),
            "mean": tuple(float(v) for v in config["mean"]),
            "std": tuple(float(v) for v in config["std"]),
        }
        if (
            recorded_spec
        ):  # a checkpoint of a pretrained_dir model: the folder's preprocessing, not the default's
            self._spec = {
                "image_size": int(recorded_spec["image_size"]),
                "mean": tuple(recorded_spec["mean"]),
                "std": tuple(recorded_spec["std"]),
            }
        if self._architecture:
            self._architecture["recorded_spec"] = {
                **self._spec,
                "mean": list(self._spec["mean"]),
                "std": list(self._spec["std"]),
            }

    def input_spec(self) -> dict:
        return dict(self._spec)

    def architecture(self) -> dict:
        """With pretrained_dir: the timm architecture the folder holds, so a checkpoint rebuilds it without the folder."""
        return dict(self._architecture)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def timm_folder(pretrained_dir: str) -> Path:
    """A folder timm can load (config.json naming an `architecture`, and its weights), or one clear error."""
    folder = Path(str(pretrained_dir)).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"pretrained_dir={folder} holds no config.json: give a timm hub snapshot (`hf download timm/<model> "
            f"--local-dir {folder}`), or a single weights file with pretrained_file="
        )
    if "architecture" not in json.loads(config.read_text()):
        raise ValueError(
            f"{folder} is not in timm's format (its config.json names no `architecture`): a transformers image model "
            "loads with model/backbone@model.video_backbone=hf_image model.video_backbone.pretrained_dir=..."
        )
    return folder


def _is_vit(name: str) -> bool:
    return name.startswith(("vit_", "deit", "test_vit", "eva", "beit"))


def backbone_input_spec(name: str, input_size: int | None = None, **timm_kwargs) -> dict:
    """The input spec of a backbone without allocating or downloading weights (for data-only commands)."""
    with torch.device("meta"):
        return Backbone(name, pretrained=False, input_size=input_size, **timm_kwargs).input_spec()
