"""Evaluate saved models on any split or corpus: `python evaluate.py ...` in a checkout, `python -m cremad_lit
evaluate ...` anywhere. The model is rebuilt from what it saved (a checkpoint's config, a baseline run's settings).

    python -m cremad_lit evaluate ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt      # its own test split
    python -m cremad_lit evaluate ckpt_path=<run dir> subset=lockbox                          # the lockbox, once
    python -m cremad_lit evaluate ckpt_path=... data=manifest data.manifest=clips.csv subset=all   # another corpus

Writes metrics.json, confusion.png and predictions.csv into its run dir and prints where. Defaults: conf/eval.yaml;
the body: evaluation.py.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@stops_cleanly
def main(cfg: DictConfig) -> float:
    require_environment()  # before torch, Lightning and timm load: a broken install stops with the fix named
    from cremad_lit.evaluation import evaluate

    return evaluate(cfg)["accuracy"]


if __name__ == "__main__":
    main()
