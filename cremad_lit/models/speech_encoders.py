"""Self-supervised speech encoders (WavLM, HuBERT, wav2vec 2.0, Whisper's encoder) as the audio branch, on the 16 kHz
waveform, through Hugging Face transformers: the library the weights are published with, which reads a hub id and a
`save_pretrained` folder (offline clusters) by the same call.

    python train.py experiment=ssl_speech data=ravdess data.root=DIR                          # WavLM Base+, frozen
    python train.py ... model/backbone@model.audio_backbone=hubert_base                       # another encoder
    python train.py ... model.audio_backbone.pretrained_dir=/weights/wavlm-base-plus          # no hub access
    python train.py ... model.audio_backbone.finetune=true model.audio_backbone.finetune_lr=2e-5

SUPERB-style readout: a learnable softmax-weighted sum of every hidden layer (the convolutional features' projection
and each transformer layer), then pooling over time with the padding masked out (mean, or attentive pooling), so the
branch gives one embedding per clip and fuses like any other. Frozen by default (the encoder also stays in eval mode:
no dropout); `finetune=true` trains the transformer layers with their own learning rate while the convolutional
waveform encoder stays frozen, as is standard. The waveform's normalisation and rate come from the model's own
preprocessor config.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cremad_lit.errors import WeightsUnavailable

log = logging.getLogger(__name__)
POOLINGS = ("mean", "attentive")


def weights_source(name: str | None, pretrained_dir: str | None) -> str:
    """Where from_pretrained reads: the local folder when given (it must hold config.json), else the hub id."""
    if pretrained_dir:
        folder = Path(str(pretrained_dir)).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"pretrained_dir={folder} holds no config.json: it must be a folder written by save_pretrained "
                f"(or a hub snapshot: `hf download {name or '<hub id>'} --local-dir {folder}`)"
            )
        return str(folder)
    if not name:
        raise ValueError("a speech encoder needs a hub id (name=) or a local folder (pretrained_dir=)")
    return str(name)


def missing_weights_error(name: str, error: Exception, branch: str = "audio_backbone") -> OSError:
    folder = f"/path/to/weights/{name.split('/')[-1]}"
    return WeightsUnavailable(
        f"could not load {name!r} from the Hugging Face hub or its local cache ({error}). "
        f"Download it on a machine with internet: `hf download {name} --local-dir {folder}` (or "
        f"`huggingface-cli download ...`; the files: config.json, preprocessor_config.json, model.safetensors), copy "
        f"the folder here and add model.{branch}.pretrained_dir={folder}"
    )


class AttentivePooling(nn.Module):
    """A learned score per time step, softmax over the valid steps, the weighted mean."""

    def __init__(self, hidden: int):
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(hidden, hidden // 2 or 1), nn.Tanh(), nn.Linear(hidden // 2 or 1, 1)
        )

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(states).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (scores.softmax(dim=-1).unsqueeze(-1) * states).sum(dim=1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class LayerReadout(nn.Module):
    """What every frozen-capable speech encoder shares (SpeechEncoder here, the GE2E port in ge2e.py): a learned
    softmax-weighted sum of `layers` hidden layers of `hidden` features, pooled over the valid steps, and what the
    feature cache needs (`feature_cache`, `feature_cache_dtype`, `pool`, `num_layers`, `out_features`). A subclass
    sets `model` (the network whose weights key the cache), `name`, `finetune` and `hidden_states(waveform, lengths)`
    -> (layers x B x T x hidden, B x T mask)."""

    input_key = "waveform"  # tells the net to feed waveforms

    def __init__(self, layers: int, hidden: int, pooling: str, feature_cache: bool, feature_cache_dtype: str):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        # Frozen: training reads the stored outputs (encoder_cache.py); float16 halves them (~1e-3 off the logits).
        if feature_cache_dtype not in ("float32", "float16"):
            raise ValueError(f"feature_cache_dtype must be float32 or float16, not {feature_cache_dtype!r}")
        self.feature_cache, self.feature_cache_dtype = feature_cache, feature_cache_dtype
        self.layer_weights = nn.Parameter(torch.zeros(layers))  # softmax(0) = the plain mean of the layers
        self.pool = AttentivePooling(hidden) if pooling == "attentive" else None
        self.out_features, self.num_layers = hidden, layers

    def readout(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("l,lbth->bth", self.layer_weights.softmax(dim=0).to(states.dtype), states)
        return self.pool(mixed, mask) if self.pool is not None else masked_mean(mixed, mask)

    def readout_means(self, means: torch.Tensor) -> torch.Tensor:
        """The mean-pooled readout from each clip's per-layer means (B x layers x H): the feature cache's input."""
        return torch.einsum("l,blh->bh", self.layer_weights.softmax(dim=0).to(means.dtype), means)

    def readout_cached(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The readout from the feature cache's arrays: per-layer means (B x layers x H), or with `lengths` every
        stored step (B x T x layers x H, zero-padded): what forward() gives on the waveform."""
        if lengths is None:
            return self.readout_means(features)
        mask = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
        return self.readout(features.permute(2, 0, 1, 3), mask)


class SpeechEncoder(LayerReadout):
    """`SpeechEncoder(waveform B x S, lengths B) -> (B, out_features)`."""

    def __init__(
        self,
        name: str | None = None,
        pretrained_dir: str | None = None,
        pretrained: bool = True,
        finetune: bool = False,
        finetune_lr: float | None = None,
        gradient_checkpointing: bool = False,
        pooling: str = "mean",
        feature_cache: bool = True,
        feature_cache_dtype: str = "float32",
        sample_rate: int = 16000,
        encoder_config: dict | None = None,
        preprocessor_config: dict | None = None,
        in_chans: int = 1,  # the net passes it to every audio branch; a waveform has one channel
        pretrained_file: str | None = None,  # timm's field, set to None for checkpoints: unused here
    ):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        if pretrained:
            source = weights_source(name, pretrained_dir)
            try:
                model = AutoModel.from_pretrained(source)
                extractor = AutoFeatureExtractor.from_pretrained(source)
            except OSError as error:
                if pretrained_dir:
                    raise
                raise missing_weights_error(source, error) from error
        else:  # a checkpoint: the architecture from its stored config, every weight from its state_dict
            if not encoder_config or not preprocessor_config:
                raise ValueError(
                    "pretrained=false needs the encoder_config and preprocessor_config a run stored"
                )
            encoder_config, preprocessor_config = plain(encoder_config), plain(preprocessor_config)
            config = AutoConfig.for_model(**encoder_config)
            model = AutoModel.from_config(config)
            extractor = _extractor_from_dict(preprocessor_config)
        config = model.config
        hidden = int(getattr(config, "hidden_size", None) or config.d_model)
        layers = int(getattr(config, "num_hidden_layers", None) or config.encoder_layers) + 1
        super().__init__(layers, hidden, pooling, feature_cache, feature_cache_dtype)
        self.name, self.finetune, self.finetune_lr = name or str(pretrained_dir), finetune, finetune_lr
        self.is_whisper = model.config.model_type == "whisper"
        self.model = model.get_encoder() if self.is_whisper else model
        self.extractor = extractor
        if getattr(extractor, "sampling_rate", sample_rate) != sample_rate:
            raise ValueError(
                f"{name or pretrained_dir} expects {extractor.sampling_rate} Hz audio but the data gives "
                f"{sample_rate} Hz: set data.preprocessing.sample_rate={extractor.sampling_rate}"
            )
        self.normalise_waveform = bool(getattr(extractor, "do_normalize", False))
        # wav2vec 2.0 Base (group-norm feature encoder) was trained without a padding mask: the model config says.
        self.pass_mask = bool(getattr(extractor, "return_attention_mask", True))
        self.stored_configs = {  # plain JSON types, as the run's config stores them
            "encoder_config": json.loads(config.to_json_string(use_diff=False)),
            "preprocessor_config": json.loads(extractor.to_json_string()),
        }
        for parameter in self.model.parameters():
            parameter.requires_grad = finetune
        if finetune:
            feature_encoder = getattr(
                self.model, "feature_extractor", None
            )  # the convolutional waveform encoder
            if feature_encoder is not None:
                for parameter in feature_encoder.parameters():
                    parameter.requires_grad = False
            if gradient_checkpointing:
                self.model.gradient_checkpointing_enable()

    def architecture(self) -> dict:
        """What a checkpoint's config must hold to rebuild this encoder without its source (evaluate, predict)."""
        return dict(self.stored_configs)

    def parameter_groups(self) -> list[dict]:
        """Fine-tuned encoder parameters with their own learning rate (when set); the readout trains with the rest."""
        encoder = [p for p in self.model.parameters() if p.requires_grad]
        if not encoder or self.finetune_lr is None:
            return []
        return [{"params": encoder, "lr": float(self.finetune_lr)}]

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune:
            self.model.eval()  # frozen: no dropout, the same features in training as in testing
        return self

    def frame_mask(self, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        if self.is_whisper:  # 100 Mel frames per second, halved by the encoder's stride-2 convolution
            valid = torch.div(lengths, self.extractor.hop_length * 2, rounding_mode="floor") + 1
        else:
            valid = self.model._get_feat_extract_output_lengths(lengths)
        return torch.arange(steps, device=lengths.device)[None, :] < valid.clamp(max=steps)[:, None]

    def hidden_states(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's states (layers x B x T x H) and the valid-step mask (B x T)."""
        samples = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]
        if self.is_whisper:
            arrays = [w[:n].float().cpu().numpy() for w, n in zip(waveform, lengths.tolist(), strict=True)]
            features = self.extractor(arrays, sampling_rate=self.extractor.sampling_rate, return_tensors="pt")
            inputs = {"input_features": features["input_features"].to(waveform.device, self._dtype())}
        else:
            x = waveform.float()
            if self.normalise_waveform:  # zero mean, unit variance over each clip's own samples
                count = samples.sum(dim=1, keepdim=True).clamp_min(1)
                mean = (x * samples).sum(dim=1, keepdim=True) / count
                var = (((x - mean) * samples) ** 2).sum(dim=1, keepdim=True) / count
                x = ((x - mean) / (var + 1e-7).sqrt()) * samples
            inputs = {"input_values": x.to(self._dtype())}
            if self.pass_mask:
                inputs["attention_mask"] = samples.long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune):
            output = self.model(**inputs, output_hidden_states=True)
        states = torch.stack(output.hidden_states)
        return states, self.frame_mask(lengths, states.shape[2])

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(*self.hidden_states(waveform, lengths))

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def plain(config) -> dict:
    """A stored config as plain dicts and lists (Hydra hands nested nodes over as DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)


def _extractor_from_dict(stored: dict):
    """The feature extractor a run stored (its to_dict), rebuilt by class name without reading any file."""
    import transformers

    kind = getattr(transformers, stored.get("feature_extractor_type", "Wav2Vec2FeatureExtractor"))
    return kind(**{k: v for k, v in stored.items() if k != "feature_extractor_type"})


def tiny_encoder_folder(
    folder: str | Path, kind: str = "wavlm", layers: int = 2, hidden: int = 32, conv_dim: int = 16
) -> Path:
    """A randomly initialised encoder of `kind` (wavlm | hubert | wav2vec2 | whisper) written with save_pretrained:
    exactly the files a hub snapshot holds, for tests and CPU benchmarks (no download)."""
    import transformers

    folder = Path(folder)
    torch.manual_seed(0)
    if kind == "whisper":
        config = transformers.WhisperConfig(
            d_model=hidden,
            encoder_layers=layers,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=hidden * 2,
            decoder_ffn_dim=hidden * 2,
            num_mel_bins=80,
            max_source_positions=250,  # 5 s windows instead of 30 s: a small test model
            vocab_size=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=3,
            max_target_positions=16,
        )
        transformers.WhisperModel(config).save_pretrained(folder)
        transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=5).save_pretrained(folder)
        return folder
    configs = {"wavlm": "WavLMConfig", "hubert": "HubertConfig", "wav2vec2": "Wav2Vec2Config"}
    models = {"wavlm": "WavLMModel", "hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}
    config = getattr(transformers, configs[kind])(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        intermediate_size=hidden * 4 if hidden >= 64 else hidden * 2,
        conv_dim=(conv_dim,)
        * 7,  # the real models' 7 convolutions and 320-sample stride (50 frames per second), narrow
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    getattr(transformers, models[kind])(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def layer_means(states: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per clip, every layer's mean over its valid steps (B x layers x H): with mean pooling the readout of these
    equals the readout of the full states, since a weighted sum over layers and a mean over time commute."""
    weights = mask.to(states.dtype)[None, :, :, None]
    means = (states * weights).sum(dim=2) / weights.sum(dim=2).clamp_min(1.0)
    return means.transpose(0, 1).float().cpu().numpy()
