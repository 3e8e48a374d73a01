"""Self-supervised speech encoders as the audio branch, on tiny randomly initialised encoders written with
save_pretrained (exactly the files a hub snapshot holds) and loaded by the path real weights take (pretrained_dir=).
No hub access: every command runs with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cremad_lit.models.speech_encoders import SpeechEncoder
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


class WaveformClips:
    """The two things EncoderFeatureCache.fill reads from a ClipDataset: its clips table and a clip's waveform."""

    def __init__(self, waveforms: list[torch.Tensor]):
        self.clips = pd.DataFrame({"clip_id": [f"clip{i}" for i in range(len(waveforms))] + ["broken"]})
        self.by_id = dict(zip(self.clips["clip_id"], waveforms, strict=False))

    def waveform(self, row) -> torch.Tensor:
        from cremad_lit.data.media import MediaError

        if row.clip_id not in self.by_id:
            raise MediaError(f"{row.clip_id}.wav", "no audio stream")
        return self.by_id[row.clip_id]


@pytest.mark.parametrize(
    ("pooling", "dtype", "tolerance"),
    [("mean", "float32", 1e-5), ("attentive", "float32", 1e-5), ("attentive", "float16", 5e-3)],
)
def test_training_from_the_feature_cache_gives_the_embeddings_of_running_the_encoder(
    tiny_encoders, tmp_path, pooling, dtype, tolerance
):
    """Per-layer means (mean pooling) and every stored time step (attentive pooling), filled in batches of mixed
    lengths, batched by the training collate: the readout of the stored arrays equals the encoder run on each clip."""
    from cremad_lit.data.dataset import collate_skipping_bad
    from cremad_lit.data.encoder_cache import EncoderFeatureCache, audio_storage, read_entry

    encoder = SpeechEncoder(
        pretrained_dir=str(tiny_encoders["wav2vec2"]), pooling=pooling, feature_cache_dtype=dtype
    ).eval()
    torch.manual_seed(1)
    if encoder.pool is not None:  # a trained-looking attention, not the near-uniform initial one
        for parameter in encoder.pool.parameters():
            parameter.data.normal_(0, 1.0)
    encoder.layer_weights.data.normal_(0, 1.0)
    lengths = [24000, 9000, 17000, 30000, 4000]
    waveforms = [torch.randn(n) * 0.1 for n in lengths]
    storage = audio_storage(encoder)
    assert storage == ("means" if pooling == "mean" else "steps")
    cache = EncoderFeatureCache(tmp_path, encoder, storage)
    clips = WaveformClips(waveforms)
    report = cache.fill(clips, batch_size=2)
    assert report["computed"] == report["stored"] == 5
    assert [c["clip_id"] for c in report["skipped"]] == ["broken"] and "no audio stream" in report["skipped"][
        0
    ]["reason"]
    assert not cache.entry("broken").exists() and not list(cache.dir.glob(".*.tmp"))
    assert (
        cache.fill(clips, batch_size=2)["computed"] == 0
    )  # a second fill (or a resumed one) computes nothing new
    stored = [read_entry(cache.entry(f"clip{i}")) for i in range(5)]
    assert all(a.dtype == np.dtype(dtype) for a in stored)
    if storage == "steps":  # only each clip's valid steps: 50 per second
        assert [a.shape[0] for a in stored] == [74, 27, 52, 93, 12] and stored[0].shape[1:] == (3, 32)
    batch = collate_skipping_bad(
        [
            {"label": 0, "clip_id": f"clip{i}", "audio_features": torch.from_numpy(a).float()}
            for i, a in enumerate(stored)
        ]
    )
    with torch.no_grad():
        cached = encoder.readout_cached(batch["audio_features"], batch.get("audio_features_lengths"))
        direct = torch.cat([encoder(w[None], torch.tensor([len(w)])) for w in waveforms])
    assert torch.allclose(cached, direct, atol=tolerance, rtol=tolerance)
    # Other storage or weights never share the folder.
    assert EncoderFeatureCache(tmp_path, encoder, "means" if storage == "steps" else "steps").dir != cache.dir
    # A byte changed inside a stored array is found by its checksum on load: the entry is removed, recomputed by the
    # next fill, and reads back as it was.
    entry = cache.entry("clip0")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_entry(entry)
    from cremad_lit.data.dataset import ClipDataset
    from cremad_lit.data.media import MediaError

    reader = ClipDataset.__new__(ClipDataset)
    reader.cached_features = {"audio": cache.dir}
    row = clips.clips.iloc[0]
    with pytest.raises(MediaError, match="damaged"):
        reader.cached_feature(row, "audio")
    assert not entry.exists() and cache.fill(clips, batch_size=2)["computed"] == 1
    assert np.allclose(read_entry(entry), stored[0], atol=tolerance)  # computed alone, not in a padded batch


@pytest.mark.slow
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
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "hf download microsoft/wavlm-base-plus --local-dir" in result.stderr
    assert "model.audio_backbone.pretrained_dir=" in result.stderr
    # A timm backbone's ImageNet weights, offline: one line with the ways out, not Hydra's wrapped hub error.
    image = run_cli(
        "train.py",
        "model=effnet_lstm",
        "data=ravdess",
        *common(root, tmp_path),
        *CPU,
        check=False,
        env=OFFLINE,
    )
    last = image.stderr.strip().splitlines()[-1]
    assert image.returncode == 1 and "Traceback" not in image.stderr
    assert last.startswith("error: cannot download the pretrained weights of efficientnet_b0")
    assert "pretrained_file=" in last and "pretrained_dir=" in last and "pretrained=false" in last


def encoder_weights(state_dict: dict) -> dict:
    prefix = "net.audio_backbone.model."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def evaluate_like_training(checkpoint: str, train_dir: Path, eval_dir: Path) -> pd.DataFrame:
    """evaluate.py on the checkpoint alone (the encoders run on the media); its test probabilities, asserted equal
    (1e-5) to those the training run's test wrote, read from the feature caches."""
    run_cli("evaluate.py", f"ckpt_path={checkpoint}", f"hydra.run.dir={eval_dir}", env=OFFLINE)
    columns = [f"p_{e}" for e in EMOTIONS]
    from_cache = pd.read_csv(train_dir / "predictions.csv").set_index("clip_id")[columns].sort_index()
    end_to_end = pd.read_csv(eval_dir / "predictions.csv").set_index("clip_id")[columns].sort_index()
    assert list(end_to_end.index) == list(from_cache.index)
    assert np.allclose(end_to_end.to_numpy(), from_cache.to_numpy(), atol=1e-5)
    return end_to_end


@pytest.mark.slow
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
    info = json.loads((tmp_path / "train" / "run_info.json").read_text())["encoder_cache"]["audio"]
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
    again = json.loads((tmp_path / "again" / "run_info.json").read_text())["encoder_cache"]["audio"]
    assert again["computed"] == 0 and again["stored"] == 264 and again["dir"] == info["dir"]

    # The checkpoint alone (weights folder gone, hub offline) runs the encoder on the raw audio.
    weights.rename(tmp_path / "moved")
    end_to_end = evaluate_like_training(metrics["checkpoint"], tmp_path / "train", tmp_path / "eval")
    assert len(end_to_end) == 88
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_frozen_video_and_attentive_speech_encoders_train_from_their_caches_as_if_they_ran(
    synthetic_root, tmp_path
):
    """Audio-visual on real decoded flv + wav clips: a frozen video backbone (per-frame features stored) and a frozen
    speech encoder with attentive pooling (every time step stored) train from their caches, and evaluate.py, which
    runs both encoders on the media from the checkpoint alone, gives the test probabilities training read from them."""
    from cremad_lit.data.encoder_cache import fingerprint
    from cremad_lit.models.speech_encoders import tiny_encoder_folder
    from cremad_lit.predictors import load_checkpoint, model_from_checkpoint
    from tests.conftest import train_args

    # Its own folder: another test moves the shared tiny WavLM's folder away to show checkpoints do not need it.
    weights = tiny_encoder_folder(tmp_path / "wavlm", "wavlm")
    args = train_args(
        synthetic_root,
        tmp_path,
        "model/backbone@model.audio_backbone=wavlm_base_plus",
        f"model.audio_backbone.pretrained_dir={weights}",
        "model.audio_backbone.pooling=attentive",
        "model.video_backbone.freeze=true",
        "data.augment.enabled=false",
        "trainer.max_epochs=2",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'train'}",
    )
    run_cli(*args, env=OFFLINE)
    caches = json.loads((tmp_path / "train" / "run_info.json").read_text())["encoder_cache"]
    assert caches["audio"]["storage"] == "steps" and caches["video"]["storage"] == "frames"
    assert caches["audio"]["computed"] == caches["video"]["computed"] == 96
    assert caches["audio"]["dir"] != caches["video"]["dir"]
    from cremad_lit.data.encoder_cache import read_entry

    frames = read_entry(next(Path(caches["video"]["dir"]).glob("*.npz")))
    assert frames.shape[0] == 2  # one embedding per sampled frame
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    module, _ = model_from_checkpoint(load_checkpoint(metrics["checkpoint"]))
    # Frozen: the trained video backbone (buffers included) still hashes to the cache it filled before training.
    video = module.net.video_backbone
    assert not any(p.requires_grad for p in video.model.parameters())
    assert Path(caches["video"]["dir"]).name == f"encoder-{fingerprint(video, 'frames', 'float32')}"

    assert len(evaluate_like_training(metrics["checkpoint"], tmp_path / "train", tmp_path / "eval")) > 0


def test_a_frozen_video_backbone_runs_in_the_loop_when_training_changes_its_frames():
    from cremad_lit.data.augment import Augment
    from cremad_lit.data.encoder_cache import video_storage
    from cremad_lit.models.backbones import Backbone

    frozen = Backbone("test_efficientnet", pretrained=False, freeze=True, input_size=32)
    frozen.train()
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.parameters())
    assert video_storage(frozen, None, frame_mixup=False) == "frames"
    assert video_storage(frozen, Augment(hflip=0.0, crop_scale=1.0), frame_mixup=False) == "frames"
    assert video_storage(frozen, Augment(), frame_mixup=False) is None  # flips and crops
    assert video_storage(frozen, None, frame_mixup=True) is None
    trained = Backbone("test_efficientnet", pretrained=False, input_size=32)
    assert video_storage(trained, None, frame_mixup=False) is None
    assert trained.train().model.training and all(p.requires_grad for p in trained.parameters())


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
        net = build_net(model_cfg, EMOTIONS, record=True).eval()
        spec = net.frame_input_spec()
        model_cfg.video_backbone.pretrained = False
        (tmp_path / folder).rename(tmp_path / f"{folder}-gone")
        rebuilt = instantiate(model_cfg, num_classes=len(EMOTIONS))
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
