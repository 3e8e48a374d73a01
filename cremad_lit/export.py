"""A trained network as an ONNX file, and that file run by onnxruntime in place of the checkpoint.

    python -m cremad_lit export ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt        # format=onnx
    python -m cremad_lit predict ckpt_path=logs/export/runs/<time>/model.onnx inputs=[a.flv]
    python -m cremad_lit app ckpt_path=logs/export/runs/<time>/model.onnx

In the graph: the network from the tensors the data pipeline hands it (normalised frames B x T x 3 x H x W, the
Mel image B x 1 x F x W or a speech encoder's waveform B x S with its lengths, the openSMILE functionals B x D), with
its own audio normalisation, to `logits` and `probabilities`; the batch axis (and a waveform's length) is dynamic.
Outside it, in Python, from the settings written beside it (`model.json`): decoding, face crops, the Mel transform,
speaker normalisation, openSMILE's functionals, and any classical ensemble member.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cremad_lit.io import write_atomic, write_json
from cremad_lit.pipeline import AUDIO_ONLY_SPEC

# The graph's inputs, in this order where the network reads them.
INPUTS = ("frames", "mel", "waveform", "waveform_lengths", "functionals")
SETTINGS_FILE = "model.json"
OPSET = 17


def is_exported(path: str | Path) -> bool:
    return Path(str(path)).suffix == ".onnx"


def graph_inputs(net: nn.Module) -> list[str]:
    """The inputs the network reads, by name (a subset of INPUTS, in that order)."""
    names = []
    if "video" in net.modalities:
        names.append("frames")
    if "audio" in net.modalities:
        names += ["waveform", "waveform_lengths"] if net.audio_input() == "waveform" else ["mel"]
    if getattr(net, "functionals", None) is not None:
        names.append("functionals")
    return names


def example_batch(net: nn.Module, train_cfg: DictConfig, batch: int = 2) -> dict[str, torch.Tensor]:
    """Random tensors shaped as the data pipeline shapes them for this network."""
    prep = train_cfg.data.preprocessing
    spec = net.frame_input_spec() or AUDIO_ONLY_SPEC
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "frames": (batch, prep.frames, 3, spec["image_size"], spec["image_size"]),
        "mel": (batch, 1, prep.n_mels, prep.mel_width),
        "waveform": (batch, prep.sample_rate),
    }
    if getattr(net, "functionals", None) is not None:
        shapes["functionals"] = (batch, net.functionals.layers[0].num_features)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    tensors["waveform_lengths"] = torch.full((batch,), prep.sample_rate, dtype=torch.long)
    return {name: tensors[name] for name in graph_inputs(net)}


class _Positional(nn.Module):
    """The network with positional inputs (ONNX has no dicts) and both outputs."""

    def __init__(self, net: nn.Module, names: list[str]):
        super().__init__()
        self.net, self.names = net, names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(dict(zip(self.names, tensors, strict=True))).float()
        return logits, logits.softmax(dim=1)


def export_onnx(module, train_cfg: DictConfig, out_dir: Path, source: str = "") -> dict:
    """Write `model.onnx` and `model.json` (classes, inputs, the training config) into out_dir, then run the file
    with onnxruntime on an example batch: the largest difference from torch's probabilities is recorded."""
    net = module.net.eval()
    names = graph_inputs(net)
    example = example_batch(net, train_cfg)
    dynamic = {name: {0: "batch"} for name in names} | {"logits": {0: "batch"}, "probabilities": {0: "batch"}}
    if "waveform" in names:
        dynamic["waveform"] = {0: "batch", 1: "samples"}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    with torch.no_grad():
        expected = net(example).float().softmax(dim=1).numpy()

    def write(buffer) -> None:  # through io.write_atomic: a file named model.onnx is always whole
        with torch.no_grad(), warnings.catch_warnings():
            # The LSTM warning about batch sizes concerns initial states given as constants; ours start at zero, and
            # tests/test_export.py runs the file at other batch sizes.
            warnings.filterwarnings(
                "ignore", message="Exporting a model to ONNX with a batch_size other than 1"
            )
            # The tracer's notes on torch's own RNN shape checks: those shapes (feature sizes) are fixed by the network.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                # eval() on the wrapper too: the exporter restores the mode of what it was given, children included
                _Positional(net, names).eval(),
                tuple(example[n] for n in names),
                buffer,
                input_names=names,
                output_names=["logits", "probabilities"],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript, and the LSTMs export as ONNX LSTM ops
            )

    write_atomic(path, write)
    got = OnnxNetwork(path, info={"inputs": names}).run(example)[1]
    settings = {
        "format": "onnx",
        "opset": OPSET,
        "source": source,
        "classes": list(module.classes),
        "inputs": names,
        "modalities": list(net.modalities),
        "audio_input": net.audio_input(),
        "frame_spec": net.frame_input_spec(),
        "max_abs_difference_from_torch": float(np.abs(got - expected).max()),
        "config": OmegaConf.to_container(train_cfg),  # a checkpoint stores it resolved
    }
    write_json(out_dir / SETTINGS_FILE, settings)
    return settings


class OnnxNetwork:
    """An exported network, run by onnxruntime, standing in for the trained module wherever predict uses one:
    `.classes`, `.net.modalities`, `.net.audio_input()`, `.net.frame_input_spec()`, and a call on a batch dict
    returning logits."""

    def __init__(self, path: str | Path, info: dict | None = None):
        import onnxruntime

        self.path = Path(path)
        self.info = info if info is not None else json.loads((self.path.parent / SETTINGS_FILE).read_text())
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        self.session = onnxruntime.InferenceSession(
            str(self.path), options, providers=onnxruntime.get_available_providers()
        )
        self.classes = tuple(self.info.get("classes", ()))
        self.net = self
        self.modalities = tuple(self.info.get("modalities", ()))
        self.functionals = True if "functionals" in self.info["inputs"] else None

    def audio_input(self) -> str | None:
        return self.info.get("audio_input")

    def frame_input_spec(self) -> dict | None:
        return self.info.get("frame_spec")

    def run(self, batch: dict) -> list[np.ndarray]:
        feeds = {name: _numpy(batch[name]) for name in self.info["inputs"]}
        return self.session.run(["logits", "probabilities"], feeds)

    def __call__(self, batch: dict) -> torch.Tensor:
        return torch.from_numpy(self.run(batch)[0])

    def to(self, device) -> OnnxNetwork:  # onnxruntime chose its provider when the session was made
        return self

    def eval(self) -> OnnxNetwork:
        return self


def _numpy(tensor) -> np.ndarray:
    array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(np.float32)


def load_exported(path: str | Path) -> tuple[OnnxNetwork, DictConfig]:
    """An exported model and the training config stored beside it (what predict needs to preprocess files)."""
    path = Path(str(path))
    settings = path.parent / SETTINGS_FILE
    if not path.is_file() or not settings.is_file():
        raise FileNotFoundError(
            f"{path} needs {SETTINGS_FILE} beside it (python -m cremad_lit export writes both into one folder)"
        )
    network = OnnxNetwork(path)
    return network, OmegaConf.create(network.info["config"])
