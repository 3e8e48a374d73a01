"""Fusion heads: one embedding per modality -> class logits.

    from cremad_lit.models.fusion import ConcatFusion
    head = ConcatFusion(in_features=[256, 1280], num_classes=6)      # the paper: concat -> dropout 0.5 -> linear
    logits = head([video_embedding, audio_embedding])

Configs pass these as `_partial_: true`; the classifier supplies `in_features` (one entry per modality in use).
"""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """The paper's late fusion."""

    def __init__(self, in_features: list[int], num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(sum(in_features), num_classes)

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(torch.cat(embeddings, dim=1)))


class _Projected(nn.Module):
    def __init__(self, in_features: list[int], dim: int):
        super().__init__()
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(n, dim), nn.LayerNorm(dim)) for n in in_features
        )

    def project(self, embeddings: list[torch.Tensor]) -> torch.Tensor:  # (B, M, dim)
        return torch.stack([p(e) for p, e in zip(self.projections, embeddings, strict=True)], dim=1)


class GatedFusion(_Projected):
    """Each modality is projected to `dim`; a sigmoid gate computed from all of them weighs each one's contribution."""

    def __init__(self, in_features: list[int], num_classes: int, dim: int = 256, dropout: float = 0.5):
        super().__init__(in_features, dim)
        self.gate = nn.Linear(dim * len(in_features), len(in_features))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        projected = self.project(embeddings)
        gates = torch.sigmoid(self.gate(projected.flatten(1))).unsqueeze(-1)
        return self.classifier(self.dropout((gates * projected).sum(dim=1)))


class AttentionFusion(_Projected):
    """Each modality is projected to `dim`; a learned query attends over the modalities (weights sum to 1)."""

    def __init__(self, in_features: list[int], num_classes: int, dim: int = 256, dropout: float = 0.5):
        super().__init__(in_features, dim)
        self.score = nn.Linear(dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        projected = torch.tanh(self.project(embeddings))
        weights = torch.softmax(self.score(projected), dim=1)
        return self.classifier(self.dropout((weights * projected).sum(dim=1)))
