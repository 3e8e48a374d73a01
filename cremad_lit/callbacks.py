"""Callbacks: training speed (clips/s, share of step time spent waiting for data), per-epoch history (CSV) and the
training-curve plot (the paper's Fig. 3), written into the run dir.

python train.py    # conf/callbacks/default.yaml adds both; see <run dir>/history.csv and curves.png
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import pandas as pd

from cremad_lit.io import write_text
from cremad_lit.plots import plot_curves

_COLUMNS = {
    "train/loss_epoch": "train/loss",
    "val/loss": "val/loss",
    "val/acc": "val/acc",
    "val/f1_macro": "val/f1_macro",
    "speed/clips_per_s": "speed/clips_per_s",
    "speed/data_wait_share": "speed/data_wait_share",
    "train/speaker_acc": "train/speaker_acc",  # loss.speaker_adversary: how well the head still tells speakers apart
    # audio-visual nets (balance.py): the fused head with one modality only, and OGM-GE's imbalance ratio
    "val/acc_only_audio": "val/acc_only_audio",
    "val/acc_only_video": "val/acc_only_video",
    "val/loss_only_audio": "val/loss_only_audio",
    "val/loss_only_video": "val/loss_only_video",
    "val/imbalance_audio_video": "val/imbalance_audio_video",
}

log = logging.getLogger(__name__)


class TrainingSpeed(L.Callback):
    """Per training epoch: `speed/clips_per_s` and `speed/data_wait_share`, the share of the step time spent waiting
    for the next batch (from the end of one step to the start of the next). Near 0: the model is the bottleneck;
    a large share: the loader is (more workers, the prepared cache)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._clips, self._waiting, self._computing = 0, 0.0, 0.0
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()
        self._waiting += self._step_start - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_end = time.perf_counter()
        self._computing += self._last_end - self._step_start
        if batch is not None:
            self._clips += len(batch["label"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        total = self._waiting + self._computing  # the training steps only: validation is not training speed
        pl_module.log("speed/clips_per_s", self._clips / total if total > 0 else 0.0)
        pl_module.log("speed/data_wait_share", self._waiting / total if total > 0 else 0.0)


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
        write_text(self.output_dir / "history.csv", pd.DataFrame(self.rows).to_csv(index=False))
        # One line per epoch in train.log (and the console), readable where progress bars are off or interleaved.
        log.info(
            "%s epoch %d: %s",
            self.output_dir.name,
            row["epoch"],
            ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "epoch"),
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            plot_curves(pd.DataFrame(self.rows), self.output_dir / "curves.png")

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))
