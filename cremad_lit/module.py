"""The LightningModule: cross-entropy training of an AudioVisualNet, torchmetrics evaluation, AdamW.

    python train.py                     # builds EmotionModule(net=<conf/model>, optimizer=<conf/optim>) and fits it

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
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from cremad_lit.balance import Balancer, ModalityProbe, is_audio_visual
from cremad_lit.checkpointing import rng_state, set_rng_state
from cremad_lit.metrics import make_metrics, metrics_from_values, results_from_predictions
from cremad_lit.models.adversary import SpeakerAdversary, dann_strength


class EmotionModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        classes: Sequence[str],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        speaker_adversary: float = 0.0,
        training_speakers: int = 0,
        balance: Balancer | None = None,
    ):
        super().__init__()
        # Modules and partials stay out of hparams: checkpoints hold plain data only (safe to load weights_only).
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "balance"])
        self.net, self.optimizer_factory, self.scheduler_factory = net, optimizer, scheduler
        self.register_buffer(
            "class_weights",
            torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None,
        )
        self.label_smoothing, self.mixup_alpha = label_smoothing, mixup_alpha
        # loss.speaker_adversary: the weight of a speaker-adversarial head on the fused embedding (models/adversary.py)
        self.adversary_weight = speaker_adversary
        self.speaker_adversary = None
        if speaker_adversary > 0:
            if mixup_alpha > 0:
                raise ValueError(
                    "loss.speaker_adversary and loss.mixup_alpha cannot be combined (blended speakers)"
                )
            if training_speakers < 2:
                raise ValueError(
                    f"loss.speaker_adversary needs at least two training speakers to tell apart, not {training_speakers}"
                )
            self.speaker_adversary = SpeakerAdversary(sum(net.embedding_sizes), training_speakers)
        # Every audio-visual net is probed (each modality's share inside the fused head); balance= may rebalance it.
        self.probe = ModalityProbe(net) if is_audio_visual(net) else None
        self.balance = (
            balance if type(balance) is not Balancer else None
        )  # balance=none: plain joint training
        if self.balance is not None:
            if self.probe is None:
                raise ValueError(
                    "balance= rebalances an audio-visual model: data.modalities must be [audio,video]"
                )
            if mixup_alpha > 0 or speaker_adversary > 0:
                raise ValueError(
                    "balance= cannot be combined with loss.mixup_alpha or loss.speaker_adversary"
                )
            balance.setup(net, len(classes))
        self._evaluated = 0
        self.classes = tuple(classes)  # the ordered class names: label i is classes[i]
        self.val_metrics = make_metrics(len(self.classes))
        self.test_metrics = make_metrics(len(self.classes))
        self.test_predictions: list[dict] = []
        self.test_results: dict = {}
        self.run_config: dict | None = None  # the resolved Hydra config, stored in every checkpoint

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(batch)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def training_step(self, batch: dict | None, batch_idx: int):
        if batch is None:  # every clip of the batch failed to decode (already logged)
            return None
        adversary = 0.0
        if self.mixup_alpha > 0:
            loss = self._mixup_loss(batch)
        elif self.speaker_adversary is not None:
            loss, adversary = self._adversarial_loss(batch)
        else:
            embeddings = self.net.embed(batch)
            if self.probe is not None:
                self.probe.observe(embeddings)
            if self.balance is not None:
                loss = self.balance.training_loss(self, embeddings, batch["label"])
            else:
                loss = self._loss(self.net.fusion(embeddings), batch["label"])
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["label"])
        )
        return loss + adversary

    def _adversarial_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The emotion loss, and the speaker head's loss through the gradient reversal (models/adversary.py)."""
        embeddings = self.net.embed(batch)
        loss = self._loss(self.net.fusion(embeddings), batch["label"])
        steps = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        strength = dann_strength(self.global_step / max(float(steps), 1.0), self.adversary_weight)
        speaker_logits = self.speaker_adversary(torch.cat(embeddings, dim=1), strength)
        speakers = batch["speaker"]
        speaker_loss = F.cross_entropy(speaker_logits.float(), speakers, ignore_index=-1)
        known = speakers >= 0
        accuracy = (speaker_logits.argmax(dim=1)[known] == speakers[known]).float().mean()
        size = len(batch["label"])
        self.log("train/speaker_loss", speaker_loss, on_step=False, on_epoch=True, batch_size=size)
        # Chance is 1 / (training speakers): near it, the embedding no longer says who is speaking.
        self.log("train/speaker_acc", accuracy, on_step=False, on_epoch=True, batch_size=size)
        return loss, speaker_loss

    def _mixup_loss(self, batch: dict) -> torch.Tensor:
        """Mixup: train on blends of clip pairs (every modality blended alike) against the blended labels."""
        share = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        partner = torch.randperm(len(batch["label"]), device=batch["label"].device)
        mixed = {
            key: share * value + (1 - share) * value[partner]
            for key, value in batch.items()
            if key in ("frames", "mel")
        }
        logits = self({**batch, **mixed})
        return share * self._loss(logits, batch["label"]) + (1 - share) * self._loss(
            logits, batch["label"][partner]
        )

    def on_train_epoch_start(self) -> None:
        if self.probe is not None:
            self.probe.start_epoch()

    def on_after_backward(self) -> None:
        if self.balance is not None:
            self.balance.after_backward(self)

    def _evaluate(self, batch: dict | None, stage: str, metrics: MetricCollection):
        if batch is None:
            return None
        if self.probe is not None:
            embeddings = self.net.embed(batch)
            logits = self.net.fusion(embeddings)
            self.probe.evaluate(self.net.fusion, embeddings, batch["label"])
            self._evaluated += len(batch["label"])
        else:
            logits = self(batch)
        loss = self._loss(logits, batch["label"])
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
        values = self.probe.results(self, self._evaluated)
        self._evaluated = 0
        for name, value in values.items():
            self.log(f"{stage}/{name}", value)  # already summed over the ranks
        return values

    def on_validation_epoch_start(self) -> None:
        if self.probe is not None:
            self.probe.reset_evaluation()
            self._evaluated = 0

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val", self.val_metrics)
        self._log_modality_balance("val")

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []
        if self.probe is not None:
            self.probe.reset_evaluation()
            self._evaluated = 0

    def on_test_epoch_end(self) -> None:
        predictions = self._gather_predictions()
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

    def _gather_predictions(self) -> list[dict]:
        predictions = self.test_predictions
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

    def configure_optimizers(self):
        groups = parameter_groups(self.net)
        if (
            self.speaker_adversary is not None
        ):  # trained with the optimizer's settings, as the network's own head
            groups[0]["params"] += list(self.speaker_adversary.parameters())
        if self.balance is not None:  # unimodal heads: trained with the network's own settings
            groups[0]["params"] += [p for p in self.balance.parameters() if p.requires_grad]
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
