"""A baseline run's saved classical model as a predictor (functionals -> speaker norm -> logistic regression).

    from cremad_lit.predictors import load_predictor
    classical = load_predictor("logs/baseline/runs/<run>")      # classical_model.npz + classical_model.json

It reads no DataModule: the clips come from the Corpus its settings name, the features from the caches beside the
clip cache (classical.py), decoded where missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cremad_lit.classical import ClipSource, clip_features, design_matrix, load_classical
from cremad_lit.classical import probabilities as classical_probabilities
from cremad_lit.data.corpus import Corpus, check_data_root
from cremad_lit.data.dataset import media_of
from cremad_lit.data.features import Preprocessing
from cremad_lit.data.functionals import audio_functionals, normalise_by_speaker
from cremad_lit.data.media import MediaError, media_paths
from cremad_lit.data.splits import save_split
from cremad_lit.metrics import results_from_predictions
from cremad_lit.predictors.base import Predictor, TestResult, data_settings
from cremad_lit.predictors.files import speaker_of, warn_lone_speakers

log = logging.getLogger(__name__)


class Classical(Predictor):
    """A baseline run's saved classical model: its arrays, and `info` (classical_model.json) on what it reads."""

    def __init__(self, run_dir: str, arrays: dict | None = None, info: dict | None = None):
        self.path = str(run_dir)
        self.arrays, self.info = (arrays, info) if info is not None else load_classical(run_dir)
        self.classes = tuple(self.info["classes"])

    def trained_in(self) -> str | None:
        """The run whose split it was fitted on (its split.csv is reused on the same corpus)."""
        return self.info["run_dir"]

    def file_features(self, path: Path) -> np.ndarray:
        """One file's features, as the clips it was fitted on had them (MediaError: unreadable)."""
        prep = self.info["data"]["preprocessing"]
        if self.info["functionals"] is None:  # the majority class reads nothing
            return np.zeros(1, dtype=np.float32)
        video_path, audio_path = media_paths(path)
        return audio_functionals(
            video_path, audio_path, prep["audio_source"], prep["sample_rate"], self.info["functionals"]
        )

    def predict(self, files: list[Path], device: str = "cpu", speaker: str = "folder") -> list[dict]:
        """Each file's features, standardised per speaker group as it was trained, then its probabilities."""
        classes = list(self.classes)
        results, features = [], {}
        for path in files:
            results.append({"file": str(path)})
            try:
                features[len(results) - 1] = self.file_features(path)
            except MediaError as error:
                log.warning("skipped %s: %s", error.path, error.reason)
                results[-1]["error"] = error.reason
        if self.info["speaker_norm"] != "none" and features:
            speakers = {i: speaker_of(Path(results[i]["file"]), speaker) for i in features}
            warn_lone_speakers(list(speakers.values()), speaker)
            features = normalise_by_speaker(features, speakers, self.info["speaker_norm"])
        if features:
            rows = sorted(features)
            matrix = np.stack([features[i] for i in rows])
            for i, probs in zip(
                rows, classical_probabilities(self.arrays, matrix, len(classes)), strict=True
            ):
                results[i]["prediction"] = classes[int(probs.argmax())]
                results[i]["probabilities"] = dict(zip(classes, map(float, probs), strict=True))
        return results

    def test(self, cfg: DictConfig, out_dir: Path) -> TestResult:
        """The features of the clips cfg names (standardised per speaker over each speaker's clips, as it was
        trained), its probabilities."""
        info = self.info
        data_cfg = OmegaConf.create(info["data"])
        same_corpus = data_settings(cfg, data_cfg, self.trained_in(), out_dir)
        check_data_root(data_cfg)
        corpus = Corpus.from_config(data_cfg)
        assigned = corpus.assign(corpus.catalog(), cfg.subset)
        save_split(assigned.table, Path(out_dir) / "split.csv")
        prep = Preprocessing(**data_cfg.preprocessing)
        source = ClipSource.of(corpus, assigned, prep, data_cfg.get("decoder", "decord"))
        features, skipped = clip_features(
            source,
            info["functionals"],
            info["cache_dir"],
            info["speaker_norm"],
            int(data_cfg.prepare_workers),
        )
        for clip in skipped:
            log.warning("skipped clip %s: %s", clip["clip_id"], clip["reason"])
        classes = list(self.classes)
        clips = assigned.clips[assigned.clips["emotion"].isin(classes)]
        everything = cfg.subset in ("all", "lockbox")  # every clip assigned is tested
        x, y, clip_ids = design_matrix(clips, features, classes, "all" if everything else cfg.subset)
        probabilities = classical_probabilities(self.arrays, x, len(classes))
        predictions = [
            {"clip_id": c, "label": int(label), "pred": int(p.argmax()), "probs": p.tolist()}
            for c, label, p in zip(clip_ids, y, probabilities, strict=True)
        ]
        return TestResult(
            path=self.path,
            config={"classical": {k: v for k, v in info.items() if k != "data"}, "data": info["data"]},
            classes=classes,
            results=results_from_predictions(predictions, classes),
            predictions=predictions,
            corpus=corpus,
            assigned=assigned,
            same_corpus=same_corpus,
            media=media_of(assigned.clips, prep, corpus.modalities, source.decoder),
        )
