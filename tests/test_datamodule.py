"""DataModule: batch contract, modalities, cache vs on-the-fly equality, workers, class weights, split file."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from cremad_lit.data.datamodule import EmotionDataModule
from cremad_lit.data.labels import EMOTIONS

PREP = {"frames": 3, "image_size": 32}


def make(root, tmp_path, **kwargs):
    options = dict(
        cache_dir=str(tmp_path / "cache"), batch_size=4, output_dir=str(tmp_path / "run"), split={"seed": 0}
    )
    options.update(kwargs)
    datamodule = EmotionDataModule.from_config(dict(root=str(root), preprocessing=PREP, **options))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_batch_contract_and_split_file(synthetic_root, tmp_path):
    datamodule = make(
        synthetic_root, tmp_path, frame_mean=(0.485, 0.456, 0.406), frame_std=(0.229, 0.224, 0.225)
    )
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["frames"].shape == (4, 3, 3, 32, 32) and batch["frames"].dtype == torch.float32
    assert batch["mel"].shape == (4, 1, 64, 128) and batch["mel"].dtype == torch.float32
    assert batch["label"].dtype == torch.long and len(batch["clip_id"]) == 4
    assert -3 < float(batch["frames"].mean()) < 3 and -3 < float(batch["mel"].mean()) < 3
    saved = pd.read_csv(tmp_path / "run" / "split.csv")
    assert set(saved["split"]) == {"train", "val", "test"} and saved["actor_id"].is_unique
    for name in ("train", "val", "test"):
        actors = set(datamodule.datasets[name].clips["actor_id"])
        assert actors == set(saved.loc[saved["split"] == name, "actor_id"])
    again = make(synthetic_root, tmp_path / "again", split={"file": str(tmp_path / "run" / "split.csv")})
    assert again.assignment().table.to_dict("records") == datamodule.assignment().table.to_dict("records")


@pytest.mark.parametrize("modalities", [("audio",), ("video",)])
def test_unimodal_batches_skip_the_other_modality(synthetic_root, tmp_path, modalities):
    datamodule = make(synthetic_root, tmp_path, modalities=modalities, cache="off")
    batch = next(iter(datamodule.val_dataloader()))
    assert ("frames" in batch) == ("video" in modalities) and ("mel" in batch) == ("audio" in modalities)


def test_cache_and_on_the_fly_give_the_same_tensors(synthetic_root, tmp_path):
    cached = make(synthetic_root, tmp_path, cache="auto")
    direct = make(synthetic_root, tmp_path, cache="off")
    a, b = cached.datasets["test"][0], direct.datasets["test"][0]
    assert (
        a["clip_id"] == b["clip_id"]
        and torch.equal(a["frames"], b["frames"])
        and torch.equal(a["mel"], b["mel"])
    )


def test_workers_and_persistent_workers(synthetic_root, tmp_path, recwarn):
    datamodule = make(synthetic_root, tmp_path, num_workers=2, persistent_workers=True, pin_memory=True)
    labels = torch.cat([batch["label"] for batch in datamodule.train_dataloader()])
    assert len(labels) == len(datamodule.datasets["train"])
    # pin_memory=true (the default) pins only where there is an accelerator: torch warns on every loader without one.
    assert datamodule.loader_options["pin_memory"] == torch.accelerator.is_available()
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]


def test_require_cache_fails_clearly_when_not_prepared(synthetic_root, tmp_path):
    datamodule = EmotionDataModule.from_config(
        dict(root=str(synthetic_root), preprocessing=PREP, cache="require", cache_dir=str(tmp_path / "empty"))
    )
    with pytest.raises(FileNotFoundError, match="cremad_lit prepare"):
        datamodule.setup("fit")


def test_class_weights_follow_training_counts(synthetic_root, tmp_path):
    datamodule = make(synthetic_root, tmp_path, cache="off")
    weights = datamodule.class_weights()
    assert weights.shape == (len(EMOTIONS),)
    assert weights[EMOTIONS.index("NEU")] > weights[EMOTIONS.index("ANG")]  # IEO has NEU only at XX: rarer
    assert torch.isclose(weights.mean(), torch.tensor(1.0), atol=0.2)


def test_augmentation_changes_training_samples_only(synthetic_root, tmp_path):
    datamodule = make(
        synthetic_root,
        tmp_path,
        augment={"enabled": True, "hflip": 1.0, "crop_scale": 1.0, "freq_mask": 0, "time_mask": 0},
    )
    plain = make(synthetic_root, tmp_path / "plain")
    flipped, original = datamodule.datasets["train"][0], plain.datasets["train"][0]
    assert torch.equal(flipped["frames"], original["frames"].flip(-1))
    assert torch.equal(datamodule.datasets["val"][0]["frames"], plain.datasets["val"][0]["frames"])


def test_bad_options(synthetic_root):
    with pytest.raises(ValueError, match="modalities"):
        EmotionDataModule.from_config(
            dict(root=str(synthetic_root), preprocessing=PREP, modalities=("smell",))
        )
    with pytest.raises(ValueError, match="cache"):
        EmotionDataModule.from_config(dict(root=str(synthetic_root), preprocessing=PREP, cache="sometimes"))


def test_voice_augmentations_stretch_bands_and_change_loudness():
    from cremad_lit.data.augment import Augment, stretch
    from cremad_lit.data.features import MEL_DB_STD

    mel = torch.zeros(1, 64, 128)
    mel[:, 20] = 1.0  # one Mel band lit
    higher = stretch(mel, 1.2, 1.0)  # a higher voice: the band moves up by about 20%
    assert higher.shape == mel.shape and int(higher[0, :, 64].argmax()) == 24
    faster = stretch(torch.arange(128.0).expand(1, 64, 128), 1.0, 0.5)  # half the frames, the end padded
    assert faster.shape == (1, 64, 128) and faster[0, 0, -1] == faster[0, 0, 63] and faster[0, 0, 10] > 15
    louder = Augment(freq_mask=0, time_mask=0, gain_db=6).mel(mel)
    offset = louder - mel
    assert torch.allclose(offset, offset[0, 0, 0]) and 0 < abs(float(offset[0, 0, 0])) <= 6 / MEL_DB_STD


# Orders in which a command might call the DataModule's public methods (Lightning calls prepare_data, then setup).
ORDERS = [
    ("prepare_data", "setup", "class_weights", "training_speakers"),
    ("class_weights", "training_speakers", "setup", "prepare_data"),
    ("training_speakers", "speaker_speech", "class_weights", "setup"),
    ("catalog", "tested_on", "setup"),
    ("setup", "prepare_data"),
]


def test_public_methods_in_any_order_give_the_same_data(synthetic_root, tmp_path):
    """The net's facts arrive once, at construction (ModelInputs, a frozen video encoder among them): whichever
    public method comes first, the DataModule sets up the same datasets, the same class weights and speakers, and
    the same feature cache, filled by the first and read by every later one."""
    from cremad_lit.data.datamodule import ModelInputs
    from cremad_lit.models.backbones import Backbone

    torch.manual_seed(0)
    frozen = Backbone("test_efficientnet", pretrained=False, freeze=True, input_size=32).eval()
    inputs = ModelInputs(image_size=32, mean=(0.4,) * 3, std=(0.2,) * 3, frozen={"video": frozen})
    seen = []
    for order in ORDERS:
        datamodule = EmotionDataModule.from_config(
            dict(
                root=str(synthetic_root),
                preprocessing={"frames": 2, "image_size": 64},
                cache_dir=str(tmp_path / "cache"),
                batch_size=4,
                split={"seed": 0},
            ),
            inputs,
        )
        for method in order:
            getattr(datamodule, method)()
        assert datamodule.prep.image_size == 32  # the model's frame size, not the config's
        cached = datamodule.cached_features
        seen.append(
            {
                "splits": {k: list(d.clips["clip_id"]) for k, d in datamodule.datasets.items()},
                "weights": datamodule.class_weights().tolist(),
                "speakers": datamodule.training_speakers(),
                "cached": cached,
                "read": [
                    {m: str(p) for m, p in d.cached_features.items()} for d in datamodule.datasets.values()
                ],
                "stored": datamodule.encoder_reports["video"]["stored"],
            }
        )
    assert seen[0]["cached"].keys() == {"video"} and seen[0]["read"] == [seen[0]["cached"]] * 4
    assert all(facts == seen[0] for facts in seen[1:])
