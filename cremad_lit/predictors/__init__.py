"""Everything that turns files into probabilities: one interface (base.Predictor) for evaluate.py, predict, the demo
page and ensembles, whatever was saved.

    from cremad_lit.predictors import load_predictor
    predictor = load_predictor("logs/train/runs/<run>")   # a checkpoint, model.onnx, a baseline run, a run or
    predictor.classes                                     # multirun folder, a list of them, an ensemble.json run
    rows = predictor.predict(files)          # per file: prediction and probabilities (or the error that kept it out)
    tested = predictor.test(eval_cfg, out)   # per clip of the data evaluate.py's config names: a TestResult

- network.py: a train.py checkpoint, or its ONNX export (export.py)
- classical.py: a baseline run's saved features-and-logistic-regression model
- face.py: the zero-shot expression model (`baseline method=fer_zero_shot`): trained on nobody
- ensemble.py: several of them, the weighted mean of their probabilities
- files.py: how a media file becomes what each of them reads
"""

from __future__ import annotations

from cremad_lit.classical import is_classical, load_classical
from cremad_lit.predictors.base import Predictor, TestResult, data_settings
from cremad_lit.predictors.classical import Classical
from cremad_lit.predictors.ensemble import Ensemble, weighted_members
from cremad_lit.predictors.face import FaceZeroShot
from cremad_lit.predictors.network import Network, load_checkpoint, model_from_checkpoint

__all__ = [
    "Classical",
    "Ensemble",
    "FaceZeroShot",
    "Network",
    "Predictor",
    "TestResult",
    "data_settings",
    "load_checkpoint",
    "load_model",
    "load_predictor",
    "model_from_checkpoint",
]


def load_model(path: str, device: str = "cpu") -> Predictor:
    """One saved model: a baseline run folder, an exported model.onnx or a checkpoint."""
    from cremad_lit.export import is_exported, load_exported

    if is_classical(path):
        arrays, info = load_classical(path)
        kind = FaceZeroShot if FaceZeroShot.reads(info) else Classical
        return kind(path, arrays, info)
    if is_exported(path):
        model, train_cfg = load_exported(path)
        return Network(path, model, train_cfg)
    checkpoint = load_checkpoint(path)
    module, train_cfg = model_from_checkpoint(checkpoint)
    return Network(path, module.to(device).eval(), train_cfg, checkpoint)


def load_predictor(ckpt_path, weights=None, device: str = "cpu") -> Predictor:
    """Whatever `ckpt_path` names (a file, a list, a run, multirun or ensemble folder), loaded: one model, or an
    Ensemble of every model found with its weight (`weights` replaces them: a list, or `val`, chosen by test())."""
    found = weighted_members(ckpt_path)
    if len(found) == 1:
        return load_model(found[0][0], device)
    models = [load_model(path, device) for path, _ in found]
    return Ensemble(models, weights if weights is not None else [w for _, w in found])
