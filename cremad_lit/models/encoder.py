"""The encoder contract: what a per-frame image encoder (the video branch, or the encoder of the Mel image) gives the
rest of the framework. Any class with these, named by a config's `_target_`, plugs in (docs/extending.md).

    encoder = MyEncoder(in_chans=3)        # the net completes the partial config: in_chans=1 for the Mel image
    encoder(images)                        # (B, in_chans, H, W) -> (B, encoder.out_features)
    encoder.input_spec()                   # {"image_size": int, "mean": (r, g, b), "std": (r, g, b)}: how frames are
                                           # prepared (the data reads it; it is part of the clip cache's key)

Optional, each with a default:
- `static_input_spec(**config) -> dict` (a staticmethod): the input spec from the config alone. Data-only commands
  (`prepare`) need the spec before any model exists; without this, `input_spec_without_weights` builds the encoder
  with `pretrained=False` (when it takes that argument) and asks it, which is cheap for most encoders.
- `frozen` and `feature_cache` (booleans): a frozen encoder whose outputs the data may store once per clip
  (data/encoder_cache.py) instead of running it every step. The cache's key hashes the weights of `model` (the wrapped
  network) when the encoder has one, else of the encoder itself.
`ImageEncoder` (models/backbones.py) gives a subclass that sets `self.model` both `freeze` and `feature_cache`.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import torch
from hydra.utils import get_class
from torch import nn

SPEC_KEYS = ("image_size", "mean", "std")


@runtime_checkable
class Encoder(Protocol):
    out_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def input_spec(self) -> dict: ...


def weights_module(encoder) -> nn.Module:
    """The module whose weights identify a frozen encoder (its `model`, else itself)."""
    return getattr(encoder, "model", encoder)


def input_spec_without_weights(config: dict) -> dict:
    """An encoder config's input spec (its `_target_` and arguments), without downloading weights."""
    target = get_class(config["_target_"])
    arguments = {k: v for k, v in config.items() if k not in ("_target_", "_partial_")}
    if hasattr(target, "static_input_spec"):
        return target.static_input_spec(**arguments)
    if "pretrained" in inspect.signature(target).parameters:
        arguments["pretrained"] = False
    spec = target(**arguments).input_spec()
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"{config['_target_']}.input_spec() lacks {missing}: it must give {list(SPEC_KEYS)}")
    return spec
