"""Self-supervised speech encoders as the audio branch, on tiny randomly initialised encoders written with
save_pretrained (exactly the files a hub snapshot holds) and loaded by the path real weights take (pretrained_dir=).
No hub access: every command runs with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import common, one_speaker_folder, run_cli
from tests.test_corpora import link_actors

KINDS = ("wavlm", "hubert", "wav2vec2", "whisper")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
CPU = [
    "trainer=cpu",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "logger=none",
]


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory) -> dict:
    from cremad_lit.models.speech_encoders import tiny_encoder_folder

    root = tmp_path_factory.mktemp("encoders")
    return {kind: tiny_encoder_folder(root / kind, kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_each_encoder_family_loads_from_its_folder_masks_padding_and_rebuilds_from_the_stored_config(
    tiny_encoders, kind
):
    from cremad_lit.models.speech_encoders import SpeechEncoder, layer_means

    encoder = SpeechEncoder(pretrained_dir=str(tiny_encoders[kind])).eval()
    assert encoder.num_layers == 3 and encoder.out_features == 32
    torch.manual_seed(0)
    lengths = torch.tensor([32000, 20000, 9000])
    waveform = torch.randn(3, 32000) * 0.1 * (torch.arange(32000)[None] < lengths[:, None])
    with torch.no_grad():
        embedded = encoder(waveform, lengths)
        alone = encoder(waveform[2:, :9000], lengths[2:])
        states, mask = encoder.hidden_states(waveform, lengths)
    assert embedded.shape == (3, 32) and torch.isfinite(embedded).all()
    assert torch.allclose(embedded[2], alone[0], atol=1e-5)  # the padding is masked out
    # The feature cache's per-layer means give exactly the mean-pooled readout.
    means = torch.from_numpy(layer_means(states, mask))
    assert means.shape == (3, 3, 32)
    assert torch.allclose(encoder.readout_means(means), embedded, atol=1e-5)
    # A checkpoint rebuilds it from the stored configs alone (no folder, no hub).
    rebuilt = SpeechEncoder(pretrained=False, **encoder.architecture())
    rebuilt.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(waveform, lengths), embedded)


def test_missing_weights_are_one_clear_error(tmp_path, ravdess_dir):
    from cremad_lit.models.speech_encoders import SpeechEncoder

    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        SpeechEncoder(name="microsoft/wavlm-base-plus", pretrained_dir=str(tmp_path))
    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 3))
    result = run_cli(
        "train.py",
        "experiment=ssl_speech",
        "data=ravdess",
        *common(root, tmp_path),
        *CPU,
        check=False,
        env=OFFLINE,
    )
    assert result.returncode != 0
    assert "hf download microsoft/wavlm-base-plus --local-dir" in result.stderr
    assert "model.audio_backbone.pretrained_dir=" in result.stderr


def encoder_weights(state_dict: dict) -> dict:
    prefix = "net.audio_backbone.model."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def test_frozen_encoder_trains_from_its_feature_cache_and_evaluates_and_predicts_on_raw_audio(
    ravdess_dir, tiny_encoders, tmp_path
):
    """experiment=ssl_speech on real RAVDESS speech with a tiny WavLM: the encoder runs once per clip (the feature
    cache), its weights are unchanged after fit, the layer mix is learned; evaluate.py and predict run the encoder on
    raw audio from the checkpoint alone and give the logits training's test read from the cache."""
    from transformers import AutoModel

    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 7))
    weights = tmp_path / "weights"
    tiny_encoders["wavlm"].rename(weights)
    run_args = [
        "experiment=ssl_speech",
        "data=ravdess",
        *common(root, tmp_path),
        *CPU,
        f"model.audio_backbone.pretrained_dir={weights}",
        "trainer.max_epochs=2",
    ]
    run_cli("train.py", *run_args, f"hydra.run.dir={tmp_path / 'train'}", env=OFFLINE)
    info = json.loads((tmp_path / "train" / "run_info.json").read_text())["encoder_cache"]
    assert info["computed"] == info["stored"] == 264 and info["skipped"] == 0
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    stored = encoder_weights(checkpoint["state_dict"])
    original = AutoModel.from_pretrained(weights).state_dict()
    assert stored.keys() == original.keys()
    assert all(torch.equal(stored[k], original[k]) for k in original)  # frozen: not one weight moved
    assert not torch.equal(
        checkpoint["state_dict"]["net.audio_backbone.layer_weights"], torch.zeros(3)
    )  # the layer mix is learned

    # A second run on the same clips reuses every stored clip.
    run_cli("train.py", *run_args, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'again'}", env=OFFLINE)
    again = json.loads((tmp_path / "again" / "run_info.json").read_text())["encoder_cache"]
    assert again["computed"] == 0 and again["stored"] == 264 and again["dir"] == info["dir"]

    # The checkpoint alone (weights folder gone, hub offline) runs the encoder on the raw audio.
    weights.rename(tmp_path / "moved")
    run_cli(
        "evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}", env=OFFLINE
    )
    columns = [f"p_{e}" for e in EMOTIONS]
    from_cache = (
        pd.read_csv(tmp_path / "train" / "predictions.csv").set_index("clip_id")[columns].sort_index()
    )
    end_to_end = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("clip_id")[columns].sort_index()
    assert len(from_cache) == 88 and list(end_to_end.index) == list(from_cache.index)
    assert np.allclose(end_to_end.to_numpy(), from_cache.to_numpy(), atol=1e-5)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)

    actor = metrics["test_actors"][0]
    folder = one_speaker_folder(ravdess_dir, actor, tmp_path / "one-speaker")
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={metrics['checkpoint']}",
        f"inputs=[{folder}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
        env=OFFLINE,
    )
    predicted = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    predicted.index = [name.split("/")[-1].split(".")[0].split("-", 1)[1] for name in predicted["file"]]
    assert len(predicted) == 44 and np.allclose(
        predicted[EMOTIONS].to_numpy(), end_to_end.loc[predicted.index].to_numpy(), atol=1e-4
    )


def test_finetuning_trains_the_transformer_layers_with_their_own_rate_and_keeps_the_feature_encoder(
    ravdess_dir, tiny_encoders, tmp_path
):
    from transformers import AutoModel

    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 7))
    folder = tiny_encoders["hubert"]
    run_cli(
        "train.py",
        "experiment=ssl_speech",
        "data=ravdess",
        *common(root, tmp_path),
        *CPU,
        "model/backbone@model.audio_backbone=hubert_base",
        f"model.audio_backbone.pretrained_dir={folder}",
        "model.audio_backbone.finetune=true",
        "model.audio_backbone.finetune_lr=5e-4",
        "model.audio_backbone.gradient_checkpointing=true",
        "model.audio_backbone.pooling=attentive",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        f"hydra.run.dir={tmp_path / 'finetune'}",
        env=OFFLINE,
    )
    assert "encoder_cache" not in json.loads((tmp_path / "finetune" / "run_info.json").read_text())
    metrics = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    tuned, original = (
        encoder_weights(checkpoint["state_dict"]),
        AutoModel.from_pretrained(folder).state_dict(),
    )
    layers = [k for k in original if k.startswith("encoder.layers.") and k.endswith("weight")]
    convolutions = [k for k in original if k.startswith("feature_extractor.")]
    assert layers and convolutions
    assert all(not torch.equal(tuned[k], original[k]) for k in layers)  # the transformer layers moved
    assert all(torch.equal(tuned[k], original[k]) for k in convolutions)  # the waveform encoder did not
    rates = sorted(group["lr"] for group in checkpoint["optimizer_states"][0]["param_groups"])
    assert rates == pytest.approx([5e-4, 1e-3])  # the encoder's own rate beside the head's


def test_image_encoders_load_from_timm_and_transformers_folders_and_rebuild_from_the_checkpoint_config(
    tmp_path,
):
    """pretrained_dir for the video branch: a timm hub snapshot (timm's save_for_hf) and a transformers
    save_pretrained folder; each gives the folder's weights and preprocessing, and rebuilds from what the run stores."""
    import timm
    import transformers
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from timm.models._hub import save_for_hf

    from cremad_lit.models.backbones import Backbone
    from cremad_lit.models.hf_image import HFImageEncoder
    from cremad_lit.pipeline import build_net

    torch.manual_seed(0)
    timm_model = timm.create_model("test_vit", pretrained=False, num_classes=0).eval()
    save_for_hf(timm_model, tmp_path / "timm", safe_serialization=True)
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    transformers.ViTModel(config).save_pretrained(tmp_path / "hf")
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4] * 3, image_std=[0.2] * 3
    ).save_pretrained(tmp_path / "hf")
    images = torch.randn(2, 3, 32, 32)

    loaded = Backbone("ignored", pretrained_dir=str(tmp_path / "timm"), input_size=32).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(images), timm_model(images), atol=1e-5)  # the folder's weights
    hf = HFImageEncoder(pretrained_dir=str(tmp_path / "hf")).eval()
    assert hf.input_spec() == {"image_size": 32, "mean": (0.4,) * 3, "std": (0.2,) * 3}  # its processor's
    assert hf(images).shape == (2, 32)
    with pytest.raises(ValueError, match="model/backbone@model.video_backbone=hf_image"):
        Backbone("ignored", pretrained_dir=str(tmp_path / "hf"))

    # As a run stores them: build_net(record=True) writes the architecture into the config; the checkpoint path
    # (pretrained=false) rebuilds the same net from that config alone.
    for target, folder in (
        ("cremad_lit.models.Backbone", "timm"),
        ("cremad_lit.models.hf_image.HFImageEncoder", "hf"),
    ):
        model_cfg = OmegaConf.create(
            {
                "_target_": "cremad_lit.models.AudioVisualNet",
                "modalities": ["video"],
                "video_backbone": {
                    "_target_": target,
                    "_partial_": True,
                    "name": "ignored",
                    "pretrained_dir": str(tmp_path / folder),
                    "input_size": 32,
                },
                "temporal": {"_target_": "cremad_lit.models.MeanTemporal", "_partial_": True},
                "fusion": {"_target_": "cremad_lit.models.ConcatFusion", "_partial_": True},
            }
        )
        net = build_net(model_cfg, record=True).eval()
        spec = net.frame_input_spec()
        model_cfg.video_backbone.pretrained = False
        (tmp_path / folder).rename(tmp_path / f"{folder}-gone")
        rebuilt = instantiate(model_cfg)
        rebuilt.load_state_dict(net.state_dict())
        frames = {"frames": torch.randn(2, 2, 3, 32, 32)}
        with torch.no_grad():
            assert torch.equal(rebuilt.eval()(frames), net(frames)), target
        assert rebuilt.frame_input_spec() == spec, target


def test_the_recipes_compose():
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        speech = compose("train", overrides=["experiment=ssl_speech"])
        av = compose("train", overrides=["experiment=ssl_av"])
    backbone = speech.model.audio_backbone
    assert backbone._target_.endswith("SpeechEncoder") and backbone.name == "microsoft/wavlm-base-plus"
    assert not backbone.finetune and backbone.pooling == "mean" and backbone.feature_cache
    assert list(speech.data.modalities) == ["audio"] and speech.ensemble_with is None
    assert list(av.data.modalities) == ["audio", "video"] and av.model.audio_backbone.name == backbone.name
    assert av.model.video_backbone.name == "vit_tiny_patch16_224" and av.model.fusion.dropout == 0.5
