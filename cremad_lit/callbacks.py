"""Callbacks: per-epoch history (CSV) and the training-curve plot (the paper's Fig. 3), written into the run dir.

python train.py    # conf/callbacks/default.yaml adds EpochHistory; see <run dir>/history.csv and curves.png
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pandas as pd

from cremad_lit.plots import plot_curves

_COLUMNS = {
    "train/loss_epoch": "train/loss",
    "val/loss": "val/loss",
    "val/acc": "val/acc",
    "val/f1_macro": "val/f1_macro",
}


class EpochHistory(L.Callback):
    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({name: float(metrics[key]) for key, name in _COLUMNS.items() if key in metrics})
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.output_dir / f".history.{os.getpid()}.tmp"
        pd.DataFrame(self.rows).to_csv(tmp, index=False)
        os.replace(tmp, self.output_dir / "history.csv")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            plot_curves(pd.DataFrame(self.rows), self.output_dir / "curves.png")

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
