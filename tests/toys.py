"""A plugin as a user writes one: a backbone, a fusion head, a corpus adapter, a training callback and an objective,
each a few lines here plus one config file in tests/fixtures/toy_conf/ (docs/extending.md walks through them).

    python train.py hydra.searchpath=[file://tests/fixtures/toy_conf] data=toy_folder data.root=DIR \
        model/backbone@model.audio_backbone=toy_cnn model/fusion=toy_product 'callbacks=[default,grad_norm]' \
        'objectives=[toy_centre]'
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from cremad_lit.data.adapters.common import Rejected, reject, walk_files
from cremad_lit.data.labels import emotion_code
from cremad_lit.models.backbones import ImageEncoder
from cremad_lit.objectives import Objective


class ToyCNN(ImageEncoder):
    """An encoder (models/encoder.py): images (B x in_chans x H x W) -> (B x out_features); `input_spec` says how
    frames are prepared. As an ImageEncoder whose network is `self.model`, `freeze=true` makes it a frozen encoder whose
    per-frame features the data caches."""

    def __init__(self, width: int = 8, in_chans: int = 3, image_size: int = 32, freeze: bool = False):
        super().__init__(freeze)
        self.image_size, self.out_features = image_size, 2 * width
        self.model = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

        self.freeze_weights()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def input_spec(self) -> dict:
        return {"image_size": self.image_size, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class ProductFusion(nn.Module):
    """A fusion head: one embedding per modality -> logits. Each is projected to `dim`, the projections multiplied."""

    def __init__(self, in_features: list[int], num_classes: int, dim: int = 16):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(n, dim) for n in in_features)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        product = torch.ones_like(self.projections[0](embeddings[0]))
        for projection, embedding in zip(self.projections, embeddings, strict=True):
            product = product * torch.tanh(projection(embedding))
        return self.classifier(product)


def scan(root, manifest=None, label_map=None, keep_unknown=False, **options):
    """A corpus adapter: a flat folder of `<speaker>_<emotion>_<take>.wav` (emotion as a name or a code)."""
    rows, rejected = [], []
    for path in walk_files(Path(root), (".wav",)):
        parts = path.stem.split("_")
        if len(parts) != 3:
            reject(rejected, path, "name is not <speaker>_<emotion>_<take>")
            continue
        try:
            code = emotion_code(parts[1], label_map, keep_unknown)
        except Rejected as reason:
            reject(rejected, path, str(reason), parts[1])
            continue
        rows.append(
            {
                "clip_id": path.stem,
                "video_path": "",
                "audio_path": str(path),
                "actor_id": parts[0],
                "statement": "",
                "emotion": code,
                "intensity": "",
                "gender": "",
                "age": None,
                "race": "",
                "ethnicity": "",
            }
        )
    return rows, rejected


class GradientNorm(L.Callback):
    """A training method's hook: the global L2 norm of the gradients before each optimiser step, logged per epoch."""

    def __init__(self, norm_type: float = 2.0):
        self.norm_type = norm_type

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.detach().norm(self.norm_type) for p in pl_module.parameters() if p.grad is not None]
        norm = torch.stack(grads).norm(self.norm_type) if grads else torch.tensor(0.0)
        pl_module.log("train/grad_norm", norm, on_step=False, on_epoch=True)


class CentreLoss(Objective):
    """An objective's three hooks: a term that pulls each clip's fused embedding towards a learned centre of its class
    (Wen et al., ECCV 2016), `weight` x the mean squared distance; it needs each clip's own embeddings (not mixup's)."""

    role = "term"
    needs = frozenset({"clip_embeddings"})

    def __init__(self, weight: float = 0.01):
        super().__init__()
        self.weight = weight

    def setup(self, module) -> None:
        self.centres = nn.Parameter(torch.zeros(len(module.classes), sum(module.net.embedding_sizes)))

    def loss(self, module, batch, embeddings):
        fused = torch.cat(embeddings, dim=1)
        distance = (fused - self.centres[batch["label"]]).pow(2).sum(dim=1).mean()
        self.log(module, "centre_loss", distance, len(batch["label"]))
        return self.weight * distance
