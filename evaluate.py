"""Evaluate a checkpoint on any split or dataset root; rebuilds the model from the config stored in the checkpoint.

    python evaluate.py ckpt_path=logs/train/runs/<run>/checkpoints/epoch05.ckpt             # its own test split
    python evaluate.py ckpt_path=... split=val
    python evaluate.py ckpt_path=... data.root=/other/CREMA-D split=all                        # every clip there

Writes metrics.json, confusion.png and predictions.csv into its run dir and prints where. Defaults: conf/eval.yaml.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@stops_cleanly
def main(cfg: DictConfig) -> float:
    require_environment()  # before torch, Lightning and timm load: a broken install stops with the fix named
    from cremad_lit.evaluation import evaluate

    return evaluate(cfg)["accuracy"]


if __name__ == "__main__":
    main()
