"""The audio-visual classifier: video branch (backbone per frame -> temporal) + audio branch (backbone on the Mel
image) -> fusion -> logits. Built by Hydra from `conf/model/`; every part arrives as a partial the net completes.

    python train.py model=effnet_lstm                 # the paper's Model 2
    python train.py model=resnet_vit_lstm             # the paper's Model 1
    python train.py data.modalities=[audio]           # unimodal ablation: only the audio branch is built

Input is the batch dict (`frames` B x T x 3 x H x W, `mel` B x 1 x F x W, or for a speech encoder `waveform` B x S
with `waveform_lengths` B; with a functionals branch `functionals` B x 88; from a frozen encoder's feature cache
`video_features` B x T x D and `audio_features`, see encoder_cache.py); the net never sees a path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cremad_lit.models.backbones import Backbone

# none: the corpus-wide dB scaling of the data only | clip: each Mel image to zero mean, unit std | bins: each Mel
# band to zero mean over time (cepstral mean normalisation: takes out the microphone and room), then unit std.
AUDIO_NORMS = ("none", "clip", "bins")


class AudioVisualNet(nn.Module):
    def __init__(
        self,
        modalities: Sequence[str] = ("audio", "video"),
        video_backbone: Callable[..., Backbone] | None = None,
        audio_backbone: Callable[..., Backbone] | None = None,
        temporal: Callable[..., nn.Module] | None = None,
        fusion: Callable[..., nn.Module] | None = None,
        *,
        num_classes: int,  # the run's class list sets it (pipeline.build_net): no six by default
        audio_norm: str = "none",
        functionals: Callable[..., nn.Module] | None = None,
    ):
        super().__init__()
        if audio_norm not in AUDIO_NORMS:
            raise ValueError(f"audio_norm must be one of {AUDIO_NORMS}, not {audio_norm!r}")
        self.audio_norm = audio_norm
        self.modalities = tuple(m for m in ("video", "audio") if m in modalities)
        if not self.modalities:
            raise ValueError(f"modalities must include audio and/or video, got {list(modalities)}")
        embedding_sizes, embedding_modalities = [], []
        if "video" in self.modalities:
            self.video_backbone = video_backbone()
            self.temporal = temporal(in_features=self.video_backbone.out_features)
            embedding_sizes.append(self.temporal.out_features)
            embedding_modalities.append("video")
        if "audio" in self.modalities:
            self.audio_backbone = audio_backbone(in_chans=1)
            embedding_sizes.append(self.audio_backbone.out_features)
            embedding_modalities.append("audio")
        # Hand-made utterance features (data.functionals=egemaps): one more embedding for the fusion head.
        self.functionals = functionals() if functionals is not None else None
        if self.functionals is not None:
            embedding_sizes.append(self.functionals.out_features)
            embedding_modalities.append("audio")  # read from the voice: part of the audio side
        self.embedding_sizes = list(embedding_sizes)
        # Which modality each embedding comes from (the modality-balance diagnostics and methods, balance.py).
        self.embedding_modalities = list(embedding_modalities)
        self.fusion = fusion(in_features=embedding_sizes, num_classes=num_classes)

    def encoder_parameters(self) -> dict[str, list[nn.Parameter]]:
        """modality -> the trainable parameters of its encoders (everything before the fusion head)."""
        parts = {"video": ("video_backbone", "temporal"), "audio": ("audio_backbone", "functionals")}
        return {
            modality: [
                p
                for name in parts[modality]
                if getattr(self, name, None) is not None
                for p in getattr(self, name).parameters()
                if p.requires_grad
            ]
            for modality in self.modalities
        }

    def audio_input(self) -> str | None:
        """What the audio branch reads from the batch: `mel` (image backbones) or `waveform` (speech encoders)."""
        return getattr(self.audio_backbone, "input_key", "mel") if "audio" in self.modalities else None

    def frame_input_spec(self) -> dict | None:
        """Frame size, mean and std the video backbone expects (None without a video branch)."""
        return self.video_backbone.input_spec() if "video" in self.modalities else None

    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        batch, steps = frames.shape[:2]
        per_frame = self.video_backbone(frames.flatten(0, 1)).view(batch, steps, -1)
        return self.temporal(per_frame)

    def normalise_audio(self, mel: torch.Tensor) -> torch.Tensor:
        # Inside the model, so evaluate and predict apply it from the checkpoint with nothing to keep in step.
        if self.audio_norm == "none":
            return mel
        centred = mel - mel.mean(dim=-1 if self.audio_norm == "bins" else (-2, -1), keepdim=True)
        return centred / centred.std(dim=(-2, -1), keepdim=True).clamp_min(1e-3)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.fusion(self.embed(batch))

    def embed(self, batch: dict) -> list[torch.Tensor]:
        """One embedding per branch (video, audio, functionals; in that order), as the fusion head takes them."""
        embeddings = []
        if "video_features" in batch:  # a frozen backbone's stored per-frame embeddings (encoder_cache.py)
            embeddings.append(self.temporal(batch["video_features"]))
        elif "video" in self.modalities:
            embeddings.append(self.embed_video(batch["frames"]))
        if "audio" in self.modalities:
            if "audio_features" in batch:  # a frozen speech encoder's stored outputs (encoder_cache.py)
                embeddings.append(
                    self.audio_backbone.readout_cached(
                        batch["audio_features"], batch.get("audio_features_lengths")
                    )
                )
            elif self.audio_input() == "waveform":
                embeddings.append(self.audio_backbone(batch["waveform"], batch["waveform_lengths"]))
            else:
                embeddings.append(self.audio_backbone(self.normalise_audio(batch["mel"])))
        if self.functionals is not None:
            if "functionals" not in batch:
                raise KeyError(
                    "this model has a functionals branch: the data must provide them (data.functionals=egemaps)"
                )
            embeddings.append(self.functionals(batch["functionals"]))
        return embeddings
