"""Objectives: what a training step minimises, one class per part, each chosen in the config.

    python train.py loss.label_smoothing=0.1 loss.class_weights=true    # the criterion (CrossEntropy)
    python train.py loss.mixup_alpha=0.2                                # Mixup: the step trains on blended clip pairs
    python train.py loss.speaker_adversary=1.0                          # SpeakerAdversarial: a term on the embeddings
    python train.py data=synthetic_imbalanced balance=ogm_ge            # every balance method (balance.py) is one
    python train.py hydra.searchpath=[file://my_conf] objectives=my_term    # your own: docs/extending.md

SpeechBrain's `compute_objectives`, cut in parts that combine. An `Objective` has three hooks: `setup(module)` once
the net exists, `loss(module, batch, embeddings)` each training step, `after_backward(module)` for a gradient rule
(between the backward pass and the optimizer step). Its parameters train with the network's optimizer settings; its
parameters and buffers are saved in checkpoints (`objectives.<name>.`, so a resumed run continues them) and left out
of the model evaluate, predict and export rebuild: objectives only serve training.

Each objective has a `role`: the one `step` objective forms the emotion loss from the batch (plain cross-entropy on
the fused head, mixup, a balance method); any number of `term`s add to it. What combines is declared, not coded:
`needs` lists what an objective requires of the run ("audio_visual": both modalities; "clip_embeddings": each clip's
own embeddings, which a step that `blends_clips` does not have), and a step with `accepts_terms = False` trains alone.
`EmotionModule` checks these once, for any objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cremad_lit.models.adversary import SpeakerAdversary, dann_strength


class CrossEntropy(nn.Module):
    """The criterion every objective and every evaluation scores logits with: cross-entropy with the run's label
    smoothing and (loss.class_weights=true) inverse-frequency class weights."""

    def __init__(self, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing
        )


class Objective(nn.Module):
    """The interface, and the default step: the criterion on the fused head's logits (plain joint training)."""

    role = "step"  # step: forms the emotion loss (one per run) | term: adds to it
    blends_clips = False  # a step that trains on blends of clips (no embedding belongs to one clip)
    accepts_terms = True  # False: this step's gradient rule is meant for its own loss alone
    needs: frozenset[str] = frozenset()  # "audio_visual", "clip_embeddings"

    def setup(self, module) -> None:
        """Once, with the EmotionModule whose net exists (heads sized from `module.net`, `module.classes`)."""

    def loss(self, module, batch: dict, embeddings: list[torch.Tensor] | None) -> torch.Tensor:
        """This step's loss (a step) or its added term. `embeddings`: net.embed(batch), None after a blending step."""
        return module.criterion(module.net.fusion(embeddings), batch["label"])

    def after_backward(self, module) -> None:
        """A gradient rule, between the backward pass and the optimizer step."""

    def hyperparameters(self) -> dict:
        """What the checkpoint's hyper_parameters record of this objective."""
        return {}

    def log(self, module, name: str, value, size: int) -> None:
        module.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=size)


class Mixup(Objective):
    """loss.mixup_alpha > 0: train on blends of clip pairs (every modality blended alike, share ~ Beta(alpha, alpha))
    against the blended labels."""

    blends_clips = True

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def loss(self, module, batch, embeddings):
        share = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        partner = torch.randperm(len(batch["label"]), device=batch["label"].device)
        mixed = {k: share * v + (1 - share) * v[partner] for k, v in batch.items() if k in ("frames", "mel")}
        logits = module({**batch, **mixed})
        return share * module.criterion(logits, batch["label"]) + (1 - share) * module.criterion(
            logits, batch["label"][partner]
        )

    def hyperparameters(self) -> dict:
        return {"mixup_alpha": self.alpha}


class SpeakerAdversarial(Objective):
    """loss.speaker_adversary > 0: a classifier of the training speakers on the fused embedding, through gradient
    reversal up to `weight` on DANN's schedule (models/adversary.py). Logs train/speaker_loss and train/speaker_acc
    (near 1 / speakers, the embedding no longer says who is speaking)."""

    role = "term"
    needs = frozenset({"clip_embeddings"})

    def __init__(self, weight: float, training_speakers: int):
        super().__init__()
        if training_speakers < 2:
            raise ValueError(
                f"loss.speaker_adversary needs at least two training speakers to tell apart, not {training_speakers}"
            )
        self.weight, self.training_speakers = weight, training_speakers

    def setup(self, module) -> None:
        self.head = SpeakerAdversary(sum(module.net.embedding_sizes), self.training_speakers)

    def loss(self, module, batch, embeddings):
        steps = module.trainer.estimated_stepping_batches if module._trainer is not None else 1
        strength = dann_strength(module.global_step / max(float(steps), 1.0), self.weight)
        logits = self.head(torch.cat(embeddings, dim=1), strength)
        speakers = batch["speaker"]
        loss = F.cross_entropy(logits.float(), speakers, ignore_index=-1)
        known = speakers >= 0
        size = len(batch["label"])
        self.log(module, "speaker_loss", loss, size)
        self.log(module, "speaker_acc", (logits.argmax(dim=1)[known] == speakers[known]).float().mean(), size)
        return loss

    def hyperparameters(self) -> dict:
        return {"speaker_adversary": self.weight, "training_speakers": self.training_speakers}


def check_objectives(objectives: dict[str, Objective], audio_visual: bool) -> Objective:
    """The run's step objective (the default when none is given), after checking what each declares."""
    steps = [name for name, o in objectives.items() if o.role == "step"]
    if len(steps) > 1:
        raise ValueError(f"{' and '.join(steps)} each form the training step's loss: choose one")
    step = objectives[steps[0]] if steps else Objective()
    terms = [name for name, o in objectives.items() if o.role == "term"]
    for name, objective in objectives.items():
        if objective.role not in ("step", "term"):
            raise ValueError(f"objective {name}: role must be step or term, not {objective.role!r}")
        if "audio_visual" in objective.needs and not audio_visual:
            raise ValueError(f"{name} needs an audio-visual model: data.modalities must be [audio,video]")
        if "clip_embeddings" in objective.needs and step.blends_clips:
            raise ValueError(
                f"{name} needs each clip's own embeddings, but {steps[0]} blends clips: choose one"
            )
    if terms and not step.accepts_terms:
        raise ValueError(
            f"{steps[0]} trains on its own loss alone: it cannot be combined with {', '.join(terms)}"
        )
    return step
