"""The GE2E speaker encoder (Wan et al., ICASSP 2018) that ships inside Resemblyzer's wheel (`resemblyzer/pretrained.pt`,
Apache-2.0), ported to torch: a pretrained speech network that runs offline, trained to tell thousands of speakers
apart. The package itself is never imported (it imports librosa and webrtcvad, which the lock leaves out).

    python -m cremad_lit baseline data=ravdess data.root=DIR method=ge2e_logreg data.speaker_norm=standard "C_grid=[0.01]"
    python train.py experiment=speech model/backbone@model.audio_backbone=ge2e ...     # a frozen, layer-weighted branch

    from cremad_lit.models.ge2e import load_ge2e
    ge2e = load_ge2e()                              # the wheel's weights, eval mode
    states, embedding = ge2e.encode(waveform)       # 16 kHz mono (S,) -> (3 layers, frames, 256), (256,)

As Resemblyzer computes it (its hparams.py, audio.py and voice_encoder.py): the clip's volume raised to -30 dBFS (never
lowered); a 40-band power Mel spectrogram (25 ms Hann window, 10 ms hop, librosa's Slaney Mel scale and area
normalisation, centred frames); partial windows of 160 frames (1.6 s), 1.3 per second, the last one kept when it is at
least 75% audio (zero-padded); each partial through a 3-layer LSTM of 256 units; the last layer's final state through a
linear layer, ReLU and L2 normalisation; the utterance embedding is the normalised mean of the partials'. What is not
done: Resemblyzer's webrtcvad silence trimming (a C extension left out of the lock; on acted clips of 2-5 s it would
only shorten the pauses). The STFT pads each end by reflection, as librosa did when the weights were trained (librosa
0.10 changed its default to zeros: the first and last two frames differ).

Features for emotion (the x-vector finding: a speaker network's hidden states carry much of it): every LSTM layer's
states at every frame of every partial, and the embedding. `GE2EEncoder` is the frozen audio branch (the same
layer-weighted readout as the self-supervised encoders, the embedding as a fourth "layer"), cached once per clip.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

from cremad_lit.models.speech_encoders import LayerReadout

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
HIDDEN = 256
LAYERS = 3
FEATURES = LAYERS * HIDDEN + HIDDEN  # the classical member's: every layer's mean state, then the embedding
WEIGHTS_IN_WHEEL = "pretrained.pt"
INT16_MAX = 2**15 - 1
STEP = int(np.round((SAMPLE_RATE / PARTIALS_PER_SECOND) / HOP))  # 77 frames between partial starts
INPUT_SPEC = {
    "sample_rate": SAMPLE_RATE,
    "window": WINDOW,
    "hop": HOP,
    "mels": MELS,
    "mel": "slaney, area-normalised, power 2, centred, reflect",
    "partial_frames": PARTIAL_FRAMES,
    "partials_per_second": PARTIALS_PER_SECOND,
    "min_coverage": MIN_COVERAGE,
    "volume_dbfs": TARGET_DBFS,
}


def ge2e_weights_file() -> Path:
    """The weights inside the installed `resemblyzer` package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / WEIGHTS_IN_WHEEL
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the GE2E speaker encoder ({WEIGHTS_IN_WHEEL} of the `resemblyzer` package) is not installed: run "
        "`make install` (the lock holds resemblyzer==0.1.4 without librosa, webrtcvad and typing)"
    )


def partial_counts(lengths: torch.Tensor) -> torch.Tensor:
    """Resemblyzer's compute_partial_slices(rate=1.3, min_coverage=0.75) for a batch of clip lengths (samples): how
    many partials of 160 frames, starting every STEP frames, each clip has. Tensor arithmetic only, so an exported
    graph computes it for any length."""
    n_frames = (lengths + HOP) // HOP  # ceil((samples + 1) / HOP)
    span = (n_frames - PARTIAL_FRAMES + STEP + 1).clamp_min(1)
    count = (span + STEP - 1) // STEP  # len(range(0, span, STEP))
    coverage = (lengths - (count - 1) * STEP * HOP) / (PARTIAL_FRAMES * HOP)
    return count - ((coverage < MIN_COVERAGE) & (count > 1)).long()


class MelFrontEnd(nn.Module):
    """A padded batch (B x S, lengths B) -> (B x frames x 40) power Mel spectrogram, librosa's melspectrogram as
    Resemblyzer calls it on each clip alone: the volume raised to -30 dBFS, the clip zero-padded to its last partial's
    end, reflected at both ends (centred frames), a Hann-windowed DFT written as a strided convolution (the same
    numbers as torch.stft, and ONNX-traceable), Slaney Mel filters. Frames past a clip's last partial are filler."""

    def __init__(self):
        super().__init__()
        filters = torchaudio.functional.melscale_fbanks(
            WINDOW // 2 + 1, 0.0, SAMPLE_RATE / 2, MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("filters", filters, persistent=False)
        n = torch.arange(WINDOW, dtype=torch.float64)
        angle = 2 * torch.pi * torch.arange(WINDOW // 2 + 1, dtype=torch.float64)[:, None] * n / WINDOW
        window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float64)
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2 x 201) x 400: real, imaginary
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        wav = waveform.float()
        valid = torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]
        rms = torch.sqrt(((wav * INT16_MAX) ** 2 * valid).sum(dim=1) / lengths.clamp_min(1)).clamp_min(1e-12)
        change = TARGET_DBFS - 20 * torch.log10(rms / INT16_MAX)
        gain = torch.where(
            change > 0, 10 ** (change / 20), torch.ones_like(change)
        )  # raised only, never lowered
        needed = ((partial_counts(lengths) - 1) * STEP + PARTIAL_FRAMES) * HOP
        padded_length = torch.maximum(needed, lengths)[:, None]
        # Sample positions of the centred frames: reflected at 0 and at the zero-padded clip's end, as librosa pads.
        position = torch.arange((frames - 1) * HOP + WINDOW, device=wav.device)[None, :] - WINDOW // 2
        position = position.abs()
        position = torch.where(position >= padded_length, 2 * (padded_length - 1) - position, position)
        inside = (position >= 0) & (position < lengths[:, None])
        signal = wav.gather(1, position.clamp(0, wav.shape[1] - 1)) * inside * gain[:, None]
        spectrum = nn.functional.conv1d(signal[:, None, :], self.basis, stride=HOP)  # B x 402 x frames
        real, imaginary = spectrum.chunk(2, dim=1)
        return (real**2 + imaginary**2).transpose(1, 2) @ self.filters


class GE2E(nn.Module):
    """The network: 3 LSTM layers (kept apart, so every layer's states can be read) and the projection."""

    def __init__(self):
        super().__init__()
        self.front_end = MelFrontEnd()
        self.layers = nn.ModuleList(
            nn.LSTM(MELS if i == 0 else HIDDEN, HIDDEN, batch_first=True) for i in range(LAYERS)
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A padded batch (B x S, lengths B) -> every layer's states at every frame of every partial
        (layers x B x T x 256, T = the most partials x 160), the valid-step mask (B x T) and the utterance embeddings
        (B x 256). Each clip is read as if alone; all in tensor operations, so the graph traces for any length."""
        counts = partial_counts(lengths)
        most = counts.max()
        offsets = torch.arange(most, device=waveform.device)[:, None] * STEP
        frame_index = offsets + torch.arange(PARTIAL_FRAMES, device=waveform.device)[None, :]  # P x 160
        mel = self.front_end(waveform, lengths, (most - 1) * STEP + PARTIAL_FRAMES)
        x = mel[:, frame_index].reshape(-1, PARTIAL_FRAMES, MELS)  # (B * P) x 160 x 40
        states = []
        for layer in self.layers:
            x, (hidden, _) = layer(x)
            states.append(x.reshape(waveform.shape[0], -1, HIDDEN))
        embeds = torch.relu(self.linear(hidden[-1]))
        embeds = (embeds / embeds.norm(dim=1, keepdim=True).clamp_min(1e-12)).reshape(
            waveform.shape[0], -1, HIDDEN
        )
        partial_valid = torch.arange(most, device=waveform.device)[None, :] < counts[:, None]
        mean = (embeds * partial_valid[..., None]).sum(dim=1) / counts[:, None]
        step_valid = (
            torch.arange(most * PARTIAL_FRAMES, device=waveform.device)[None, :]
            < counts[:, None] * PARTIAL_FRAMES
        )
        return torch.stack(states), step_valid, mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One clip (S,): (layers x frames x 256) states over all its partials' frames, and the utterance embedding."""
        states, _, embedding = self(wav[None], torch.tensor([len(wav)], device=wav.device))
        return states[:, 0], embedding[0]

    def embed_utterance(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encode(wav)[1]


def state_dict_from_resemblyzer(stored: dict) -> dict[str, torch.Tensor]:
    """Resemblyzer's model_state (lstm.*_l{k}, linear.*) as this port's names (layers.{k}.*_l0, linear.*)."""
    state = {}
    for key, value in stored.items():
        if key.startswith("lstm."):
            name, layer = key[len("lstm.") :].rsplit("_l", 1)
            state[f"layers.{layer}.{name}_l0"] = value
        elif key.startswith("linear."):
            state[key] = value
    expected = set(GE2E().state_dict())
    if set(state) != expected:
        raise ValueError(
            f"the GE2E weights file does not hold the expected layers (missing {sorted(expected - set(state))})"
        )
    return state


@lru_cache(maxsize=2)
def _stored_state(path: str) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return state_dict_from_resemblyzer(checkpoint["model_state"])


def load_ge2e(path: str | Path | None = None) -> GE2E:
    """The port with the stored weights (the wheel's file by default), frozen, in eval mode."""
    net = GE2E()
    net.load_state_dict({k: v.clone() for k, v in _stored_state(str(path or ge2e_weights_file())).items()})
    return net.requires_grad_(False).eval()


class GE2EEncoder(LayerReadout):
    """The frozen GE2E encoder as the audio branch: (waveform B x S, lengths B) -> (B, 256). Its "layers" are the three
    LSTM layers' states at every frame of every partial and the utterance embedding (the same at every step), mixed by
    learned softmax weights and pooled over time (mean or attentive), as the self-supervised encoders are read out.
    `pretrained=false`: random weights (tests; a checkpoint stores every weight, so it rebuilds without the wheel)."""

    input_key = "waveform"
    finetune = False

    def __init__(
        self,
        pretrained: bool = True,
        weights_file: str | None = None,
        pooling: str = "mean",
        feature_cache: bool = True,
        feature_cache_dtype: str = "float32",
        sample_rate: int = SAMPLE_RATE,
        in_chans: int = 1,  # the net passes it to every audio branch; a waveform has one channel
        pretrained_file: str | None = None,  # timm's field, set to None for checkpoints: unused here
    ):
        if sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"the GE2E encoder reads {SAMPLE_RATE} Hz audio, but the data gives {sample_rate} Hz: set "
                f"data.preprocessing.sample_rate={SAMPLE_RATE}"
            )
        super().__init__(LAYERS + 1, HIDDEN, pooling, feature_cache, feature_cache_dtype)
        self.name = "ge2e"
        self.model = load_ge2e(weights_file) if pretrained else GE2E()
        for parameter in self.model.parameters():
            parameter.requires_grad = False
        self.model.eval()

    def input_spec(self) -> dict:
        return dict(INPUT_SPEC)

    def architecture(self) -> dict:
        return {}  # nothing beyond the class: a checkpoint rebuilds it from its weights

    def parameter_groups(self) -> list[dict]:
        return []

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def hidden_states(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every "layer" at every partial frame (4 x B x T x 256) and the valid-step mask (B x T)."""
        with torch.no_grad():
            states, valid, embedding = self.model(waveform, lengths)
        return torch.cat([states, embedding[None, :, None, :].expand(1, *states.shape[1:])]), valid

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(*self.hidden_states(waveform, lengths))


def utterance_features(model: GE2E, wav: torch.Tensor) -> np.ndarray:
    """The classical member's 1,024 features of one clip: each LSTM layer's mean state over every partial frame
    (3 x 256), then the utterance embedding (256)."""
    with torch.no_grad():
        states, embedding = model.encode(wav)
    return torch.cat([states.mean(dim=1).flatten(), embedding]).numpy().astype(np.float32)


@lru_cache(maxsize=1)
def _shared_model() -> GE2E:
    return load_ge2e()


def waveform_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """`utterance_features` of a mono float waveform at any rate (resampled to 16 kHz), with the wheel's weights:
    `data.functionals=ge2e` and `baseline method=ge2e_logreg` (data/functionals.py caches them per clip)."""
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if sample_rate != SAMPLE_RATE:
        wav = torchaudio.functional.resample(wav, sample_rate, SAMPLE_RATE)
    return utterance_features(_shared_model(), wav)
