"""Train and test an audio-visual emotion model on CREMA-D (the same as `python -m cremad_lit train`).

    python train.py data.root=/path/to/CREMA-D model=effnet_lstm       # the paper's Model 2
    python train.py experiment=demo                                      # CPU demo on the built-in synthetic data
    python train.py -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2     # a Hydra multirun sweep

Defaults: conf/train.yaml. The entry point is cremad_lit/commands/train.py; the body, cremad_lit/training.py.
"""

import runpy

if __name__ == "__main__":
    # As `python -m cremad_lit train` runs it: a script to Hydra, which finds conf/ beside the command's file.
    runpy.run_module("cremad_lit.commands.train", run_name="__main__", alter_sys=True)
