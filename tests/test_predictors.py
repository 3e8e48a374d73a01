"""The predictor interface and ensembles, in-process: averaging, weights, choosing weights on validation speakers.

.venv/bin/python -m pytest tests/test_predictors.py
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from cremad_lit.predictors import Network, Predictor, TestResult, load_predictor
from cremad_lit.predictors.ensemble import Ensemble, average_files, normalised_weights, weight_grid
from tests.conftest import SAMPLE_FLVS, tiny_module

CLASSES = ("ANG", "HAP")


class Fixed(Predictor):
    """A model whose probabilities are given: per clip for test(), per file for predict()."""

    def __init__(self, name: str, probs: dict[str, list[float]], labels: dict[str, int], classes=CLASSES):
        self.path, self.probs, self.labels, self.classes = name, probs, labels, tuple(classes)

    def predict(self, files, device="cpu", speaker="folder"):
        return [
            {
                "file": str(f),
                "prediction": "",
                "probabilities": dict(zip(self.classes, self.probs[str(f)], strict=True)),
            }
            for f in files
        ]

    def test(self, cfg, out_dir):
        predictions = [
            {"clip_id": c, "label": self.labels[c], "pred": int(np.argmax(p)), "probs": list(p)}
            for c, p in self.probs.items()
        ]
        return TestResult(
            path=self.path,
            config={},
            classes=list(self.classes),
            results={},
            predictions=predictions,
            corpus=None,
            assigned=None,
            same_corpus=True,
            media=dict,
        )


def test_weights_are_normalised_and_the_grid_splits_one():
    assert normalised_weights([1, 3], 2).tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="2 non-negative numbers"):
        normalised_weights([1, -1], 2)
    grid = weight_grid(3)
    assert len(grid) == 66 and all(sum(w) == pytest.approx(1) for w in grid)


def test_an_ensemble_averages_its_members_by_weight_on_the_clips_all_of_them_read(tmp_path):
    a = Fixed("a", {"c1": [0.9, 0.1], "c2": [0.2, 0.8], "c3": [0.5, 0.5]}, {"c1": 0, "c2": 1, "c3": 0})
    b = Fixed("b", {"c1": [0.3, 0.7], "c2": [0.4, 0.6]}, {"c1": 0, "c2": 1})
    cfg = OmegaConf.create({"subset": "test"})
    tested = Ensemble([a, b], [1, 3]).test(cfg, tmp_path)
    fused = {p["clip_id"]: p["probs"] for p in tested.predictions}
    assert list(fused) == ["c1", "c2"]  # c3: only one member read it
    assert fused["c1"] == pytest.approx([0.25 * 0.9 + 0.75 * 0.3, 0.25 * 0.1 + 0.75 * 0.7])
    assert tested.ensemble["weights"] == [0.25, 0.75]
    assert tested.ensemble["member_accuracy"] == [1.0, 0.5]  # on the shared clips c1, c2


def test_weights_need_shared_validation_clips(tmp_path):
    """ensemble_weights=val chooses on the members' validation speakers: fold models with none in common stop."""
    a = Fixed("a", {"c1": [0.9, 0.1]}, {"c1": 0})
    b = Fixed("b", {"c2": [0.9, 0.1]}, {"c2": 0})
    cfg = OmegaConf.create({"subset": "test", "data": {}})
    with pytest.raises(ValueError, match="share no validation clip"):
        Ensemble([a, b], "val").test(cfg, tmp_path)
    with pytest.raises(ValueError, match="no labels to choose weights"):
        Ensemble([a, b], "val").predict([])


def test_members_must_predict_the_same_classes():
    with pytest.raises(ValueError, match="different class lists"):
        Ensemble([Fixed("a", {}, {}), Fixed("b", {}, {}, classes=("SAD", "NEU"))], [1, 1])


def test_an_unreadable_file_keeps_its_error_in_the_average():
    rows = average_files(
        [[{"file": "x", "error": "no audio"}], [{"file": "x", "probabilities": {"ANG": 1.0}}]], [0.5, 0.5]
    )
    assert rows == [{"file": "x", "error": "no audio"}]


@pytest.mark.slow
def test_a_network_and_a_checkpoint_path_predict_alike(tiny_checkpoint):
    """load_predictor on a checkpoint is a Network whose predictions are its module's on the same real clip."""
    predictor = load_predictor(str(tiny_checkpoint))
    assert isinstance(predictor, Network) and len(predictor.classes) == 6
    [row] = predictor.predict([SAMPLE_FLVS[0]], speaker="file")
    assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    module, cfg = tiny_module()
    other = Network("untrained.ckpt", module, cfg).predict([SAMPLE_FLVS[0]], speaker="file")[0]
    assert (
        other["probabilities"] != row["probabilities"]
    )  # the trained weights were loaded, not a fresh net's


def test_a_sound_file_given_to_an_audio_visual_model_is_the_users_input(samples_dir, ased_dir, tmp_path):
    """A real CREMA-D WAV and a text file named .wav, given to a model that reads faces: each is that file's error,
    naming what is missing and the way out, and the environment is never blamed (no canary is decoded). A real FLAC
    (ASED) is read by an audio-only model as its WAV copy is."""
    from cremad_lit.data import canary
    from cremad_lit.data.media import read_wav
    from cremad_lit.data.synthetic import write_wav
    from cremad_lit.predictors.files import predict_files
    from tests.conftest import TINY

    wav = sorted((samples_dir / "AudioWAV").glob("*.wav"))[0]
    text = tmp_path / "notes.wav"
    text.write_text("not a recording")
    canary.forget()
    module, cfg = tiny_module(TINY)
    rows = predict_files(module, cfg, [wav, text, SAMPLE_FLVS[0]])
    for row in rows[:2]:
        assert "probabilities" not in row
        assert "has no faces" in row["error"] and "data.modalities=[audio]" in row["error"]
    assert "probabilities" in rows[2] and not canary._GOOD

    flac = sorted((ased_dir / "01Neutral").glob("*.flac"))[0]
    copy = tmp_path / "copy.wav"
    write_wav(copy, read_wav(str(flac)), 16000)
    audio, audio_cfg = tiny_module([*TINY, "data.modalities=[audio]"])
    from_flac, from_wav = predict_files(audio, audio_cfg, [flac, copy], speaker="file")
    assert from_flac["probabilities"] == pytest.approx(from_wav["probabilities"], abs=1e-5)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_file_cut_short_is_judged_and_flagged_as_partial(samples_dir, ased_dir, tmp_path, decoder):
    """A real FLV cut to a third of its bytes (its header still declares 2.2 s) and a real FLAC cut in half: each is
    predicted from what decodes, with a warning naming how much that is; the whole files carry none."""
    from cremad_lit.app import Judge, page_outputs
    from cremad_lit.predictors.files import predict_files
    from tests.conftest import TINY

    whole_flv, whole_flac = SAMPLE_FLVS[0], sorted((ased_dir / "01Neutral").glob("*.flac"))[0]
    cut_flv, cut_flac = tmp_path / "cut.flv", tmp_path / "cut.flac"
    cut_flv.write_bytes(whole_flv.read_bytes()[: whole_flv.stat().st_size // 3])
    cut_flac.write_bytes(whole_flac.read_bytes()[: whole_flac.stat().st_size // 2])
    module, cfg = tiny_module([*TINY, f"data.decoder={decoder}"])
    whole, cut = predict_files(module, cfg, [whole_flv, cut_flv], speaker="file")
    assert "warning" not in whole and "probabilities" in cut
    assert cut["warning"].startswith("partial:") and "of the 2.2" in cut["warning"]
    audio, audio_cfg = tiny_module([*TINY, "data.modalities=[audio]", f"data.decoder={decoder}"])
    whole, cut = predict_files(audio, audio_cfg, [whole_flac, cut_flac], speaker="file")
    assert "warning" not in whole and "probabilities" in cut and "its sound lasts" in cut["warning"]
    status = page_outputs(Judge(Network("net.ckpt", module, cfg)), str(cut_flv))[1]
    assert "partial:" in status


def test_another_corpus_is_read_without_the_training_corpus_lockbox(tmp_path):
    """A model trained with RAVDESS's lockbox [16, 17, 18] and evaluated on a manifest corpus must read that corpus's
    speakers 16-18 (other people with the same numbers); on its own corpus the lockbox stays shut."""
    from cremad_lit.predictors import data_settings

    stored = {
        "dataset": "ravdess",
        "root": "/data/ravdess",
        "manifest": None,
        "split": {"lockbox": [16, 17, 18]},
    }
    other = OmegaConf.create({"data": {"dataset": "manifest", "manifest": "/data/ased.csv", "root": None}})
    same = OmegaConf.create({"data": {"dataset": None, "root": None}})
    elsewhere, home = OmegaConf.create(stored), OmegaConf.create(stored)
    assert not data_settings(other, elsewhere, None, tmp_path) and elsewhere.split.lockbox is None
    assert data_settings(same, home, None, tmp_path) and list(home.split.lockbox) == [16, 17, 18]


@pytest.mark.slow
def test_evaluate_leaves_out_sound_files_for_a_model_that_reads_faces_and_flags_a_file_cut_short(
    tiny_checkpoint, tmp_path
):
    """evaluate.py with a manifest, against an audio-visual model: rows with only a real CREMA-D WAV (or a text file
    named .wav) are left out with their reason, never decoded; a real flv cut to a third is judged and flagged in
    predictions.csv; a manifest of sound files alone is one line naming it and the way out, not the environment."""
    import json

    import pandas as pd

    from tests.conftest import SAMPLES, run_cli

    cut = tmp_path / "1001_DFA_SAD_XX.flv"
    data = SAMPLE_FLVS[5].read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    text = tmp_path / "notes.wav"
    text.write_text("not a recording")
    wav = SAMPLES / "AudioWAV" / "1002_DFA_ANG_XX.wav"
    rows = [
        {"video_path": str(f), "speaker": "1001", "emotion": f.stem.split("_")[2]} for f in SAMPLE_FLVS[:4]
    ]
    rows += [
        {"video_path": str(cut), "speaker": "1001", "emotion": "SAD"},
        {"audio_path": str(wav), "speaker": "1002", "emotion": "ANG"},
        {"audio_path": str(text), "speaker": "1002", "emotion": "HAP"},
    ]
    manifest = tmp_path / "clips.csv"
    pd.DataFrame(rows).fillna("").to_csv(manifest, index=False)
    run = tmp_path / "eval"
    common = [
        f"ckpt_path={tiny_checkpoint}",
        "data=manifest",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "subset=all",
    ]
    run_cli("evaluate.py", *common, f"data.manifest={manifest}", f"hydra.run.dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 5 and metrics["partial_clips"] == 1
    predictions = pd.read_csv(run / "predictions.csv").set_index("clip_id")
    assert predictions["warning"].notna().sum() == 1
    assert "cut short" in predictions.loc[cut.stem, "warning"]
    log = (run / "evaluate.log").read_text() if (run / "evaluate.log").is_file() else ""
    assert "environment is broken" not in log

    sounds = tmp_path / "sounds.csv"
    pd.DataFrame(rows[-2:]).to_csv(sounds, index=False)
    alone = run_cli(
        "evaluate.py", *common, f"data.manifest={sounds}", f"hydra.run.dir={tmp_path / 'x'}", check=False
    )
    assert alone.returncode != 0 and "environment is broken" not in alone.stderr
    [line] = [x for x in alone.stderr.splitlines() if x.startswith("error:")]
    assert str(sounds) in line and "no video" in line and "data.modalities=[audio]" in line
