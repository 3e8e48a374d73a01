"""Train and test an audio-visual emotion model on CREMA-D.

    python train.py data.root=/path/to/CREMA-D model=effnet_lstm       # the paper's Model 2
    python train.py experiment=demo                                      # CPU demo on the built-in synthetic data
    python train.py -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2     # a Hydra multirun sweep

Fits, tests the best checkpoint, writes metrics.json, confusion.png, curves.png, split.csv and checkpoints into the run
dir (printed at the end), and returns the monitored metric for sweepers. Defaults: conf/train.yaml.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from cremad_lit.environment import require_environment
from cremad_lit.errors import stops_cleanly

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@stops_cleanly
def main(cfg: DictConfig) -> float | None:
    require_environment()  # before torch, Lightning and timm load: a broken install stops with the fix named
    from cremad_lit.training import train

    return train(cfg)


if __name__ == "__main__":
    main()
