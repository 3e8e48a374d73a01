"""Models: every backbone/temporal/fusion swap's output shapes, Hydra composition of the paper models, local weights."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from safetensors.torch import save_file

from cremad_lit.models import (
    AttentionFusion,
    AudioVisualNet,
    Backbone,
    ConcatFusion,
    FunctionalsMLP,
    GatedFusion,
    MeanTemporal,
    RecurrentTemporal,
    TransformerTemporal,
)
from cremad_lit.pipeline import frame_spec_without_weights

CONF = str(Path(__file__).resolve().parent.parent / "conf")
BATCH = {"frames": torch.randn(2, 3, 3, 64, 64), "mel": torch.randn(2, 1, 64, 128)}


def tiny_backbone(name="test_efficientnet", **kwargs):
    return functools.partial(Backbone, name, pretrained=False, **kwargs)


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit", "test_resnet"])
def test_backbones_embed_frames_and_mel(name):
    extra = {"input_size": 64} if name == "test_vit" else {}
    frames = Backbone(name, pretrained=False, **extra)
    assert frames(torch.randn(2, 3, 64, 64)).shape == (2, frames.out_features)
    mel = Backbone(name, pretrained=False, in_chans=1)  # ViTs too: they take any size (dynamic_img_size)
    assert mel(torch.randn(2, 1, 64, 128)).shape == (2, mel.out_features)


def test_vit_tiny_takes_the_mel_image():
    """`model/backbone@model.audio_backbone=vit_tiny` (README): the paper's ViT on a 1 x 64 x 128 Mel image."""
    audio = Backbone("vit_tiny_patch16_224", pretrained=False, in_chans=1)
    assert audio(torch.randn(2, 1, 64, 128)).shape == (2, 192)


@pytest.mark.parametrize(
    "temporal",
    [
        functools.partial(RecurrentTemporal, hidden_size=16),
        functools.partial(RecurrentTemporal, hidden_size=16, bidirectional=True),
        functools.partial(RecurrentTemporal, hidden_size=16, cell="gru", num_layers=2),
        MeanTemporal,
        functools.partial(TransformerTemporal, d_model=32, num_heads=2, num_layers=1),
    ],
    ids=["lstm", "bilstm", "gru", "mean", "transformer"],
)
@pytest.mark.parametrize(
    "fusion",
    [ConcatFusion, functools.partial(GatedFusion, dim=16), functools.partial(AttentionFusion, dim=16)],
    ids=["concat", "gated", "attention"],
)
def test_every_swap_gives_six_logits(temporal, fusion):
    net = AudioVisualNet(
        ("audio", "video"), tiny_backbone(), tiny_backbone(), temporal, fusion, num_classes=6
    )
    logits = net(BATCH)
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert net.video_backbone.model.conv_stem.weight.grad is not None  # gradients reach the frame backbone


@pytest.mark.parametrize("modalities", [("audio",), ("video",)])
def test_unimodal_nets_build_only_their_branch(modalities):
    net = AudioVisualNet(
        modalities, tiny_backbone(), tiny_backbone(), RecurrentTemporal, ConcatFusion, num_classes=6
    )
    assert hasattr(net, "video_backbone") == ("video" in modalities) and hasattr(net, "audio_backbone") == (
        "audio" in modalities
    )
    assert net({k: v for k, v in BATCH.items() if (k == "frames") == ("video" in modalities)}).shape == (2, 6)


def test_temporal_order_matters_for_lstm_not_mean():
    features = torch.randn(2, 5, 8)
    lstm = RecurrentTemporal(8, hidden_size=4)
    assert not torch.allclose(lstm(features), lstm(features.flip(1)), atol=1e-4)
    # The same mean up to float rounding: summing in another order can move the last bits (atol 1e-8 is too tight).
    assert torch.allclose(MeanTemporal(8)(features), MeanTemporal(8)(features.flip(1)), atol=1e-6)


@pytest.mark.parametrize(
    ("model", "video", "audio", "features"),
    [
        ("effnet_lstm", "efficientnet_b0", "efficientnet_b0", (1280, 1280)),
        ("resnet_vit_lstm", "vit_tiny_patch16_224", "resnet18", (192, 512)),
    ],
)
def test_paper_models_compose_from_hydra(model, video, audio, features):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"model={model}",
                "model.video_backbone.pretrained=false",
                "model.audio_backbone.pretrained=false",
            ],
        )
    assert cfg.optim.optimizer.lr == 5e-5 and cfg.optim.optimizer.weight_decay == 1e-2
    assert (
        cfg.data.batch_size == 8
        and cfg.trainer.max_epochs == 10
        and cfg.callbacks.early_stopping.patience == 3
    )
    assert cfg.model.fusion.dropout == 0.5
    net = instantiate(cfg.model, num_classes=6)
    assert (net.video_backbone.name, net.audio_backbone.name) == (video, audio)
    assert (net.video_backbone.out_features, net.audio_backbone.out_features) == features
    assert isinstance(net.temporal.rnn, torch.nn.LSTM)
    assert net.audio_backbone.model(torch.randn(1, 1, 64, 128)).shape == (1, features[1])
    spec = net.frame_input_spec()
    assert spec["image_size"] == 224 and spec == frame_spec_without_weights(cfg.model)
    expected_mean = (0.5, 0.5, 0.5) if "vit" in video else (0.485, 0.456, 0.406)
    assert spec["mean"] == pytest.approx(expected_mean)


def test_swaps_from_the_command_line_compose():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "model=tiny",
                "model/temporal=transformer",
                "model/fusion=gated",
                "model/backbone@model.video_backbone=test_vit",
                "data.modalities=[video]",
            ],
        )
    net = instantiate(cfg.model, num_classes=6)
    assert isinstance(net.temporal, TransformerTemporal) and isinstance(net.fusion, GatedFusion)
    assert net.modalities == ("video",) and net.video_backbone.name == "test_vit"


def test_pretrained_file_loads_local_weights(tmp_path):
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    weights = tmp_path / "test_efficientnet.safetensors"
    save_file(source.state_dict(), str(weights))
    loaded = Backbone("test_efficientnet", pretrained_file=str(weights))
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    one_channel = Backbone(
        "test_efficientnet", pretrained_file=str(weights), in_chans=1
    )  # timm folds RGB stem weights
    assert torch.allclose(one_channel.model.conv_stem.weight[:, 0], source.conv_stem.weight.sum(dim=1))
    with pytest.raises(FileNotFoundError, match="pretrained_file"):
        Backbone("test_efficientnet", pretrained_file=str(tmp_path / "missing.safetensors"))


def test_unknown_backbone_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm backbone 'efficientnet_b99'"):
        Backbone("efficientnet_b99", pretrained=False)


@pytest.mark.parametrize("audio_norm", ["none", "clip", "bins"])
def test_audio_norm_takes_out_loudness_inside_the_model(audio_norm):
    torch.manual_seed(0)
    net = AudioVisualNet(
        ("audio",), None, tiny_backbone(), None, ConcatFusion, num_classes=6, audio_norm=audio_norm
    ).eval()
    mel = torch.randn(2, 1, 64, 128)
    louder = {"mel": mel + 0.5}  # +10 dB in the data's scaling: a louder speaker or a hotter microphone
    channel = {"mel": mel + torch.linspace(-1, 1, 64).view(1, 1, 64, 1)}  # a different frequency response
    with torch.no_grad():
        base = net({"mel": mel})
        same_loud, same_channel = (
            net(louder).allclose(base, atol=1e-4),
            net(channel).allclose(base, atol=1e-4),
        )
    assert same_loud == (audio_norm != "none")
    assert same_channel == (audio_norm == "bins")


def test_unknown_audio_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="audio_norm must be one of"):
        AudioVisualNet(
            ("audio",), None, tiny_backbone(), None, ConcatFusion, num_classes=6, audio_norm="loud"
        )


def test_functionals_branch_is_fused_with_the_mel_branch():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train", overrides=["experiment=speech", "model/backbone@model.audio_backbone=test_resnet"]
        )
    assert cfg.data.functionals == "egemaps" and cfg.model.functionals.in_features == 88
    net = instantiate(cfg.model, num_classes=6)
    assert isinstance(net.functionals, FunctionalsMLP) and net.fusion.classifier.in_features == (
        net.audio_backbone.out_features + net.functionals.out_features
    )
    batch = {"mel": torch.randn(4, 1, 64, 128), "functionals": torch.randn(4, 88) * 100}
    logits = net(batch)
    assert logits.shape == (4, 6) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert net.functionals.layers[1].weight.grad.abs().sum() > 0  # the features reach the head
    net.eval()
    with torch.no_grad():
        changed = {**batch, "functionals": batch["functionals"] + torch.randn(4, 88) * 100}
        assert not net(changed).allclose(net(batch))  # and change its answer
    with pytest.raises(KeyError, match="data.functionals=egemaps"):
        net({"mel": batch["mel"]})
