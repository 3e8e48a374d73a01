"""docs/extending.md, shown working: a backbone, a fusion head, a corpus adapter, a training callback and an objective
added through config alone (tests/toys.py and tests/fixtures/toy_conf/, found by `hydra.searchpath`), nothing in cremad_lit changed.

    .venv/bin/python -m pytest tests/test_extending.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.pipeline import build_net
from tests.conftest import REPO, TINY, run_cli, six_emotion_wavs, train_args
from tests.toys import CentreLoss, GradientNorm, ProductFusion, ToyCNN

TOY_CONF = REPO / "tests" / "fixtures" / "toy_conf"
PLUGIN = [
    f"hydra.searchpath=[file://{TOY_CONF}]",
    "data=toy_folder",
    "model/backbone@model.audio_backbone=toy_cnn",
    "model/fusion=toy_product",
    "callbacks=[default,grad_norm]",
    "objectives=[toy_centre]",
]


@pytest.fixture(scope="module")
def toy_folder(ravdess_dir, tmp_path_factory) -> Path:
    """Six RAVDESS speakers' clips, renamed the toy corpus's way (`<speaker>_<emotion name>_<take>.wav`)."""
    from tests.conftest import ravdess_emotion

    folder = tmp_path_factory.mktemp("toy-corpus")
    for actor in range(1, 7):
        taken: dict[str, int] = {}
        for wav in six_emotion_wavs(sorted((ravdess_dir / f"Actor_{actor:02d}").glob("*.wav"))):
            emotion = ravdess_emotion(wav)
            if taken.get(emotion, 0) < 2:  # two takes of each emotion
                (folder / f"spk{actor}_{emotion}_{taken.get(emotion, 0)}.wav").symlink_to(wav)
                taken[emotion] = taken.get(emotion, 0) + 1
    (folder / "notes.wav").write_bytes(b"")  # not the corpus's naming: rejected with its reason
    return folder


def composed(root: Path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*TINY, *PLUGIN, f"data.root={root}"])


def test_the_toy_parts_compose_and_build(toy_folder):
    cfg = composed(toy_folder)
    net = build_net(cfg.model, EMOTIONS)
    assert isinstance(net.audio_backbone, ToyCNN) and isinstance(net.fusion, ProductFusion)
    logits = net({"mel": torch.randn(2, 1, 64, 128)})
    assert logits.shape == (2, 6)
    assert isinstance(instantiate(cfg.callbacks.grad_norm), GradientNorm)
    assert cfg.callbacks.model_checkpoint is not None  # added to the default callbacks, not in their place


def test_the_toy_objective_adds_its_term_and_declares_what_it_needs(toy_folder):
    from cremad_lit.module import EmotionModule
    from cremad_lit.objectives import Mixup

    cfg = composed(toy_folder)
    net = build_net(cfg.model, EMOTIONS)
    objectives = {name: instantiate(c) for name, c in cfg.objectives.items()}
    assert list(objectives) == ["toy_centre"] and isinstance(objectives["toy_centre"], CentreLoss)
    module = EmotionModule(net, optimizer=None, classes=EMOTIONS, objectives=objectives)
    module.log = lambda *args, **kwargs: None
    centre = module.objectives["toy_centre"]
    with torch.no_grad():
        centre.centres.normal_()
    batch = {"mel": torch.randn(4, 1, 64, 128), "label": torch.tensor([0, 1, 2, 0])}
    torch.manual_seed(0)
    loss = module.training_step(batch, 0)
    torch.manual_seed(0)
    embeddings = net.embed(batch)
    fused = torch.cat(embeddings, dim=1)
    by_hand = module.criterion(net.fusion(embeddings), batch["label"]) + 0.01 * (
        (fused - centre.centres[batch["label"]]).pow(2).sum(dim=1).mean()
    )
    assert torch.allclose(loss, by_hand)
    # its centres train with the network (and are checkpointed), and what it needs is checked for it
    assert any(p is centre.centres for p in module.objectives.parameters())
    assert "objectives.toy_centre.centres" in module.state_dict()
    with pytest.raises(ValueError, match="toy_centre needs each clip's own embeddings, but mixup blends"):
        EmotionModule(net, None, classes=EMOTIONS, objectives={**objectives, "mixup": Mixup(0.2)})


def test_the_toy_adapter_reads_its_corpus(toy_folder):
    clips = build_catalog(toy_folder, "tests.toys")
    assert len(clips) == 72 and clips["actor_id"].nunique() == 6 and set(clips["emotion"]) == set(EMOTIONS)
    assert [r["reason"] for r in clips.attrs["rejected"]] == ["name is not <speaker>_<emotion>_<take>"]
    with pytest.raises(ValueError, match="no scan"):
        build_catalog(toy_folder, "tests.conftest")


@pytest.mark.slow
def test_train_and_evaluate_with_every_toy_part(toy_folder, tmp_path):
    run = tmp_path / "run"
    run_cli(
        *train_args(
            toy_folder, tmp_path, *PLUGIN, "logger=csv", "trainer.max_epochs=2", f"hydra.run.dir={run}"
        )
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "tests.toys" and metrics["n_test"] > 0
    logged = pd.concat(pd.read_csv(f) for f in run.glob("csv/**/metrics.csv"))
    assert logged["train/grad_norm"].dropna().gt(0).sum() == 2  # one value per epoch, from the callback
    assert logged["train/centre_loss"].dropna().gt(0).sum() == 2  # the objective's term, logged per epoch
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    assert (
        "objectives.toy_centre.centres" in checkpoint["state_dict"]
    )  # resumes with it; evaluate leaves it out
    stored = checkpoint["cremad_lit"]["config"]["model"]
    assert stored["audio_backbone"]["_target_"] == "tests.toys.ToyCNN"
    assert stored["fusion"]["_target_"] == "tests.toys.ProductFusion"
    # The checkpoint alone rebuilds the toy net: evaluate.py gives the run's test numbers again.
    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}")
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        again["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
        and again["n_test"] == metrics["n_test"]
    )


@pytest.mark.slow
def test_a_frozen_video_encoder_of_ones_own_prepares_caches_its_features_and_evaluates(
    synthetic_root, tmp_path
):
    """The encoder contract (models/encoder.py) for the video branch: `prepare` reads the toy's input spec without a
    model (its 24 px frames key the cache), training fills and reads its frozen feature cache, evaluate rebuilds it."""
    from tests.conftest import common

    toy = [
        f"hydra.searchpath=[file://{TOY_CONF}]",
        "model=tiny",
        "model/backbone@model.video_backbone=toy_cnn",
        "~model.video_backbone.input_size",  # the timm option model=tiny sets: the toy has image_size instead
        "model.video_backbone.image_size=24",
        "model.video_backbone.freeze=true",
        "data.augment.enabled=false",
        "data.preprocessing.frames=2",
        "data.num_workers=0",
        "data.prepare_workers=0",
        "data.batch_size=8",
    ]
    run_cli(
        "-m",
        "cremad_lit",
        "prepare",
        *common(synthetic_root, tmp_path),
        *toy,
        f"hydra.run.dir={tmp_path / 'prep'}",
    )
    prepared = json.loads((tmp_path / "prep" / "prepare_report.json").read_text())
    assert prepared["clips"] == 96 and prepared["decoded_now"] == 96
    run = tmp_path / "run"
    run_cli(
        "train.py",
        *common(synthetic_root, tmp_path),
        *toy,
        "trainer=cpu",
        "logger=none",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        f"hydra.run.dir={run}",
    )
    assert json.loads((run / "prepare_report.json").read_text())["decoded_now"] == 0  # prepare's cache, 24 px
    cached = json.loads((run / "run_info.json").read_text())["encoder_cache"]["video"]
    assert cached["storage"] == "frames" and cached["computed"] > 0 and cached["skipped"] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}")
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
