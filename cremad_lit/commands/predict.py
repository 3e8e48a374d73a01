"""Predict the six emotions' probabilities for any video files with a face and speech (or WAV files, for an
audio-only model), whatever their names.

    python -m cremad_lit predict ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt inputs=[a.flv,b.mp4]
    python -m cremad_lit predict ckpt_path=... inputs=/path/to/folder
    python -m cremad_lit predict ckpt_path=[A,B,C] inputs=...     # an ensemble (or a multirun folder): mean probabilities
    python -m cremad_lit predict ckpt_path=[A.ckpt,<baseline run dir>] ensemble_weights=[0.6,0.4] inputs=...
    python -m cremad_lit predict ckpt_path=logs/export/runs/<time>/model.onnx inputs=...   # onnxruntime

The model and its preprocessing are rebuilt from the checkpoint; audio comes from each video's own track. Prints a table
and writes predictions.json, predictions.csv and one bar chart per clip (`<name>.png`) into its run dir. Files that
cannot be decoded are reported with the reason and skipped. A model trained with `data.speaker_norm` normalises each
speaker's files by that speaker's statistics: by default the files of one folder are one speaker (`speaker=folder`;
`speaker=file` or `speaker=all` otherwise).
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig

from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly
from cremad_lit.predictors import load_predictor
from cremad_lit.predictors.files import media_files, write_predictions


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@stops_cleanly
def main(cfg: DictConfig) -> None:
    require_environment()  # a broken install stops here, before any clip is touched
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    files = media_files(cfg.inputs)
    predictor = load_predictor(cfg.ckpt_path, cfg.get("ensemble_weights"), device)
    results = predictor.predict(files, device, cfg.get("speaker", "folder"))
    out = Path(cfg.paths.output_dir)
    table = write_predictions(results, out)
    with pd.option_context("display.width", 200, "display.precision", 3):
        quiet = [column for column in ("error", "warning") if not table[column].any()]
        print(table.drop(columns=quiet).to_string(index=False))
    print(f"run dir: {out.resolve()} (predictions.json, predictions.csv, one chart per clip)")


if __name__ == "__main__":
    main()
