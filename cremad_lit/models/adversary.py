"""Speaker-adversarial training: the network learns emotion while a small head fails to tell who is speaking.

    python train.py experiment=speech loss.speaker_adversary=1.0        # DANN's schedule, up to 1.0

A classifier of the training speakers reads the fused embedding (every branch concatenated, before the emotion head)
through a gradient reversal layer (Ganin & Lempitsky, ICML 2015): it learns to recognise the speaker, and the reversed
gradient teaches the network to leave the speaker out of that embedding, so the emotion head cannot lean on who is
speaking (for emotion: e.g. Li et al., "Improving speaker-independent speech emotion recognition", 2019). The
reversal's strength follows DANN's ramp from 0 to `weight` over training. The head exists only in training: it is no
part of the model that evaluate, predict and export rebuild.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient multiplied by -strength backward."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def dann_strength(progress: float, weight: float) -> float:
    """DANN's ramp: 0 at the start of training, `weight` at the end (2 / (1 + exp(-10 p)) - 1, scaled)."""
    return weight * (2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0)


class SpeakerAdversary(nn.Module):
    def __init__(self, in_features: int, speakers: int, hidden: int = 128):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, speakers))

    def forward(self, embedding: torch.Tensor, strength: float) -> torch.Tensor:
        """Speaker logits from `embedding`; backward, the embedding gets the reversed gradient times `strength`."""
        return self.head(GradientReversal.apply(embedding, strength))
