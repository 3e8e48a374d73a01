"""Evaluate a checkpoint (or a run, a sweep, a baseline run) on any split or corpus (`python -m cremad_lit evaluate`).

    python evaluate.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt              # its own test split
    python evaluate.py ckpt_path=... subset=val
    python evaluate.py ckpt_path=... data.root=/other/CREMA-D subset=all                    # every clip there

Defaults: conf/eval.yaml. The entry point is cremad_lit/commands/evaluate.py; the body, cremad_lit/evaluation.py.
"""

import runpy

if __name__ == "__main__":
    # As `python -m cremad_lit evaluate` runs it: a script to Hydra, which finds conf/ beside the command's file.
    runpy.run_module("cremad_lit.commands.evaluate", run_name="__main__", alter_sys=True)
