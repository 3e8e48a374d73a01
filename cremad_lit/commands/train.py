"""Train and test an emotion model: `python train.py ...` in a checkout, `python -m cremad_lit train ...` anywhere.

    python -m cremad_lit train data.root=/path/to/CREMA-D model=effnet_lstm       # the paper's Model 2
    python -m cremad_lit train experiment=demo                                      # CPU demo on generated data
    python -m cremad_lit train -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2     # a Hydra multirun sweep

Fits, tests the chosen checkpoint, writes metrics.json, confusion.png, curves.png, split.csv and checkpoints into the
run dir (printed at the end), and returns the monitored metric for sweepers. Defaults: conf/train.yaml; the body:
training.py.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@stops_cleanly
def main(cfg: DictConfig) -> float | None:
    require_environment()  # before torch, Lightning and timm load: a broken install stops with the fix named
    from cremad_lit.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
