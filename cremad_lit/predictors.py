"""What a trained model is, wherever it was saved: one interface for evaluate.py, predict, the demo page and train.py's
ensembles.

    from cremad_lit.predictors import load_predictor
    predictor = load_predictor("logs/train/runs/<run>")   # a checkpoint, model.onnx, a baseline run, a run or
    predictor.classes                                     # multirun folder, a list of them, an ensemble.json run
    rows = predictor.predict(files)          # per file: prediction and probabilities (or the error that kept it out)
    tested = predictor.test(eval_cfg, out)   # per clip of the data evaluate.py's config names: results, predictions

Two kinds of model stand behind it: a `Network` (a train.py checkpoint, or its ONNX export) and a `Classical` model (a
baseline run's saved features-and-logistic-regression arrays). Several of them are an `Ensemble` (ensemble.py): the
weighted mean of their probabilities.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from cremad_lit.classical import (
    FACE_FEATURES,
    ClipSource,
    clip_features,
    design_matrix,
    is_classical,
    load_classical,
)
from cremad_lit.classical import probabilities as classical_probabilities
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.errors import BadCheckpoint
from cremad_lit.metrics import results_from_predictions
from cremad_lit.module import EmotionModule
from cremad_lit.objectives import CrossEntropy
from cremad_lit.pipeline import build_datamodule, build_net, model_inputs, resolve_precision

log = logging.getLogger(__name__)
# What `data=<corpus>` replaces in a model's stored data settings: which clips, and how to load them.
CORPUS_KEYS = ("dataset", "root", "manifest", "label_map", "options")
LOADER_KEYS = (
    "eval_batch_size",
    "num_workers",
    "cache",
    "cache_dir",
    "decoder",
    "pin_memory",
    "persistent_workers",
)


class Predictor:
    """A trained model: its ordered `classes`, `predict(files)` and `test(eval_cfg, out_dir)`."""

    path: str
    classes: tuple[str, ...]

    @property
    def name(self) -> str:
        path = Path(self.path)
        if path.is_dir():
            return path.name
        return "/".join(part for part in (path.parent.parent.name, path.name) if part)  # <run>/last.ckpt

    @property
    def members(self) -> list[tuple[Predictor, float]]:
        """(model, weight) pairs: one model is an ensemble of itself."""
        return [(self, 1.0)]

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        raise NotImplementedError

    def predict_each(self, files: list[Path], device: str = "cpu", speaker: str = "folder"):
        """Per file, the prediction and each member's (the demo page shows both)."""
        rows = self.predict(files, device, speaker)
        return rows, [rows]

    def test(self, cfg: DictConfig, out_dir: Path) -> dict:
        raise NotImplementedError


class Network(Predictor):
    """A train.py checkpoint (an EmotionModule) or its ONNX export (export.OnnxNetwork), with its training config."""

    def __init__(self, path: str, model, train_cfg: DictConfig, checkpoint: dict | None = None):
        self.path, self.model, self.train_cfg, self.checkpoint = str(path), model, train_cfg, checkpoint
        self.classes = tuple(model.classes)

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        from cremad_lit.prediction import predict_files

        return predict_files(self.model, self.train_cfg, files, device, speaker)

    def test(self, cfg: DictConfig, out_dir: Path) -> dict:
        """The checkpoint on the clips cfg names: its predictions, results, datamodule and what it was tested on."""
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
        return {
            "path": self.path,
            "config": self.checkpoint["cremad_lit"]["config"],
            "classes": list(module.classes),
            "results": module.test_results,
            "datamodule": datamodule,
            "same_corpus": same_corpus,
            "data_root": str(data_cfg.get("manifest") or data_cfg.root),
            "predictions": module.test_predictions,
        }


class Classical(Predictor):
    """A baseline run's saved classical model (functionals -> speaker norm -> logistic regression)."""

    def __init__(self, run_dir: str):
        self.path = str(run_dir)
        self.arrays, self.info = load_classical(run_dir)
        self.classes = tuple(self.info["classes"])

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        from cremad_lit.prediction import predict_files_classical

        return predict_files_classical(self.arrays, self.info, files, speaker)

    def test(self, cfg: DictConfig, out_dir: Path) -> dict:
        """As Network.test: the features of the clips cfg names (standardised per speaker over each speaker's clips,
        as it was trained), its probabilities."""
        info = self.info
        data_cfg = OmegaConf.create(info["data"])
        zero_shot = info["functionals"] == FACE_FEATURES  # trained on nobody: no split of its own to keep
        same_corpus = data_settings(cfg, data_cfg, None if zero_shot else info["run_dir"], out_dir)
        datamodule = build_datamodule(
            data_cfg, None, cache="off", speaker_norm="none", functionals="none", eval_split=cfg.subset
        )
        datamodule.setup("test")
        classes = list(self.classes)
        features, skipped = clip_features(
            ClipSource.of(datamodule.corpus, datamodule.assignment(), datamodule.prep, datamodule.decoder),
            info["functionals"],
            info["cache_dir"],
            info["speaker_norm"],
            int(data_cfg.prepare_workers),
        )
        for clip in skipped:
            log.warning("skipped clip %s: %s", clip["clip_id"], clip["reason"])
        clips = datamodule.clips[datamodule.clips["emotion"].isin(classes)]
        everything = cfg.subset in ("all", "lockbox")  # every clip set up is tested
        x, y, clip_ids = design_matrix(clips, features, classes, "all" if everything else cfg.subset)
        probabilities = classical_probabilities(self.arrays, x, len(classes))
        predictions = [
            {"clip_id": c, "label": int(label), "pred": int(p.argmax()), "probs": p.tolist()}
            for c, label, p in zip(clip_ids, y, probabilities, strict=True)
        ]
        return {
            "path": self.path,
            "config": {"classical": {k: v for k, v in info.items() if k != "data"}, "data": info["data"]},
            "classes": classes,
            "results": results_from_predictions(predictions, classes),
            "datamodule": datamodule,
            "same_corpus": same_corpus,
            "data_root": str(data_cfg.get("manifest") or data_cfg.root),
            "predictions": predictions,
        }


def load_model(path: str, device: str = "cpu") -> Predictor:
    """One saved model: a baseline run folder, an exported model.onnx or a checkpoint."""
    from cremad_lit.export import is_exported, load_exported

    if is_classical(path):
        return Classical(path)
    if is_exported(path):
        model, train_cfg = load_exported(path)
        return Network(path, model, train_cfg)
    checkpoint = load_checkpoint(path)
    module, train_cfg = model_from_checkpoint(checkpoint)
    return Network(path, module.to(device).eval(), train_cfg, checkpoint)


def load_predictor(ckpt_path, weights=None, device: str = "cpu") -> Predictor:
    """Whatever `ckpt_path` names (a file, a list, a run, multirun or ensemble folder), loaded: one model, or an
    Ensemble of every model found with its weight (`weights` replaces them: a list, or `val`, chosen by test())."""
    from cremad_lit.ensemble import Ensemble, weighted_members

    found = weighted_members(ckpt_path)
    if len(found) == 1:
        return load_model(found[0][0], device)
    models = [load_model(path, device) for path, _ in found]
    return Ensemble(models, weights if weights is not None else [w for _, w in found])


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


def _same_path(a, b) -> bool:
    return (
        a is not None
        and b is not None
        and Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
    )


def data_settings(
    cfg: DictConfig, data_cfg: DictConfig, trained_in: str | Path | None, out_dir: Path
) -> bool:
    """Point a member's stored data settings at the clips `cfg` names (in place); True when that is the corpus it was
    trained on, whose exact split (the run's split.csv in `trained_in`; None: a model trained on nobody) is reused."""
    given = OmegaConf.to_container(cfg.data, resolve=True)
    if given.get("dataset"):  # data=<corpus> on the command line: read those clips instead
        overrides = {k: given.get(k) for k in CORPUS_KEYS + LOADER_KEYS}
    else:
        overrides = {k: v for k, v in given.items() if v is not None}
    corpus = {k: overrides.get(k, data_cfg.get(k)) for k in CORPUS_KEYS}
    same_corpus = corpus.get("dataset", "cremad") == data_cfg.get("dataset", "cremad") and _same_path(
        corpus.get("manifest") or corpus.get("root"), data_cfg.get("manifest") or data_cfg.get("root")
    )
    with open_dict(data_cfg):
        for key, value in overrides.items():
            data_cfg[key] = value  # replaced, not merged: another corpus's options must not mix with these
        data_cfg.output_dir = str(out_dir)
        data_cfg.generate = None
        saved_split = Path(trained_in) / "split.csv" if trained_in is not None else None
        if same_corpus and saved_split and saved_split.is_file() and not data_cfg.split.get("file"):
            data_cfg.split.file = str(saved_split)  # the exact actors the run was tested on
        if not same_corpus and "split" in data_cfg:
            # The training corpus's lockbox names its own speakers, not another corpus's people with those numbers.
            data_cfg.split.lockbox = None
    return same_corpus
