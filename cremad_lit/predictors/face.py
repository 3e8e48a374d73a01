"""The zero-shot expression model as a predictor: fer's FER-2013 network on each clip's face crops, its seven classes
mapped onto the corpus's (`python -m cremad_lit baseline method=fer_zero_shot`). Trained on nobody, so no speaker is
held out from it: every clip it is given is a test clip, and a sound file, which has no face, is one clear error.

    from cremad_lit.predictors import load_predictor
    face = load_predictor("logs/baseline/runs/<fer_zero_shot run>")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cremad_lit.classical import FACE_FEATURES
from cremad_lit.data.features import Preprocessing
from cremad_lit.data.media import MissingModality, media_paths
from cremad_lit.face_expressions import file_expressions
from cremad_lit.predictors.classical import Classical


class FaceZeroShot(Classical):
    """A saved fer_zero_shot run: its class mapping (`arrays`) applied to the mean expression probabilities of a
    clip's faces."""

    @staticmethod
    def reads(info: dict) -> bool:
        """Whether a saved classical model is this one."""
        return info["functionals"] == FACE_FEATURES

    def trained_in(self) -> None:
        return None  # trained on nobody: no split of its own to keep

    def file_features(self, path: Path) -> np.ndarray:
        video_path, _ = media_paths(path)
        if not video_path:
            raise MissingModality(
                str(path), "a sound file has no faces, and the zero-shot face model reads faces only"
            )
        settings = Preprocessing(**self.info["data"]["preprocessing"])
        return file_expressions(video_path, settings, self.info["data"].get("decoder", "decord"))
