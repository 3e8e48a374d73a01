"""Image encoders in Hugging Face transformers' format (a face-pretrained ViT from the hub, say) as the video branch's
per-frame backbone, behind the same small interface as the timm `Backbone`: `encoder(images) -> (B, out_features)`
and `input_spec()` (size, mean, std), both read from the model's own image processor config.

    python train.py model/backbone@model.video_backbone=hf_image model.video_backbone.name=<hub id>
    python train.py model/backbone@model.video_backbone=hf_image model.video_backbone.pretrained_dir=/weights/face-vit

A checkpoint stores the model and processor configs, so evaluate.py and predict rebuild it without the folder or hub.
"""

from __future__ import annotations

import json

import torch

from cremad_lit.models.backbones import ImageEncoder
from cremad_lit.models.speech_encoders import missing_weights_error, plain, weights_source


def image_side(size) -> int:
    """The processor's square input side, whichever form its `size` takes (an int, a dict, a SizeDict)."""
    if isinstance(size, int):
        return size
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        if value:
            return int(value)
    raise ValueError(f"cannot read an image size from the image processor's size {size!r}: set input_size=")


class HFImageEncoder(ImageEncoder):
    def __init__(
        self,
        name: str | None = None,
        pretrained_dir: str | None = None,
        pretrained: bool = True,
        input_size: int | None = None,
        encoder_config: dict | None = None,
        recorded_spec: dict | None = None,
        in_chans: int = 3,
        pretrained_file: str | None = None,  # timm's field, set to None for checkpoints: unused here
        freeze: bool = False,
        feature_cache: bool = True,
    ):
        super().__init__(freeze, feature_cache)
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        if pretrained:
            source = weights_source(name, pretrained_dir)
            try:
                self.model = AutoModel.from_pretrained(source)
                processor = AutoImageProcessor.from_pretrained(source)
            except OSError as error:
                if pretrained_dir:
                    raise
                raise missing_weights_error(source, error, "video_backbone") from error
            side = image_side(processor.size)
            spec = {
                "image_size": int(side),
                "mean": list(processor.image_mean),
                "std": list(processor.image_std),
            }
        else:  # a checkpoint: the architecture from its stored config, the weights from its state_dict
            if not encoder_config or not recorded_spec:
                raise ValueError("pretrained=false needs the encoder_config and recorded_spec a run stored")
            encoder_config = plain(encoder_config)
            self.model = AutoModel.from_config(AutoConfig.for_model(**encoder_config))
            spec = plain(recorded_spec)
        self.freeze_weights()
        self.name = name or str(pretrained_dir)
        config = self.model.config
        self.out_features = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])
        self._spec = {
            "image_size": int(input_size or spec["image_size"]),
            "mean": tuple(spec["mean"]),
            "std": tuple(spec["std"]),
        }
        self._architecture = {
            "encoder_config": json.loads(config.to_json_string(use_diff=False)),
            "recorded_spec": {**self._spec, "mean": list(self._spec["mean"]), "std": list(self._spec["std"])},
        }

    def input_spec(self) -> dict:
        return dict(self._spec)

    def architecture(self) -> dict:
        return dict(self._architecture)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = (
            self.model(pixel_values=images, interpolate_pos_encoding=True)
            if self._is_vit()
            else self.model(pixel_values=images)
        )
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return output.last_hidden_state[:, 0]  # the class token

    def _is_vit(self) -> bool:
        return self.model.config.model_type in ("vit", "deit", "dinov2", "beit")
