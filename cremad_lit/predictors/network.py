"""A trained network as a predictor: a train.py checkpoint (an EmotionModule) or its ONNX export.

from cremad_lit.predictors import load_predictor
network = load_predictor("logs/train/runs/<run>/checkpoints/last.ckpt")
module, config = model_from_checkpoint(load_checkpoint(path))      # the module, rebuilt offline
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cremad_lit.data.dataset import media_of
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.errors import BadCheckpoint
from cremad_lit.module import EmotionModule
from cremad_lit.objectives import CrossEntropy
from cremad_lit.pipeline import build_datamodule, build_net, model_inputs, resolve_precision
from cremad_lit.predictors.base import Predictor, TestResult, data_settings

log = logging.getLogger(__name__)


class Network(Predictor):
    """A train.py checkpoint (an EmotionModule) or its ONNX export (export.OnnxNetwork), with its training config."""

    def __init__(self, path: str, model, train_cfg: DictConfig, checkpoint: dict | None = None):
        self.path, self.model, self.train_cfg, self.checkpoint = str(path), model, train_cfg, checkpoint
        self.classes = tuple(model.classes)

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        from cremad_lit.predictors.files import predict_files

        return predict_files(self.model, self.train_cfg, files, device, speaker)

    def test(self, cfg: DictConfig, out_dir: Path) -> TestResult:
        """The checkpoint on the clips cfg names: its predictions and results, and what they were measured on."""
        if self.checkpoint is None:
            raise ValueError(f"{self.path}: an exported model predicts files; evaluate.py tests a checkpoint")
        module, train_cfg = (
            self.model,
            copy.deepcopy(self.train_cfg),
        )  # each test points its own copy at the data
        data_cfg = train_cfg.data
        same_corpus = data_settings(cfg, data_cfg, train_cfg.paths.output_dir, out_dir)
        datamodule = build_datamodule(
            data_cfg, model_inputs(module.net, train_cfg.model), eval_split=cfg.subset
        )
        trainer = L.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
            logger=False,
            enable_checkpointing=False,
            default_root_dir=str(out_dir),
        )
        trainer.test(module, datamodule=datamodule)
        clips, cache = datamodule.clips, datamodule.cache
        return TestResult(
            path=self.path,
            config=self.checkpoint["cremad_lit"]["config"],
            classes=list(module.classes),
            results=module.test_results,
            predictions=module.test_predictions,
            corpus=datamodule.corpus,
            assigned=datamodule.assignment(),
            same_corpus=same_corpus,
            media=media_of(clips, datamodule.prep, datamodule.modalities, datamodule.decoder, cache),
            # clips decoded only in part (cut short?) are judged, and flagged
            partial=cache.partial(clips["clip_id"]) if cache is not None else {},
        )


def load_checkpoint(path: str | Path) -> dict:
    """Read a cremad-lit checkpoint safely (weights_only: tensors and plain data, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(
            f"checkpoint {path} does not exist (train.py writes them to <run dir>/checkpoints/)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, damaged, not a torch file, or pickled code weights_only refuses
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise BadCheckpoint(
            f"{path} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint: truncated, damaged or "
            f"another kind of file ({type(error).__name__}: {first_line})"
        ) from error
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or not isinstance(checkpoint.get("cremad_lit"), dict)
        or not checkpoint["cremad_lit"].get("config")
    ):
        raise BadCheckpoint(
            f"{path} is a PyTorch file but not a cremad-lit checkpoint (no stored training config); was it "
            "written by train.py?"
        )
    return checkpoint


def model_from_checkpoint(checkpoint: dict) -> tuple[EmotionModule, DictConfig]:
    """Rebuild the trained module (no weight download: the checkpoint holds every weight)."""
    config = OmegaConf.create(checkpoint["cremad_lit"]["config"])
    model_cfg = config.model
    with open_dict(model_cfg):
        for branch in ("video_backbone", "audio_backbone"):
            for key, value in (
                ("pretrained", False),
                ("pretrained_file", None),
            ):  # the checkpoint holds the weights
                if model_cfg.get(branch) and key in model_cfg[branch]:  # a plugin's backbone may have neither
                    model_cfg[branch][key] = value
    hparams = checkpoint.get("hyper_parameters", {})
    classes = checkpoint["cremad_lit"].get("emotions") or EMOTIONS  # checkpoints from before 0.4 had the six
    module = EmotionModule(
        build_net(model_cfg, classes),
        optimizer=None,
        classes=classes,
        criterion=CrossEntropy(hparams.get("class_weights"), hparams.get("label_smoothing", 0.0)),
    )
    try:
        # The network alone: the objectives' heads (objectives.<name>., before 0.9 speaker_adversary. and balance.)
        # only served training, and the criterion is rebuilt from the hyperparameters.
        weights = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        module.net.load_state_dict(weights)
        if module.probe is not None:  # the training means its masked-modality evaluations use
            module.probe.load(checkpoint["cremad_lit"].get("modality_means"))
    except RuntimeError as error:
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise BadCheckpoint(
            f"the checkpoint's weights do not match the model its config describes: {first_line}"
        ) from error
    module.eval()
    return module, config
