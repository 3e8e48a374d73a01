"""A branch for hand-made utterance features (openSMILE's eGeMAPS functionals, `data.functionals=egemaps`).

    python train.py experiment=speech data=ravdess data.root=DIR     # the Mel CNN and this branch, late fusion

Configs pass it as `_partial_: true` (`conf/model/functionals/`); the classifier concatenates its embedding with the
other branches' before the fusion head.
"""

from __future__ import annotations

import torch
from torch import nn


class FunctionalsMLP(nn.Module):
    """Features -> BatchNorm -> Linear -> GELU -> Dropout. The input BatchNorm learns each feature's scale from the
    training data and keeps it in the checkpoint (raw eGeMAPS values range from 1e-3 to 1e3)."""

    def __init__(self, in_features: int = 88, hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        self.out_features = hidden
        self.layers = nn.Sequential(
            nn.BatchNorm1d(in_features), nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features.float())
