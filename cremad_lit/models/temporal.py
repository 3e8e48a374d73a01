"""Temporal models: per-frame features (B, T, F) -> one clip embedding (B, out_features).

    from cremad_lit.models.temporal import RecurrentTemporal
    temporal = RecurrentTemporal(in_features=1280, hidden_size=256)          # the paper's LSTM
    clip = temporal(torch.randn(8, 8, 1280))                                 # (8, 256)

Configs pass these as `_partial_: true`; the classifier supplies `in_features` from its backbone.
"""

from __future__ import annotations

import torch
from torch import nn


class RecurrentTemporal(nn.Module):
    """LSTM (the paper), BiLSTM or GRU; the embedding is the last layer's final hidden state (both directions)."""

    def __init__(
        self,
        in_features: int,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        cells = {"lstm": nn.LSTM, "gru": nn.GRU}
        if cell not in cells:
            raise ValueError(f"cell must be one of {list(cells)}, not {cell!r}")
        self.rnn = cells[cell](
            in_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.directions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(features)
        hidden = state[0] if isinstance(state, tuple) else state  # (layers * directions, B, H)
        return hidden[-self.directions :].transpose(0, 1).flatten(1)


class MeanTemporal(nn.Module):
    """Average over frames: the order-free baseline."""

    def __init__(self, in_features: int):
        super().__init__()
        self.out_features = in_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=1)


class TransformerTemporal(nn.Module):
    """A small Transformer encoder over frames with learned positions; the embedding is the mean of its outputs."""

    def __init__(
        self,
        in_features: int,
        d_model: int = 256,
        num_heads: int = 4,
        num_layers: int = 2,
        max_frames: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.project = nn.Linear(in_features, d_model)
        self.position = nn.Parameter(torch.zeros(1, max_frames, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=2 * d_model,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_features = d_model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.project(features) + self.position[:, : features.shape[1]]
        return self.encoder(x).mean(dim=1)
