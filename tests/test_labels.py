"""Label sets from the data (`data.classes`): RAVDESS in eight classes end to end, a manifest with four classes of its
own, and an 8-class checkpoint scored on a six-class corpus through the class names."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.labels import EMOTIONS, Rejected, emotion_code, resolve_classes
from tests.conftest import TINY, common, ravdess_emotion, run_cli
from tests.test_corpora import link_actors

EIGHT = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD", "CAL", "SUR"]
AUDIO_TINY = [*TINY, "data.modalities=[audio]", "logger=none", "trainer.max_epochs=1"]


def test_class_lists_come_from_the_data():
    assert resolve_classes(["NEU", "CAL", "ANG", "SUR"], "default") == EMOTIONS  # every run before 0.4
    assert resolve_classes(["SUR", "NEU", "CAL", "ANG"], "all") == ("ANG", "NEU", "CAL", "SUR")
    assert resolve_classes(["x"], ["sad", "Calm", "angry"]) == ("SAD", "CAL", "ANG")
    assert resolve_classes(["frustrated", "HAP"], "all") == ("HAP", "frustrated")
    with pytest.raises(ValueError, match="two different"):
        resolve_classes([], ["anger", "angry"])
    assert (
        emotion_code("surprised", keep_unknown=True) == "SUR"
        and emotion_code("Bored", keep_unknown=True) == "BOR"
    )
    with pytest.raises(Rejected, match="data.classes=all"):
        emotion_code("surprised")  # the six only, unless the run asks for the corpus's own classes


def test_ravdess_all_eight_and_a_chosen_list(ravdess_dir):
    every = build_catalog(ravdess_dir, "ravdess", classes="all")
    assert list(every.attrs["classes"]) == EIGHT and len(every) == 1080
    assert every["emotion"].value_counts().to_dict() == {**{e: 144 for e in EIGHT if e != "NEU"}, "NEU": 72}
    picked = build_catalog(ravdess_dir, "ravdess", classes=["calm", "neutral"])
    assert list(picked.attrs["classes"]) == ["CAL", "NEU"] and len(picked) == 216
    assert sum("not in data.classes" in r["reason"] for r in picked.attrs["rejected"]) == 1080 - 216
    assert (
        len(build_catalog(ravdess_dir, "ravdess")) == 792
    )  # the default: the six shared emotions, as before


@pytest.fixture(scope="module")
def eight_class_run(ravdess_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eight")
    root = link_actors(ravdess_dir, tmp / "ravdess", range(1, 7))
    run_cli(
        "train.py",
        *common(root, tmp),
        "data=ravdess",
        "data.classes=all",
        *AUDIO_TINY,
        "split.folds=3",
        f"hydra.run.dir={tmp / 'train'}",
    )
    return tmp, root


@pytest.mark.slow
def test_eight_class_training_evaluate_and_predict(eight_class_run, ravdess_dir):
    tmp, root = eight_class_run
    metrics = json.loads((tmp / "train" / "metrics.json").read_text())
    assert metrics["classes"] == EIGHT and list(metrics["per_class_f1"]) == EIGHT
    assert len(metrics["confusion_matrix"]) == 8 and metrics["n_test"] == 60 * len(metrics["test_actors"])
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["cremad_lit"]["emotions"] == EIGHT
    assert checkpoint["cremad_lit"]["config"]["data"]["classes"] == EIGHT
    head = [v for k, v in checkpoint["state_dict"].items() if k.endswith("classifier.weight")]
    assert head and head[0].shape[0] == 8
    predictions = pd.read_csv(tmp / "train" / "predictions.csv")
    assert [c for c in predictions.columns if c.startswith("p_")] == [f"p_{e}" for e in EIGHT]
    assert set(predictions["label"]) == set(EIGHT)

    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp / 'eval'}")
    again = json.loads((tmp / "eval" / "metrics.json").read_text())
    assert again["classes"] == EIGHT and again["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert "class_mapping" not in again

    calm = sorted((ravdess_dir / "Actor_07").glob("03-01-02-*.wav"))[:2]
    assert all(ravdess_emotion(w) == "calm" for w in calm)
    result = run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={metrics['checkpoint']}",
        f"inputs=[{','.join(map(str, calm))}]",
        f"hydra.run.dir={tmp / 'predict'}",
    )
    table = pd.read_csv(tmp / "predict" / "predictions.csv")
    assert list(table.columns[4:]) == EIGHT and set(table["prediction"]) <= set(EIGHT)
    assert table[EIGHT].sum(axis=1).round(4).eq(1).all() and "CAL" in result.stdout


@pytest.mark.slow
def test_eight_class_checkpoint_on_a_six_class_corpus(eight_class_run, synthetic_root):
    """The generated CREMA-D has the six: the model's CAL and SUR are matched by name to nothing, the metrics are on
    the six shared classes, and metrics.json says so."""
    tmp, _ = eight_class_run
    metrics = json.loads((tmp / "train" / "metrics.json").read_text())
    run_cli(
        "evaluate.py",
        f"ckpt_path={metrics['checkpoint']}",
        "data=cremad",
        f"data.root={synthetic_root}",
        f"paths.cache_dir={tmp / 'cache'}",
        "subset=all",
        f"hydra.run.dir={tmp / 'cross'}",
    )
    cross = json.loads((tmp / "cross" / "metrics.json").read_text())
    assert cross["cross_corpus"] and cross["n_test"] == 96
    assert cross["classes"] == list(EMOTIONS) and cross["class_mapping"]["scored_on"] == list(EMOTIONS)
    assert cross["class_mapping"]["model_classes"] == EIGHT
    predictions = pd.read_csv(tmp / "cross" / "predictions.csv")
    assert set(predictions["pred"]) <= set(EMOTIONS) and len(cross["confusion_matrix"]) == 6
    assert predictions[[f"p_{e}" for e in EMOTIONS]].sum(axis=1).round(4).eq(1).all()


@pytest.mark.slow
def test_a_manifest_with_four_classes_of_its_own_trains(ravdess_dir, tmp_path):
    """Labels as a corpus writes them (IEMOCAP-style ang/hap/neu plus one of its own, `frustrated`)."""
    own = {"angry": "ang", "happy": "hap", "neutral": "neu", "sad": "frustrated"}
    rows = [
        {"audio_path": str(wav), "speaker": f"s{wav.stem[-2:]}", "emotion": own[ravdess_emotion(wav)]}
        for actor in range(1, 7)
        for wav in sorted((ravdess_dir / f"Actor_{actor:02d}").glob("*.wav"))
        if ravdess_emotion(wav) in own
    ]
    manifest = tmp_path / "clips.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    run_cli(
        "train.py",
        *common(tmp_path, tmp_path),
        "data=manifest",
        f"data.manifest={manifest}",
        "data.classes=all",
        "data.speaker_norm=standard",  # speaker statistics over every clip, whatever its class
        *AUDIO_TINY,
        "split.folds=3",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["ANG", "HAP", "NEU", "frustrated"] and len(metrics["confusion_matrix"]) == 4
    assert 0 <= metrics["uar"] <= 1 and metrics["n_test"] == 28 * len(metrics["test_actors"])


RELEASE_0_3 = Path(__file__).parent / "fixtures" / "release-0.3.0"


@pytest.mark.slow
def test_a_release_0_3_checkpoint_still_evaluates(ravdess_dir, tmp_path):
    """A checkpoint 0.3.0 wrote (no data.classes in its config) evaluates with today's code: the six classes in their
    order, the same test actors, and 0.3.0's own probabilities for each of its 88 test clips (see the fixture's README)."""
    old = json.loads((RELEASE_0_3 / "metrics.json").read_text())
    checkpoint = torch.load(RELEASE_0_3 / "model.ckpt", map_location="cpu", weights_only=True)
    assert "classes" not in checkpoint["cremad_lit"]["config"]["data"] and old["version"] == "0.3.0"
    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 7))
    run_cli(
        "evaluate.py",
        f"ckpt_path={RELEASE_0_3 / 'model.ckpt'}",
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.num_workers=0",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    now = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert now["classes"] == list(EMOTIONS) and now["actors"] == old["test_actors"]
    assert now["confusion_matrix"] == old["confusion_matrix"] and now["war"] == pytest.approx(old["accuracy"])
    columns = [f"p_{e}" for e in EMOTIONS]
    then = pd.read_csv(RELEASE_0_3 / "predictions.csv").set_index("clip_id")[columns]
    again = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("clip_id")[columns]
    assert len(again) == 88 and sorted(again.index) == sorted(then.index)
    assert (again.loc[then.index] - then).abs().to_numpy().max() < 1e-5
