"""The LightningModule: an AudioVisualNet trained on its objectives, torchmetrics evaluation, the optimiser.

    python train.py                     # builds EmotionModule(net=<conf/model>, optimizer=<conf/optim>) and fits it

What a step minimises is the criterion (cross-entropy with the run's smoothing and class weights) and the objectives
(objectives.py: mixup, the speaker adversary, every balance= method, yours), checked together once here.
Logged keys: `train/loss`, `val/loss`, `val/acc`, `val/f1_macro`, ... and the same under `test/`; an audio-visual net
also `val/acc_only_audio`, `val/acc_only_video`, `val/imbalance_audio_video`, ... (balance.py). The monitored key
lives in one place (`monitor.metric` in conf/train.yaml). After `trainer.test`, `test_results` holds the metrics, the
confusion matrix and per-clip predictions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

from cremad_lit.balance import ModalityProbe, is_audio_visual
from cremad_lit.checkpointing import rng_state, set_rng_state
from cremad_lit.metrics import make_metrics, metrics_from_values, results_from_predictions
from cremad_lit.objectives import CrossEntropy, Objective, check_objectives


class EmotionModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        classes: Sequence[str],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        criterion: CrossEntropy | None = None,
        objectives: dict[str, Objective] | None = None,
    ):
        super().__init__()
        self.net, self.optimizer_factory, self.scheduler_factory = net, optimizer, scheduler
        self.classes = tuple(classes)  # the ordered class names: label i is classes[i]
        self.criterion = criterion or CrossEntropy()
        # Every audio-visual net is probed (each modality's share inside the fused head); balance= may rebalance it.
        self.probe = ModalityProbe(net) if is_audio_visual(net) else None
        self.objectives = nn.ModuleDict(objectives or {})
        self.step_objective = check_objectives(dict(self.objectives), self.probe is not None)
        self.terms = [o for o in self.objectives.values() if o.role == "term"]
        for objective in self.objectives.values():
            objective.setup(self)
        # Plain data only (safe to load weights_only): what evaluate rebuilds the criterion from, and what trained it.
        weights = self.criterion.class_weights
        self.save_hyperparameters(
            {
                "classes": list(self.classes),
                "class_weights": weights.tolist() if weights is not None else None,
                "label_smoothing": self.criterion.label_smoothing,
                "objectives": list(self.objectives),
                **{k: v for o in self.objectives.values() for k, v in o.hyperparameters().items()},
            }
        )
        self.val_metrics = make_metrics(len(self.classes))
        self.test_metrics = make_metrics(len(self.classes))
        self.test_predictions: list[dict] = []
        self.test_results: dict = {}
        self.run_config: dict | None = None  # the resolved Hydra config, stored in every checkpoint

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch)

    def training_step(self, batch: dict | None, batch_idx: int):
        if batch is None:  # every clip of the batch failed to decode (already logged)
            return None
        embeddings = None if self.step_objective.blends_clips else self.net.embed(batch)
        if self.probe is not None and embeddings is not None:
            self.probe.observe(embeddings)  # before the step: OGM-GE reads this batch's means too
        loss = self.step_objective.loss(self, batch, embeddings)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["label"])
        )
        return loss + sum(term.loss(self, batch, embeddings) for term in self.terms)

    def on_train_epoch_start(self) -> None:
        if self.probe is not None:
            self.probe.start_epoch()

    def on_after_backward(self) -> None:
        for objective in self.objectives.values():
            objective.after_backward(self)

    def _evaluate(self, batch: dict | None, stage: str, metrics: MetricCollection):
        if batch is None:
            return None
        if self.probe is not None:
            embeddings = self.net.embed(batch)
            logits = self.net.fusion(embeddings)
            self.probe.evaluate(self.net.fusion, embeddings, batch["label"])
        else:
            logits = self(batch)
        loss = self.criterion(logits, batch["label"])
        self.log(
            f"{stage}/loss",
            loss,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=len(batch["label"]),
        )
        metrics.update(logits.float(), batch["label"])
        return logits

    def validation_step(self, batch: dict | None, batch_idx: int):
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: dict | None, batch_idx: int):
        logits = self._evaluate(batch, "test", self.test_metrics)
        if logits is not None:
            probabilities = logits.float().softmax(dim=1).cpu()
            for clip_id, label, row in zip(
                batch["clip_id"], batch["label"].cpu(), probabilities, strict=True
            ):
                self.test_predictions.append(
                    {
                        "clip_id": clip_id,
                        "label": int(label),
                        "pred": int(row.argmax()),
                        "probs": row.tolist(),
                    }
                )

    def _log_epoch_metrics(self, stage: str, metrics: MetricCollection) -> dict:
        values = metrics.compute()
        metrics.reset()
        for name in ("acc", "precision_macro", "recall_macro", "f1_macro"):
            # torchmetrics already synced these over ranks; sync_dist only averages equal values (and keeps DDP quiet)
            self.log(f"{stage}/{name}", values[name], prog_bar=name == "acc", sync_dist=True)
        self.log(
            f"{stage}/uar", values["recall_macro"], prog_bar=True, sync_dist=True
        )  # the field's name for it
        for emotion, f1 in zip(self.classes, values["f1_per_class"], strict=True):
            self.log(f"{stage}/f1_{emotion}", f1, sync_dist=True)
        return values

    def _log_modality_balance(self, stage: str) -> dict | None:
        if self.probe is None:
            return None
        values = self.probe.results(self)
        for name, value in values.items():
            self.log(f"{stage}/{name}", value)  # already summed over the ranks
        return values

    def on_validation_epoch_start(self) -> None:
        if self.probe is not None:
            self.probe.reset_evaluation()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val", self.val_metrics)
        self._log_modality_balance("val")

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []
        if self.probe is not None:
            self.probe.reset_evaluation()

    def on_test_epoch_end(self) -> None:
        predictions = gathered(self.test_predictions)
        values = self._log_epoch_metrics("test", self.test_metrics)
        if predictions:  # exact metrics over the unique test clips (DDP pads its shards with repeated clips)
            self.test_results = results_from_predictions(predictions, self.classes)
        else:
            self.test_results = metrics_from_values(values, self.classes)
        balance = self._log_modality_balance("test")
        if balance is not None:
            self.test_results["modality_balance"] = {
                **{k: round(v, 6) for k, v in balance.items()},
                "how": "the fused head with the other modality's embeddings replaced by their training mean; "
                "imbalance_audio_video: summed true-class probability with audio only over that with video only",
            }
        self.test_predictions = predictions

    def configure_optimizers(self):
        groups = parameter_groups(self.net)
        # the objectives' heads (unimodal, speaker) train with the network's own settings
        groups[0]["params"] += [p for p in self.objectives.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return optimizer
        # Per-step schedules (OneCycleLR) need the run's length, which only the trainer knows.
        per_step = "total_steps" in inspect.signature(self.scheduler_factory.func).parameters
        extra = (
            {"total_steps": int(self.trainer.estimated_stepping_batches)}
            if per_step and "total_steps" not in self.scheduler_factory.keywords
            else {}
        )
        scheduler = self.scheduler_factory(optimizer=optimizer, **extra)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step" if per_step else "epoch"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cremad_lit"] = {
            "config": self.run_config,
            "emotions": list(self.classes),
            "rng": rng_state(),
            "modality_means": self.probe.state() if self.probe is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming: continue the random streams (shuffling, dropout) exactly as the interrupted run would have.
        if self.probe is not None:  # the training means the masked evaluations use
            self.probe.load(checkpoint.get("cremad_lit", {}).get("modality_means"))
        state = checkpoint.get("cremad_lit", {}).get("rng")
        if state is not None and self.trainer is not None and self.trainer.state.fn == "fit":
            set_rng_state(state)


def parameter_groups(net: nn.Module) -> list[dict]:
    """The trainable parameters: a branch's own groups (a fine-tuned speech encoder's learning rate) first, then the
    rest with the optimizer's settings."""
    groups, claimed = [], set()
    for branch in net.children():
        for group in getattr(branch, "parameter_groups", lambda: [])():
            groups.append(group)
            claimed.update(id(p) for p in group["params"])
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in claimed]
    return [{"params": rest}, *groups]


def gathered(predictions: list[dict]) -> list[dict]:
    """Every rank's test predictions (DDP pads its shards with repeated clips), each clip once, in clip order."""
    if (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        shards = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, predictions)
        predictions = [p for shard in shards for p in shard]
    unique = {p["clip_id"]: p for p in predictions}
    return [unique[c] for c in sorted(unique)]
