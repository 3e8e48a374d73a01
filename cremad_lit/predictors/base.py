"""The predictor interface: what a trained model is for evaluate.py, predict, the demo page and the ensembles.

    predictor.classes                       # the ordered class list
    rows = predictor.predict(files)         # per file: prediction and probabilities (or the error that kept it out)
    tested = predictor.test(eval_cfg, out)  # a TestResult: per clip of the data evaluate.py's config names

Implementations: network.py (a train.py checkpoint or its ONNX export), classical.py (a baseline run's saved model),
face.py (the zero-shot expression model), ensemble.py (several of them). predictors/__init__.py loads any of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from cremad_lit.data.corpus import Assignment, Corpus

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


@dataclasses.dataclass
class TestResult:
    """A predictor tested on the clips a data config names: its numbers, and what they were measured on."""

    __test__ = False  # not a pytest class

    path: str  # the model, as loaded
    config: dict  # what it was trained with (a checkpoint's config, a classical model's settings)
    classes: list[str]
    results: dict  # metrics.py's results_from_predictions
    predictions: list[dict]  # per clip: clip_id, label, pred, probs
    corpus: Corpus
    assigned: Assignment  # the clips as the protocol assigned them (tested_on, speakers, the lockbox)
    same_corpus: bool  # the corpus the model was trained on (its own split reused)
    media: Callable[[str], dict]  # clip_id -> what a person looks at (the predictions table)
    partial: dict = dataclasses.field(default_factory=dict)  # clip_id -> why it was decoded only in part
    members: list[TestResult] = dataclasses.field(default_factory=list)  # an ensemble's, each alone
    ensemble: dict | None = None  # an ensemble's members, weights and their accuracies

    @property
    def data_root(self) -> str:
        return str(self.corpus.source)


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

    def test(self, cfg: DictConfig, out_dir: Path) -> TestResult:
        raise NotImplementedError


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
        given_lockbox = cfg.get("lockbox")
        if same_corpus and given_lockbox is not None and "split" in data_cfg:
            stored = data_cfg.split.get("lockbox")
            if stored is None or sorted(map(str, given_lockbox)) != sorted(map(str, stored)):
                raise ValueError(
                    f"lockbox={list(given_lockbox)}: the model was trained on this corpus with lockbox={stored}; "
                    "its own corpus keeps that one (lockbox= names another corpus's)"
                )
        if not same_corpus and "split" in data_cfg:
            # The training corpus's lockbox names its own speakers, not another corpus's people with those numbers.
            data_cfg.split.lockbox = given_lockbox
    return same_corpus
