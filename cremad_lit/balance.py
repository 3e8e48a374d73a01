"""Modality balance: each modality seen inside the fused model, and the methods that rebalance joint training.

    python train.py data=synthetic_imbalanced                               # diagnostics: on in every AV run
    python train.py data=synthetic_imbalanced balance=ogm_ge                 # a method: conf/balance/<name>.yaml
    python train.py -m data=synthetic_imbalanced balance=none,aux_heads,ogm_ge,mmpareto,modality_dropout,pmr

Seeing it (`ModalityProbe`, every audio-visual run): after each validation and test, the fused head is run again with
the other modality's embeddings replaced by their training mean (the mean over the epoch's training batches), so
`acc_only_audio` is what the fused model gets from the voice alone and `acc_only_video` from the face alone: real
evaluations of the trained head, no extra heads. `imbalance_audio_video` is OGM-GE's discrepancy ratio on those
masked outputs, the summed softmax probability of the true class with audio alone over that with video alone (1:
balanced; above 1: the voice dominates). Logged as val/... and test/..., in history.csv, curves.png and metrics.json.

Balancing it (`balance=`): each method is a `Balancer`, an objective (objectives.py): the step's loss it forms from the
per-modality embeddings and the gradient rule it applies after the backward pass (`after_backward`, before the
optimizer step). Unimodal heads (aux_heads, mmpareto) and
prototypes (pmr) only serve training: they are not part of the model evaluate.py and predict rebuild. With DDP the
statistics a rule reads are summed over the ranks first, so every rank applies the same rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cremad_lit.data.corpus import MODALITIES
from cremad_lit.objectives import Objective


def modality_slots(net) -> dict[str, list[int]]:
    """modality -> the indices of its embeddings in net.embed()'s list (the voice may have two: Mel and functionals)."""
    slots: dict[str, list[int]] = {}
    for index, modality in enumerate(net.embedding_modalities):
        slots.setdefault(modality, []).append(index)
    return slots


def is_audio_visual(net) -> bool:
    return set(MODALITIES) <= set(getattr(net, "embedding_modalities", ()))


def keep_only(embeddings: list[torch.Tensor], slots: dict, keep: str, means: list[torch.Tensor]) -> list:
    """The embeddings with every modality but `keep` replaced by its training mean (broadcast over the batch)."""
    kept = set(slots[keep])
    return [e if i in kept else means[i].to(e).expand_as(e) for i, e in enumerate(embeddings)]


def summed(value: torch.Tensor, module, reduce_op: str = "sum") -> torch.Tensor:
    """Summed (or averaged: reduce_op="mean") over DDP ranks, the same statistic on every rank; or as is."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.world_size > 1:
        return trainer.strategy.reduce(value, reduce_op=reduce_op)
    return value


class ModalityProbe:
    """The diagnostics: training means of each embedding, then per evaluation the masked accuracies, losses and the
    imbalance ratio. Lives on the EmotionModule (its means go into the checkpoint's cremad_lit entry)."""

    def __init__(self, net):
        self.slots = modality_slots(net)
        self.sums: list[torch.Tensor] | None = None
        self.count = 0
        self.stored: list[torch.Tensor] | None = None  # the means a checkpoint brought
        self.reset_evaluation()

    def start_epoch(self) -> None:
        self.sums, self.count = None, 0

    def observe(self, embeddings: list[torch.Tensor]) -> None:
        """A training batch's embeddings: into this epoch's sums (the means evaluations use)."""
        batch = [e.detach().float().sum(dim=0) for e in embeddings]
        self.sums = batch if self.sums is None else [s + b for s, b in zip(self.sums, batch, strict=True)]
        self.count += len(embeddings[0])

    @property
    def means(self) -> list[torch.Tensor] | None:
        """This epoch's training means so far, else the checkpoint's, else None."""
        return [s / self.count for s in self.sums] if self.count else self.stored

    def masked_logits(self, fusion, embeddings: list[torch.Tensor], keep: str) -> torch.Tensor:
        means = self.means
        if means is None:  # before any training batch: the batch's own means
            means = [e.detach().mean(dim=0) for e in embeddings]
        return fusion(keep_only(embeddings, self.slots, keep, means))

    def reset_evaluation(self) -> None:
        self.clips = 0  # evaluated since the reset
        self.totals = {
            m: torch.zeros(3, dtype=torch.float64) for m in MODALITIES
        }  # correct, loss sum, true-class prob

    def evaluate(self, fusion, embeddings: list[torch.Tensor], labels: torch.Tensor) -> None:
        self.clips += len(labels)
        for modality in MODALITIES:
            logits = self.masked_logits(fusion, embeddings, modality).float()
            probabilities = logits.softmax(dim=1)
            self.totals[modality] += (
                torch.stack(
                    [
                        (logits.argmax(dim=1) == labels).sum(),
                        F.cross_entropy(logits, labels, reduction="sum"),
                        probabilities.gather(1, labels[:, None]).sum(),
                    ]
                )
                .detach()
                .cpu()
                .double()
            )

    def results(self, module, clips: int | None = None) -> dict:
        """acc_only_<m>, loss_only_<m> and imbalance_audio_video over the evaluation just finished (DDP: all ranks)."""
        out = {}
        clips = self.clips if clips is None else clips
        clips = float(summed(torch.tensor(float(clips), device=module.device), module))
        scores = {}
        for modality in MODALITIES:
            correct, loss, score = summed(self.totals[modality].to(module.device), module).tolist()
            out[f"acc_only_{modality}"] = correct / max(clips, 1.0)
            out[f"loss_only_{modality}"] = loss / max(clips, 1.0)
            scores[modality] = score
        out["imbalance_audio_video"] = scores["audio"] / max(scores["video"], 1e-12)
        self.reset_evaluation()
        return out

    def state(self) -> dict | None:
        return {"means": [m.cpu().tolist() for m in self.means]} if self.means else None

    def load(self, state: dict | None) -> None:
        if state:
            self.stored = [torch.tensor(m) for m in state["means"]]
            self.sums, self.count = None, 0


# ---- the methods: conf/balance/<name>.yaml ----


class Balancer(Objective):
    """The base of the balance methods: objectives (objectives.py) that form the step's loss of an audio-visual model
    from its per-modality embeddings. balance=none is no objective at all: plain joint training."""

    needs = frozenset({"audio_visual"})
    accepts_terms = False  # the gradient rules and unimodal losses are defined on the fused loss alone

    def setup(self, module) -> None:
        self.slots = modality_slots(module.net)
        self.encoders = module.net.encoder_parameters()

    def log(self, module, name: str, value, size: int) -> None:
        super().log(module, f"balance_{name}", value, size)


class UnimodalHeads(Balancer):
    """One linear classifier per modality on its (concatenated) embeddings: aux_heads, and MMPareto's unimodal losses."""

    def setup(self, module) -> None:
        super().setup(module)
        self.heads = nn.ModuleDict(
            {
                m: nn.Linear(sum(module.net.embedding_sizes[i] for i in self.slots[m]), len(module.classes))
                for m in MODALITIES
            }
        )

    def unimodal_losses(self, module, embeddings, labels) -> dict[str, torch.Tensor]:
        return {
            m: module.criterion(
                self.heads[m](torch.cat([embeddings[i] for i in self.slots[m]], dim=1)), labels
            )
            for m in MODALITIES
        }


class AuxiliaryHeads(UnimodalHeads):
    """balance=aux_heads: the fused loss plus `weight` x each modality's own classifier's loss."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def loss(self, module, batch, embeddings):
        labels = batch["label"]
        losses = self.unimodal_losses(module, embeddings, labels)
        for m, value in losses.items():
            self.log(module, f"loss_{m}", value, len(labels))
        return module.criterion(module.net.fusion(embeddings), labels) + self.weight * sum(losses.values())


class ModalityDropout(Balancer):
    """balance=modality_dropout: each training clip loses one modality (chosen at random) with probability `p`, its
    embeddings zeroed, so the fused head cannot lean on one modality alone."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def loss(self, module, batch, embeddings):
        labels = batch["label"]
        batch = len(labels)
        dropped = torch.rand(batch, device=labels.device) < self.p
        which = torch.randint(len(MODALITIES), (batch,), device=labels.device)
        kept = []
        for i, embedding in enumerate(embeddings):
            modality = module.net.embedding_modalities[i]
            off = dropped & (which == MODALITIES.index(modality))
            kept.append(embedding * (~off).to(embedding.dtype)[:, None])
        return module.criterion(module.net.fusion(kept), labels)


def ogm_coefficients(score_audio: float, score_video: float, alpha: float) -> dict[str, float]:
    """OGM-GE's modulation (Peng et al., CVPR 2022, eq. 9-10): the dominant modality's gradients are scaled by
    1 - tanh(alpha (rho - 1)), rho its discrepancy ratio over the other; the other's by 1."""
    rho = score_audio / max(score_video, 1e-12)
    if rho > 1:
        return {"audio": 1 - math.tanh(alpha * (rho - 1)), "video": 1.0}
    return {"audio": 1.0, "video": 1 - math.tanh(alpha * (1 / max(rho, 1e-12) - 1))}


class OGMGE(Balancer):
    """balance=ogm_ge: on-the-fly gradient modulation with generalisation enhancement. Each step, each modality's score
    is the summed true-class softmax of the fused head with only that modality (the probe's masking, for any fusion
    head; the paper splits a concat head's weights); the dominant encoder's gradients shrink by the coefficient, and
    every encoder gradient gets Gaussian noise with its own standard deviation (GE; off with noise=false)."""

    def __init__(
        self, alpha: float = 0.8, noise: bool = True, start_epoch: int = 0, end_epoch: int | None = None
    ):
        super().__init__()
        self.alpha, self.noise, self.start_epoch, self.end_epoch = alpha, noise, start_epoch, end_epoch
        self.coefficients: dict[str, float] | None = None

    def loss(self, module, batch, embeddings):
        labels = batch["label"]
        epoch = module.current_epoch
        active = epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)
        self.coefficients = None
        if active:
            with torch.no_grad():
                scores = torch.stack(
                    [
                        module.probe.masked_logits(module.net.fusion, embeddings, m)
                        .float()
                        .softmax(dim=1)
                        .gather(1, labels[:, None])
                        .sum()
                        for m in MODALITIES
                    ]
                )
            audio, video = summed(scores, module).tolist()
            self.coefficients = ogm_coefficients(audio, video, self.alpha)
            for m, value in self.coefficients.items():
                self.log(module, f"coefficient_{m}", value, len(labels))
        return module.criterion(module.net.fusion(embeddings), labels)

    def after_backward(self, module) -> None:
        if self.coefficients is None:
            return
        # The same noise on every DDP rank: a generator seeded by the step, not each rank's own stream.
        generator = torch.Generator(device="cpu").manual_seed(10_007 * module.global_step + 1)
        for modality, parameters in self.encoders.items():
            for parameter in parameters:
                if parameter.grad is None:
                    continue
                grad = parameter.grad * self.coefficients[modality]
                if self.noise and parameter.grad.numel() > 1:
                    noise = torch.randn(parameter.grad.shape, generator=generator).to(grad)
                    grad = grad + noise * (parameter.grad.float().std() + 1e-8).to(grad)
                parameter.grad = grad


def min_norm_weights(first: torch.Tensor, second: torch.Tensor) -> tuple[float, float]:
    """The convex combination a*first + (1-a)*second of least norm (two-gradient MGDA, closed form)."""
    difference = first - second
    denominator = float(difference.dot(difference))
    if denominator == 0:
        return 0.5, 0.5
    a = min(max(float((second - first).dot(second)) / denominator, 0.0), 1.0)
    return a, 1 - a


def pareto_integrate(multimodal: torch.Tensor, unimodal: torch.Tensor) -> tuple[torch.Tensor, float]:
    """MMPareto's direction for one encoder (flat gradients): 2 x (equal weights when the two agree, cosine > 0; the
    least-norm convex combination when they conflict); and the cosine."""
    cosine = float(F.cosine_similarity(multimodal, unimodal, dim=0))
    weights = (0.5, 0.5) if cosine > 0 else min_norm_weights(multimodal, unimodal)
    return 2 * weights[0] * multimodal + 2 * weights[1] * unimodal, cosine


def pareto_rescale(new: torch.Tensor, plain: torch.Tensor, gamma: float) -> torch.Tensor:
    """One tensor's final gradient: the integrated one enlarged to the plain sum's norm where it is smaller, x gamma."""
    ratio = float(plain.norm() / new.norm().clamp_min(1e-12))
    return new * gamma * (ratio if ratio > 1 else 1.0)


class MMPareto(UnimodalHeads):
    """balance=mmpareto (Wei & Hu, ICML 2024): unimodal heads and losses beside the fused one; each encoder's gradient
    is the Pareto integration of its multimodal and unimodal gradients: equal weights when they agree (cosine > 0),
    the least-norm combination when they conflict, then 2 x that, enlarged to the norm of the plain sum where smaller,
    times `gamma` (the authors' code: 1.5). The heads train on the plain sum of the losses."""

    def __init__(self, gamma: float = 1.5):
        super().__init__()
        self.gamma = gamma
        self.integrated: dict[str, list[torch.Tensor]] = {}

    def loss(self, module, batch, embeddings):
        labels = batch["label"]
        fused = module.criterion(module.net.fusion(embeddings), labels)
        unimodal = self.unimodal_losses(module, embeddings, labels)
        self.integrated = {}
        for modality, parameters in self.encoders.items():
            if not parameters:
                continue
            multimodal_grad = self._flat(
                torch.autograd.grad(fused, parameters, retain_graph=True, allow_unused=True), parameters
            )
            unimodal_grad = self._flat(
                torch.autograd.grad(unimodal[modality], parameters, retain_graph=True, allow_unused=True),
                parameters,
            )
            # averaged over the ranks, as DDP averages the .grad the rescaling compares with
            both = summed(torch.stack([multimodal_grad, unimodal_grad]), module, reduce_op="mean")
            multimodal_grad, unimodal_grad = both[0], both[1]
            combined, cosine = pareto_integrate(multimodal_grad, unimodal_grad)
            self.integrated[modality] = self._split(combined, parameters)
            self.log(module, f"cosine_{modality}", cosine, len(labels))
        return fused + sum(unimodal.values())

    @staticmethod
    def _flat(grads, parameters) -> torch.Tensor:
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten().float()
                for g, p in zip(grads, parameters, strict=True)
            ]
        )

    @staticmethod
    def _split(flat: torch.Tensor, parameters) -> list[torch.Tensor]:
        pieces, start = [], 0
        for p in parameters:
            pieces.append(flat[start : start + p.numel()].view_as(p))
            start += p.numel()
        return pieces

    def after_backward(self, module) -> None:
        scale = grad_scale(module)
        for modality, pieces in self.integrated.items():
            for parameter, new in zip(self.encoders[modality], pieces, strict=True):
                if parameter.grad is None:
                    continue
                new = (
                    new.to(parameter.grad) * scale
                )  # the backward pass's loss scaling (fp16), as .grad has it
                # .grad holds the plain sum of the losses' gradients, as the backward pass left it
                parameter.grad = pareto_rescale(new, parameter.grad, self.gamma)
        self.integrated = {}


def grad_scale(module) -> float:
    """The factor .grad carries from mixed precision's loss scaling (1 without it)."""
    trainer = getattr(module, "_trainer", None)
    scaler = (
        getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None
    )
    return float(scaler.get_scale()) if scaler is not None else 1.0


class PMR(Balancer):
    """balance=pmr (prototypical modal rebalance, Fan et al., CVPR 2023): each modality's class prototypes (a running
    mean of its embeddings per class); the prototype classifier (softmax over negative squared distances) gives each
    modality a score; the weaker modality gets the prototypical cross-entropy with weight tanh(alpha (rho - 1)), rho
    the stronger's score over the weaker's, which speeds its learning. (The paper's entropy term on the dominant
    modality is left out.)"""

    def __init__(self, alpha: float = 1.0, momentum: float = 0.9):
        super().__init__()
        self.alpha, self.momentum = alpha, momentum

    def setup(self, module) -> None:
        super().setup(module)
        classes = len(module.classes)
        for m in MODALITIES:
            size = sum(module.net.embedding_sizes[i] for i in self.slots[m])
            self.register_buffer(f"prototypes_{m}", torch.zeros(classes, size))
            self.register_buffer(f"seen_{m}", torch.zeros(classes, dtype=torch.bool))

    def loss(self, module, batch, embeddings):
        labels = batch["label"]
        fused = module.criterion(module.net.fusion(embeddings), labels)
        logits, scores = {}, {}
        for m in MODALITIES:
            features = torch.cat([embeddings[i] for i in self.slots[m]], dim=1).float()
            self._update(m, features.detach(), labels, module)
            prototypes = getattr(self, f"prototypes_{m}")
            logits[m] = -(torch.cdist(features, prototypes) ** 2)
            scores[m] = logits[m].detach().softmax(dim=1).gather(1, labels[:, None]).sum()
        audio, video = summed(torch.stack([scores["audio"], scores["video"]]), module).tolist()
        rho = audio / max(video, 1e-12)
        weaker, ratio = ("video", rho) if rho > 1 else ("audio", 1 / max(rho, 1e-12))
        beta = math.tanh(self.alpha * (ratio - 1))
        self.log(module, f"weight_{weaker}", beta, len(labels))
        return fused + beta * F.cross_entropy(logits[weaker], labels)

    @torch.no_grad()
    def _update(self, modality: str, features: torch.Tensor, labels: torch.Tensor, module) -> None:
        prototypes, seen = getattr(self, f"prototypes_{modality}"), getattr(self, f"seen_{modality}")
        classes = prototypes.shape[0]
        sums = torch.zeros_like(prototypes).index_add_(0, labels, features)
        counts = torch.bincount(labels, minlength=classes).to(features)
        sums, counts = summed(sums, module), summed(counts, module)
        present = counts > 0
        means = sums / counts.clamp_min(1)[:, None]
        first, again = present & ~seen, present & seen
        prototypes[first] = means[first]  # a class's first batch sets its prototype; later ones move it
        prototypes[again] = self.momentum * prototypes[again] + (1 - self.momentum) * means[again]
        seen |= present
