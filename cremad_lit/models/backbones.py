"""Image backbones from timm behind one small interface: `Backbone(x) -> (B, out_features)`, plus its input spec.

    from cremad_lit.models.backbones import Backbone
    video = Backbone("efficientnet_b0")                        # ImageNet weights from the hub
    audio = Backbone("resnet18", in_chans=1)                   # 1-channel Mel image; timm adapts the stem weights
    offline = Backbone("efficientnet_b0", pretrained_file="/weights/efficientnet_b0.safetensors")
    video.input_spec()                                         # {'image_size': 224, 'mean': (...), 'std': (...)}

The frame preprocessing (size, mean, std) is derived from the model via timm's `resolve_model_data_config`, never
repeated in configs. `input_size` overrides it (and sets `img_size` for ViTs) for small or fast runs.
"""

from __future__ import annotations

import os

import timm
import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        pretrained_file: str | None = None,
        in_chans: int = 3,
        input_size: int | None = None,
        **timm_kwargs,
    ):
        super().__init__()
        if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
            raise ValueError(f"unknown timm backbone {name!r}; see timm.list_models() for the names")
        kwargs = dict(timm_kwargs)
        if _is_vit(name):
            if input_size is not None:
                kwargs.setdefault("img_size", input_size)
            # Interpolate position embeddings at run time, so a ViT also takes the 64x128 Mel image.
            kwargs.setdefault("dynamic_img_size", True)
        if pretrained_file:
            if not os.path.isfile(pretrained_file):
                raise FileNotFoundError(
                    f"pretrained_file {pretrained_file} does not exist (a timm .safetensors/.pth for {name})"
                )
            # timm's own path for local weights: same key remapping and in_chans adaptation as a hub download.
            kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
            pretrained = True
        self.name = name
        self.model = timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs
        )
        # Some models (MobileNetV3, ...) keep a hidden head layer after pooling: that is what forward() returns.
        self.out_features: int = getattr(self.model, "head_hidden_size", None) or self.model.num_features
        config = timm.data.resolve_model_data_config(self.model)
        self._spec = {
            "image_size": int(input_size or config["input_size"][-1]),
            "mean": tuple(float(v) for v in config["mean"]),
            "std": tuple(float(v) for v in config["std"]),
        }

    def input_spec(self) -> dict:
        return dict(self._spec)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def _is_vit(name: str) -> bool:
    return name.startswith(("vit_", "deit", "test_vit", "eva", "beit"))


def backbone_input_spec(name: str, input_size: int | None = None, **timm_kwargs) -> dict:
    """The input spec of a backbone without allocating or downloading weights (for data-only commands)."""
    with torch.device("meta"):
        return Backbone(name, pretrained=False, input_size=input_size, **timm_kwargs).input_spec()
