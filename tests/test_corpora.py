"""Corpora beyond CREMA-D's video layout, on the real RAVDESS speech in ../shared: adapters, audio-only CREMA-D,
48 kHz / stereo decoding, manifests with bad rows, and the clip-split flag."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cremad_lit.data.catalog import build_catalog, emotion_code
from cremad_lit.data.features import Preprocessing, extract_clip
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.data.media import read_wav
from cremad_lit.data.splits import make_split
from cremad_lit.reporting import collect_runs
from tests.conftest import (
    RAVDESS_48K,
    TINY,
    common,
    on_six_actors,
    one_speaker_folder,
    run_cli,
    six_emotion_wavs,
    write_manifest,
)

TINY_AUDIO = [*TINY, "data.modalities=[audio]", "trainer.max_epochs=1"]


def test_ravdess_eda_counts_the_real_clips(ravdess_dir, tmp_path):
    run_cli(
        "-m",
        "cremad_lit",
        "eda",
        "data=ravdess",
        f"data.root={ravdess_dir}",
        f"hydra.run.dir={tmp_path / 'eda'}",
    )
    summary = json.loads((tmp_path / "eda" / "summary.json").read_text())
    assert summary["n_clips"] == 792 and summary["n_actors"] == 18
    assert summary["counts"]["emotion"] == {
        "ANG": 144,
        "DIS": 144,
        "FEA": 144,
        "HAP": 144,
        "NEU": 72,
        "SAD": 144,
    }
    assert summary["counts"]["gender"] == {"female": 396, "male": 396}
    assert summary["counts"]["intensity"] == {"normal": 432, "strong": 360}
    assert (tmp_path / "eda" / "emotion_pie.png").is_file()


def channels(path) -> int:
    with wave.open(str(path)) as handle:
        return handle.getnchannels()


def test_ravdess_48k_stereo_and_left_out_emotions(ravdess_dir, tmp_path):
    clips = build_catalog(RAVDESS_48K, "ravdess")
    assert list(clips["clip_id"]) == ["01-05-02-01-01-01"] and clips.loc[0, "emotion"] == "ANG"
    assert sorted(r["label"] for r in clips.attrs["rejected"]) == ["calm", "calm", "surprised"]
    # The EDA counts what the label map left out.
    run_cli(
        "-m",
        "cremad_lit",
        "eda",
        "data=ravdess",
        f"data.root={RAVDESS_48K}",
        f"hydra.run.dir={tmp_path / 'eda'}",
    )
    summary = json.loads((tmp_path / "eda" / "summary.json").read_text())
    assert summary["left_out"]["by_label"] == {"calm": 2, "surprised": 1}
    # calm can be mapped instead of dropped
    mapped = build_catalog(RAVDESS_48K, "ravdess", label_map={"calm": "NEU", "surprised": None})
    assert sorted(mapped["emotion"]) == ["ANG", "NEU", "NEU"]

    native = RAVDESS_48K / "Actor_01" / "03-01-05-02-01-01-01.wav"
    with wave.open(str(native)) as handle:
        assert handle.getframerate() == 48000
    stereo = [p for p in RAVDESS_48K.rglob("*.wav") if channels(p) == 2]
    assert len(stereo) == 3
    for path in stereo:
        with wave.open(str(path)) as handle:
            seconds = handle.getnframes() / handle.getframerate()
        audio = read_wav(str(path))
        assert audio.ndim == 1 and abs(len(audio) - seconds * 16000) <= 2
    # The 48 kHz original decodes to the same signal as the shared 16 kHz copy of it.
    ours = read_wav(str(native))
    theirs = read_wav(str(ravdess_dir / "Actor_01" / "03-01-05-02-01-01-01.wav"))
    n = min(len(ours), len(theirs))
    assert abs(len(ours) - len(theirs)) <= 2
    assert np.corrcoef(ours[:n], theirs[:n])[0, 1] > 0.99
    sample = extract_clip("", str(native), Preprocessing())
    assert set(sample) == {"mel", "waveform", "info"} and sample["mel"].shape == (1, 64, 128)
    assert sample["waveform"].dtype == np.int16 and abs(len(sample["waveform"]) - len(ours)) <= 2


def link_actors(ravdess_dir, root, actors):
    """A RAVDESS root holding some of the shared actors (symlinked folders, as users link datasets in)."""
    root.mkdir(parents=True)
    for actor in actors:
        (root / f"Actor_{actor:02d}").symlink_to(ravdess_dir / f"Actor_{actor:02d}")
    return root


def test_emotion_names_and_label_map():
    assert [
        emotion_code(x) for x in ("anger", "Angry", "disgust", "FEARFUL", "happiness", "neutral", "sadness")
    ] == ["ANG", "ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    assert emotion_code("frustrated", {"Frustrated": "ang"}) == "ANG"
    with pytest.raises(ValueError, match="unknown emotion 'bored'"):
        emotion_code("bored")


@pytest.fixture(scope="module")
def audio_only_cremad(samples_dir, tmp_path_factory):
    """The official AudioWAV/ folder alone, and the flat `Crema/` copy, both of the 30 real WAVs."""
    root = tmp_path_factory.mktemp("cremad-audio")
    shutil.copytree(samples_dir / "AudioWAV", root / "official" / "AudioWAV")
    (root / "flat" / "Crema").mkdir(parents=True)
    for wav in (samples_dir / "AudioWAV").glob("*.wav"):
        shutil.copy(wav, root / "flat" / "Crema" / wav.name)
    return root


@pytest.mark.parametrize("layout", ["official", "flat"])
def test_audio_only_cremad_roots(audio_only_cremad, layout):
    clips = build_catalog(audio_only_cremad / layout, modalities=["audio"])
    assert len(clips) == 30 and (clips["video_path"] == "").all() and clips["actor_id"].nunique() == 30
    assert set(clips["gender"]) == {"male", "female"}  # from the bundled actor table
    with pytest.raises(ValueError, match=r"asks for video.*holds no video files.*data.modalities=\[audio\]"):
        build_catalog(audio_only_cremad / layout, modalities=["audio", "video"])


@pytest.mark.slow
def test_audio_only_cremad_trains_and_video_is_one_clear_error(audio_only_cremad, tmp_path):
    root = audio_only_cremad / "flat"
    base = [*common(root, tmp_path), "model=tiny", "trainer=cpu", "logger=none", "data.num_workers=0"]
    run_cli(
        "train.py",
        *base,
        "data.modalities=[audio]",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'a'}",
    )
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["n_test"] > 0 and metrics["split_by"] == "actor"
    video = run_cli("train.py", *base, f"hydra.run.dir={tmp_path / 'b'}", check=False)
    assert video.returncode != 0 and "holds no video files" in video.stderr


@pytest.fixture(scope="module")
def bad_manifest(ravdess_dir, tmp_path_factory):
    """8 real RAVDESS wavs of 4 speakers, plus one row of every kind of bad input."""
    folder = tmp_path_factory.mktemp("manifest")
    (folder / "empty.wav").touch()
    (folder / "notes.wav").write_text("not audio at all\n" * 100)
    good = ravdess_dir / "Actor_02" / "03-01-03-01-01-01-02.wav"
    (folder / "truncated.wav").write_bytes(good.read_bytes()[:30])  # cut inside the header
    wavs = [
        ravdess_dir / f"Actor_{a:02d}" / f"03-01-{e}-01-01-01-{a:02d}.wav"
        for a in (1, 2, 3, 4)
        for e in ("05", "03")
    ]
    bad = [
        {"audio_path": "missing.wav", "speaker": "spk09", "emotion": "angry"},
        {"audio_path": "empty.wav", "speaker": "spk09", "emotion": "angry"},
        {"audio_path": "notes.wav", "speaker": "spk09", "emotion": "angry"},
        {"audio_path": "truncated.wav", "speaker": "spk09", "emotion": "happy"},
        {"audio_path": str(wavs[0]), "speaker": "spk09", "emotion": "bored", "clip_id": "bored"},
        {"audio_path": str(wavs[1]), "speaker": "", "emotion": "angry", "clip_id": "nobody"},
    ]
    return write_manifest(folder / "clips.csv", wavs, bad)


def test_bad_manifest_rows_are_reported_and_the_good_ones_go_on(bad_manifest, tmp_path):
    run_cli(
        "-m",
        "cremad_lit",
        "prepare",
        "data=manifest",
        f"data.manifest={bad_manifest}",
        "data.modalities=[audio]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'prep'}",
    )
    report = json.loads((tmp_path / "prep" / "prepare_report.json").read_text())
    rejected = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["rejected"]}
    skipped = {r["path"].rsplit("/", 1)[-1]: r["reason"] for r in report["skipped"]}
    assert "file does not exist" in rejected["missing.wav"] and "empty" in rejected["empty.wav"]
    assert "unknown emotion 'bored'" in rejected["03-01-05-01-01-01-01.wav"]
    assert "no speaker" in rejected["03-01-03-01-01-01-01.wav"]
    assert set(skipped) == {"notes.wav", "truncated.wav"} and all("decod" in r for r in skipped.values())
    assert report["clips"] == 10 and report["decoded_now"] == 10  # 8 good + the 2 undecodable


@pytest.mark.slow
def test_baselines_on_trains_split_and_the_leaky_clip_flag(six_actors, tmp_path):
    """eGeMAPS + logistic regression beats the majority class on the same actor fold; split.by=clip says so loudly."""
    base = [
        "data=ravdess",
        *on_six_actors(six_actors, tmp_path),
        "split.folds=3",
        "split.fold=1",
        "logger=none",
    ]
    results = {}
    for method in ("egemaps_logreg", "majority"):
        run_cli(
            "-m", "cremad_lit", "baseline", *base, f"method={method}", f"hydra.run.dir={tmp_path / method}"
        )
        results[method] = json.loads((tmp_path / method / "metrics.json").read_text())
    egemaps, majority = results["egemaps_logreg"], results["majority"]
    assert egemaps["test_actors"] == majority["test_actors"] and egemaps["n_test"] == 88
    assert egemaps["task"] == "baseline" and egemaps["chosen"]["C"] in (0.01, 0.1, 1.0, 10.0)
    assert egemaps["accuracy"] > majority["accuracy"] + 0.1
    split = pd.read_csv(tmp_path / "majority" / "split.csv")
    assert set(split.loc[split["split"] == "test", "actor_id"]) == set(egemaps["test_actors"])

    leaky = run_cli(
        "-m", "cremad_lit", "baseline", *base, "split.by=clip", f"hydra.run.dir={tmp_path / 'clip'}"
    )
    assert "LEAKY" in leaky.stdout + leaky.stderr
    clip = json.loads((tmp_path / "clip" / "metrics.json").read_text())
    assert clip["split_by"] == "clip" and egemaps["split_by"] == "actor"
    split = pd.read_csv(tmp_path / "clip" / "split.csv")
    assert split["clip_id"].is_unique and len(split) == 264
    actors_per_split = split.groupby("split")["actor_id"].nunique()
    assert (actors_per_split == 6).all()  # every actor on every side: what makes it leaky


def test_clip_split_folds_cover_every_clip_once(ravdess_dir):
    clips = build_catalog(ravdess_dir, "ravdess")
    tested = []
    for fold in range(6):
        split = make_split(clips, folds=6, fold=fold, by="clip")
        test = split[split["split"] == "test"]
        tested += list(test["clip_id"])
        assert test["emotion"].value_counts().max() - test["emotion"].value_counts().min() <= 13
    assert sorted(tested) == sorted(clips["clip_id"])


@pytest.mark.slow
def test_report_labels_only_what_varies(ravdess_dir, tmp_path):
    """Baseline runs of two methods and two protocols under one folder: one row each, labelled by what differs."""
    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 7))
    base = ["data=ravdess", *common(root, tmp_path), "split.folds=3", "logger=none", "method=majority"]
    for fold in (0, 1):
        run_cli(
            "-m",
            "cremad_lit",
            "baseline",
            *base,
            f"split.fold={fold}",
            f"hydra.run.dir={tmp_path / 'runs' / f'a{fold}'}",
        )
    run_cli(
        "-m", "cremad_lit", "baseline", *base, "split.by=clip", f"hydra.run.dir={tmp_path / 'runs' / 'clip'}"
    )
    result = run_cli("-m", "cremad_lit", "report", str(tmp_path / "runs"))
    table = pd.read_csv(tmp_path / "runs" / "report.csv", index_col=0)
    assert sorted(table.index) == ["split.by=clip", "split.by=default"]
    assert table["runs"].sum() == 3 and "leaky" in (tmp_path / "runs" / "report.md").read_text()
    assert "accuracy" in result.stdout


def quieter_copies(wavs, folder, gain: float = 0.25) -> list:
    """Float WAV copies of real recordings, `gain` times the amplitude (0.25: 12 dB quieter), under their own names."""
    from scipy.io import wavfile

    from cremad_lit.data.media import read_wav

    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for wav in wavs:
        wavfile.write(folder / wav.name, 16000, (read_wav(str(wav)) * gain).astype(np.float32))
        copies.append(folder / wav.name)
    return copies


def test_speaker_norm_takes_out_a_speakers_loudness(ravdess_dir, tmp_path):
    """The same real recordings as two speakers, one 12 dB quieter: with data.speaker_norm=mean their Mel images
    match (without it they sit 12 dB apart); `standard` leaves each speaker zero mean and unit std in every band."""
    import torch

    from cremad_lit.data.datamodule import EmotionDataModule

    originals = six_emotion_wavs(sorted((ravdess_dir / "Actor_01").glob("*.wav")))[:8]
    copies = quieter_copies(originals, tmp_path / "quiet")
    manifest = write_manifest(tmp_path / "clips.csv", originals)
    rows = pd.read_csv(manifest)
    quiet = rows.assign(
        audio_path=[str(c) for c in copies], speaker="quiet", clip_id=[f"quiet-{c.stem}" for c in copies]
    )
    pd.concat([rows.assign(clip_id=[w.stem for w in originals]), quiet]).to_csv(manifest, index=False)

    def mels(speaker_norm: str, functionals: str = "none") -> tuple:
        datamodule = EmotionDataModule.from_config(
            dict(
                root=None,
                preprocessing={},
                dataset="manifest",
                manifest=str(manifest),
                modalities=("audio",),
                cache_dir=str(tmp_path / "cache"),
                eval_split="all",
                speaker_norm=speaker_norm,
                functionals=functionals,
            )
        )
        datamodule.prepare_data()
        datamodule.setup("test")
        every = datamodule.datasets["all"]
        key = "mel" if functionals == "none" else "functionals"
        by_id = {every[i]["clip_id"]: every[i][key] for i in range(len(every))}
        first = torch.stack([by_id[w.stem] for w in originals])
        second = torch.stack([by_id[f"quiet-{w.stem}"] for w in originals])
        return first, second

    loud, soft = mels("none")
    assert float((loud - soft).mean()) == pytest.approx(12 / 20, abs=0.02)  # 12 dB in normalised units
    loud, soft = mels("mean")
    assert float((loud - soft).abs().max()) < 0.02
    loud, soft = mels("standard")
    assert float((loud - soft).abs().max()) < 0.05
    bands = loud.transpose(0, 2).flatten(1)  # band x (clips * frames) of one speaker
    assert torch.allclose(bands.mean(dim=1), torch.zeros(64), atol=1e-3)
    assert torch.allclose(bands.std(dim=1, unbiased=False), torch.ones(64), atol=1e-3)
    # The 88 eGeMAPS functionals of each clip (data.functionals=egemaps), z-scored within each speaker.
    loud, soft = mels("standard", functionals="egemaps")
    assert loud.shape == (8, 88) and loud.dtype == torch.float32
    varying = loud.std(dim=0) > 0.5  # features constant within this speaker's 8 clips stay 0
    assert varying.sum() > 60 and torch.allclose(loud.mean(dim=0), torch.zeros(88), atol=1e-4)
    assert torch.allclose(loud.std(dim=0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    with pytest.raises(ValueError, match="speaker_norm"):
        EmotionDataModule.from_config(
            dict(root=None, preprocessing={}, dataset="manifest", manifest=str(manifest), speaker_norm="yes")
        )
    with pytest.raises(ValueError, match="functionals"):
        EmotionDataModule.from_config(
            dict(root=None, preprocessing={}, dataset="manifest", manifest=str(manifest), functionals="mfcc")
        )


@pytest.mark.slow
def test_compare_functionals_in_the_baseline_the_deep_branch_and_predict(ravdess_dir, six_actors, tmp_path):
    """openSMILE's 6,373 ComParE 2016 functionals: the speaker-normalised baseline on an actor fold, cached per clip;
    the deep models' functionals branch trained on them; predict computes the same features from a file."""
    base = [
        "data=ravdess",
        *on_six_actors(six_actors, tmp_path),
        "split.folds=3",
        "split.fold=0",
        "logger=none",
    ]
    run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        *base,
        "method=compare_logreg",
        "data.speaker_norm=standard",
        f"hydra.run.dir={tmp_path / 'compare'}",
    )
    metrics = json.loads((tmp_path / "compare" / "metrics.json").read_text())
    assert metrics["method"] == "compare_logreg" and metrics["n_test"] == 88 and metrics["accuracy"] > 0.3
    [features_dir] = six_actors[1].glob("*/compare-ComParE_2016-16000")
    stored = list(features_dir.glob("*.npy"))
    # The 264 six-class clips and the 96 calm and surprised ones, whose speech the speaker statistics also read.
    assert len(stored) == 360 and np.load(stored[0]).shape == (6373,)
    predictions = pd.read_csv(tmp_path / "compare" / "predictions.csv", dtype={"speaker": str})
    assert set(predictions["speaker"].astype(int)) == set(metrics["test_actors"])

    run_cli(
        "train.py",
        "experiment=speech",
        *base,
        "data.functionals=compare",
        "model.functionals.in_features=6373",
        "data.preprocessing.hop_length=1024",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'train'}",
    )
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    # experiment=speech measures an ensemble: `model` is the run folder; `checkpoint`, the network's own file.
    assert trained["model"] == str((tmp_path / "train").resolve())
    checkpoint = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"]["net.functionals.layers.1.weight"].shape == (128, 6373)
    mismatch = run_cli("train.py", "experiment=speech", *base, "data.functionals=compare", check=False)
    assert mismatch.returncode != 0 and "model.functionals.in_features=6373" in mismatch.stderr
    wav = ravdess_dir / "Actor_01" / "03-01-05-01-01-01-01.wav"
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={trained['checkpoint']}",
        f"inputs=[{wav}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    predicted = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    assert len(predicted) == 1 and predicted.loc[0, "prediction"] in EMOTIONS


@pytest.mark.slow
def test_report_intervals_over_speakers_and_the_paired_comparison(ravdess_dir, six_actors, tmp_path):
    """Two baselines on the same 3 actor folds: every row gets a 95% interval over the 6 test speakers, and the
    weaker is paired with the stronger (fold by fold, and pooled with its interval)."""
    base = [
        "data=ravdess",
        *on_six_actors(six_actors, tmp_path),
        "split.folds=3",
        "split.fold=0,1,2",
        "logger=none",
    ]
    for method in ("egemaps_logreg", "majority"):
        run_cli(
            "-m",
            "cremad_lit",
            "baseline",
            "-m",
            *base,
            f"method={method}",
            f"hydra.sweep.dir={tmp_path / 'runs' / method}",
        )
    result = run_cli("-m", "cremad_lit", "report", str(tmp_path / "runs"))
    table = pd.read_csv(tmp_path / "runs" / "report.csv", index_col=0)
    for config, row in table.iterrows():
        assert row["speakers"] == 6, config
        # metrics.json holds float32 means; the interval is computed in float64
        assert row["accuracy_low"] - 1e-6 <= row["accuracy_mean"] <= row["accuracy_high"] + 1e-6, config
    assert (
        table.loc["method=egemaps_logreg", "accuracy_high"]
        > table.loc["method=egemaps_logreg", "accuracy_low"]
    )
    paired = pd.read_csv(tmp_path / "runs" / "paired.csv", index_col=0)
    assert list(paired.index) == ["method=majority"]  # paired with the strongest baseline, eGeMAPS
    row = paired.loc["method=majority"]
    runs = pd.read_csv(tmp_path / "runs" / "runs.csv")
    per_fold = runs.pivot_table(index="split.fold", columns="config", values="accuracy")
    difference = per_fold["method=majority"] - per_fold["method=egemaps_logreg"]
    assert row["better"] == (difference > 0).sum() and row["shared_runs"] == 3
    assert row["low"] <= row["difference"] <= row["high"] < 0  # majority is clearly worse
    assert "Paired with `method=egemaps_logreg`" in result.stdout


def test_speaker_bootstrap_by_hand():
    from cremad_lit.uncertainty import accuracy_interval, paired_difference

    # speaker a: 3 of 4 right, b: 1 of 4, c: 4 of 4 -> pooled 8 / 12
    rows = [("a", 1)] * 3 + [("a", 0)] + [("b", 1)] + [("b", 0)] * 3 + [("c", 1)] * 4
    table = pd.DataFrame({"speaker": [s for s, _ in rows], "label": 1, "pred": [r for _, r in rows]})
    interval = accuracy_interval(table)
    assert interval["accuracy"] == pytest.approx(8 / 12) and interval["speakers"] == 3
    assert 0.25 <= interval["low"] < 8 / 12 < interval["high"] <= 1.0
    same = paired_difference(table, table)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    better = table.assign(pred=1)  # every clip right
    gain = paired_difference(better, table)
    assert gain["difference"] == pytest.approx(4 / 12) and 0 <= gain["low"] < gain["high"]


@pytest.mark.slow
def test_ensemble_of_seeds_in_evaluate_and_predict_and_the_final_model(ravdess_dir, six_actors, tmp_path):
    """Two seeds of experiment=speech on the same actor split (a multirun), evaluated as one ensemble: the mean of
    their probabilities clip by clip, members listed; predict averages them too."""
    quick = [
        "experiment=speech",
        "ensemble_with=null",  # the networks alone: seeds are the members here
        "data=ravdess",
        *on_six_actors(six_actors, tmp_path),
        "data.preprocessing.hop_length=1024",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    sweep = tmp_path / "seeds"
    run_cli("train.py", "-m", *quick, "seed=0,1", "split.seed=0", f"hydra.sweep.dir={sweep}")
    members = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert members[0]["test_actors"] == members[1]["test_actors"]

    run_cli("evaluate.py", f"ckpt_path={sweep}", f"hydra.run.dir={tmp_path / 'ensemble'}")
    fused = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert fused["ensemble"]["members"] == [m["checkpoint"] for m in members]
    assert fused["n_test"] == members[0]["n_test"] == 88
    columns = [f"p_{e}" for e in EMOTIONS]
    each = [pd.read_csv(sweep / str(i) / "predictions.csv").set_index("clip_id")[columns] for i in (0, 1)]
    ensemble = pd.read_csv(tmp_path / "ensemble" / "predictions.csv").set_index("clip_id")
    mean = (each[0] + each[1]) / 2
    assert np.allclose(ensemble.loc[mean.index, columns].to_numpy(), mean.to_numpy(), atol=1e-5)
    assert ensemble["speaker"].notna().all()
    # Each member alone is recorded beside it (members/<i>/), not counted by report as runs of one more configuration.
    assert (
        json.loads((tmp_path / "ensemble" / "members" / "0" / "metrics.json").read_text())["task"] == "member"
    )
    assert collect_runs(tmp_path / "ensemble")["run"].tolist() == ["."]

    run_cli(
        "evaluate.py",
        f"ckpt_path=[{members[0]['checkpoint']},{members[1]['checkpoint']}]",
        "ensemble_weights=[1,0]",
        f"hydra.run.dir={tmp_path / 'first-only'}",
    )
    first_only = json.loads((tmp_path / "first-only" / "metrics.json").read_text())
    assert first_only["accuracy"] == pytest.approx(members[0]["accuracy"], abs=1e-6)

    folder = tmp_path / "mine" / "speaker"
    folder.mkdir(parents=True)
    for wav in six_emotion_wavs(sorted((ravdess_dir / "Actor_05").glob("*.wav")))[:6]:
        (folder / wav.name).symlink_to(wav)
    probabilities = []
    for name, ckpt in (("a", members[0]["checkpoint"]), ("b", members[1]["checkpoint"]), ("ab", str(sweep))):
        run_cli(
            "-m",
            "cremad_lit",
            "predict",
            f"ckpt_path={ckpt}",
            f"inputs=[{folder}]",
            f"hydra.run.dir={tmp_path / name}",
        )
        probabilities.append(
            pd.read_csv(tmp_path / name / "predictions.csv").set_index("file")[list(EMOTIONS)]
        )
    assert np.allclose(
        probabilities[2].to_numpy(), ((probabilities[0] + probabilities[1]) / 2).to_numpy(), atol=1e-5
    )


def test_the_folder_holds_eight_emotions_and_the_label_map_exclusions_are_one_line(ravdess_dir, caplog):
    """../shared/ravdess-speech holds all eight RAVDESS emotions; the default six-class map leaves out calm and
    surprised with one summary line, not a warning per file."""
    import logging
    from collections import Counter

    from tests.conftest import ravdess_emotion

    held = Counter(ravdess_emotion(w) for w in ravdess_dir.glob("Actor_*/*.wav"))
    assert held == {
        "neutral": 72,
        **{e: 144 for e in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")},
    }
    with caplog.at_level(logging.INFO, logger="cremad_lit.data.catalog"):
        clips = build_catalog(ravdess_dir, "ravdess")
    assert len(clips) == 792 and len(clips.attrs["rejected"]) == 288
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "left out 288 clips by data.label_map (calm 144, surprised 144)" in caplog.text


@pytest.mark.slow
def test_a_classical_baseline_is_an_ensemble_member(ravdess_dir, six_actors, tmp_path):
    """A baseline run dir works like a checkpoint: evaluate.py reproduces its own test probabilities from the saved
    model, averages them with a deep model's with weights chosen on the shared validation actors, and predict
    gives evaluate's probabilities for the same speaker's clips."""
    base = ["data=ravdess", *on_six_actors(six_actors, tmp_path), "split.folds=3", "logger=none"]
    for fold in (0, 1):
        run_cli(
            "-m",
            "cremad_lit",
            "baseline",
            *base,
            f"split.fold={fold}",
            "data.speaker_norm=standard",
            f"hydra.run.dir={tmp_path / f'egemaps{fold}'}",
        )
    baseline = json.loads((tmp_path / "egemaps0" / "metrics.json").read_text())
    run_cli(
        "train.py",
        *base,
        "split.fold=0",
        *TINY_AUDIO,
        f"hydra.run.dir={tmp_path / 'deep'}",
    )
    deep = json.loads((tmp_path / "deep" / "metrics.json").read_text())
    assert deep["test_actors"] == baseline["test_actors"]
    columns = [f"p_{e}" for e in EMOTIONS]

    def probabilities(run: str) -> pd.DataFrame:
        return pd.read_csv(tmp_path / run / "predictions.csv").set_index("clip_id")[columns].sort_index()

    run_cli("evaluate.py", f"ckpt_path={tmp_path / 'egemaps0'}", f"hydra.run.dir={tmp_path / 'again'}")
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(baseline["accuracy"]) and again["n_test"] == 88
    assert np.allclose(probabilities("again").to_numpy(), probabilities("egemaps0").to_numpy(), atol=1e-6)

    members = f"ckpt_path=[{deep['checkpoint']},{tmp_path / 'egemaps0'}]"
    run_cli("evaluate.py", members, "ensemble_weights=val", f"hydra.run.dir={tmp_path / 'fused'}")
    fused = json.loads((tmp_path / "fused" / "metrics.json").read_text())["ensemble"]
    assert fused["weights_chosen_on"] == "val" and fused["val_clips"] == 88  # the 2 validation actors
    assert len(fused["val_accuracy_by_weights"]) == 11 and sum(fused["weights"]) == pytest.approx(1)
    assert fused["val_accuracy"] == max(fused["val_accuracy_by_weights"].values())
    w_deep, w_base = fused["weights"]
    mixed = w_deep * probabilities("deep") + w_base * probabilities("egemaps0")
    assert np.allclose(probabilities("fused").to_numpy(), mixed.to_numpy(), atol=1e-5)

    on_val = run_cli("evaluate.py", members, "ensemble_weights=val", "subset=val", check=False)
    assert on_val.returncode != 0 and "evaluate another split" in on_val.stderr
    folds = f"ckpt_path=[{tmp_path / 'egemaps0'},{tmp_path / 'egemaps1'}]"
    val_actors = [
        set(pd.read_csv(tmp_path / f"egemaps{fold}" / "split.csv").query("split == 'val'")["actor_id"])
        for fold in (0, 1)
    ]
    across = run_cli("evaluate.py", folds, "ensemble_weights=val", "subset=all", check=False)
    # Folds 0 and 1 of this split draw one validation actor in common: the weights are chosen on that actor's clips
    # (members with none in common stop: test_weights_need_shared_validation_clips).
    shared = 44 * len(val_actors[0] & val_actors[1])
    assert shared == 44
    assert across.returncode == 0 and f"chosen on {shared} validation clips" in across.stdout + across.stderr

    actor = baseline["test_actors"][0]
    folder = one_speaker_folder(ravdess_dir, actor, tmp_path / "one-speaker", every_take=True)
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={tmp_path / 'egemaps0'}",
        f"inputs=[{folder}]",
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    predicted = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    predicted.index = [
        Path(f).stem.split("-", 1)[1] for f in predicted["file"]
    ]  # RAVDESS ids drop the modality
    # All 60 of the speaker's takes (the speech their statistics read); evaluate tested the 44 of the six classes.
    evaluated = probabilities("egemaps0")
    evaluated = evaluated[evaluated.index.isin(predicted.index)]
    assert (
        len(predicted) == 60
        and len(evaluated) == 44
        and np.allclose(
            predicted.loc[evaluated.index, list(EMOTIONS)].to_numpy(), evaluated.to_numpy(), atol=1e-5
        )
    )

    # The ensemble to ship: the classical model fitted on every speaker, beside a deep model, in predict.
    everyone = ["data=ravdess", *on_six_actors(six_actors, tmp_path), "logger=none"]
    final = run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        *everyone,
        "final=all_speakers",
        "C_grid=[0.01]",
        "data.speaker_norm=standard",
        f"hydra.run.dir={tmp_path / 'final'}",
    )
    assert "trained on all 264 clips of 6 speakers" in final.stdout
    assert not (tmp_path / "final" / "metrics.json").exists()
    no_c = run_cli("-m", "cremad_lit", "baseline", *everyone, "final=all_speakers", check=False)
    assert no_c.returncode != 0 and "C_grid=[0.01]" in no_c.stderr
    few = tmp_path / "few"  # 12 takes: the weighted mean below holds whatever the folder's statistics
    few.mkdir()
    for wav in sorted(folder.iterdir())[::5]:
        (few / wav.name).symlink_to(wav.resolve())
    rows = {}
    for name, ckpt in (("d", deep["checkpoint"]), ("c", tmp_path / "final"), ("dc", None)):
        ckpt = ckpt or f"[{deep['checkpoint']},{tmp_path / 'final'}]"
        run_cli(
            "-m",
            "cremad_lit",
            "predict",
            f"ckpt_path={ckpt}",
            f"inputs=[{few}]",
            "ensemble_weights=[0.3,0.7]" if name == "dc" else "ensemble_weights=null",
            f"hydra.run.dir={tmp_path / name}",
        )
        rows[name] = pd.read_csv(tmp_path / name / "predictions.csv").set_index("file")[list(EMOTIONS)]
    assert len(rows["dc"]) == 12
    assert np.allclose(rows["dc"].to_numpy(), (0.3 * rows["d"] + 0.7 * rows["c"]).to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_experiment_speech_is_the_network_averaged_with_compare_logistic_regression(
    ravdess_dir, six_actors, tmp_path
):
    """experiment=speech on 6 RAVDESS actors (the data=ravdess adapter, real files) is an ensemble: the network and a
    speaker-normalised ComParE + LR model fitted on the same training speakers (exactly the baseline command's model
    with C=0.01), probabilities averaged. The run folder is that ensemble for evaluate.py (in the corpus and on
    another one through a manifest), predict and the report; final=all_speakers ships the same pair, nobody held out.
    One training serves every check: the suite's budget."""
    base = ["data=ravdess", *on_six_actors(six_actors, tmp_path), "logger=none"]
    quick = [
        "experiment=speech",
        *base,
        "model/backbone@model.audio_backbone=test_efficientnet",
        "data.preprocessing.hop_length=1024",
        "trainer.max_epochs=2",
    ]
    run = tmp_path / "speech"
    run_cli("train.py", *quick, f"hydra.run.dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "ravdess" and metrics["n_test"] == 44 * len(metrics["test_actors"]) == 88
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1] and (history["speed/clips_per_s"] > 0).all()
    assert metrics["ensemble"]["weights"] == [0.5, 0.5]
    assert metrics["ensemble"]["method"] == "compare_logreg"
    # `model` names what was measured: the run folder, the ensemble; `checkpoint`, the network's own file, a member.
    assert metrics["schema"] == 2 and metrics["model"] == str(run.resolve())
    assert metrics["checkpoint"] == metrics["ensemble"]["members"][0]
    assert metrics["checkpoint"].endswith("last.ckpt")
    columns = [f"p_{e}" for e in EMOTIONS]

    def probabilities(folder: Path) -> pd.DataFrame:
        return (
            pd.read_csv(folder / "predictions.csv", dtype={"clip_id": str})
            .set_index("clip_id")[columns]
            .sort_index()
        )

    network, partner = (
        probabilities(run / "members" / "network"),
        probabilities(run / "members" / "classical"),
    )
    assert len(network) == len(partner) == metrics["n_test"]
    assert np.allclose(probabilities(run).to_numpy(), (0.5 * network + 0.5 * partner).to_numpy(), atol=1e-6)
    member_metrics = [
        json.loads((run / "members" / m / "metrics.json").read_text()) for m in ("network", "classical")
    ]
    assert metrics["ensemble"]["member_accuracy"] == pytest.approx([m["accuracy"] for m in member_metrics])
    # The partner is the baseline command's model on the same split (speaker-normalised, C=0.01).
    run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        *base,
        "method=compare_logreg",
        "data.speaker_norm=standard",
        "C_grid=[0.01]",
        f"hydra.run.dir={tmp_path / 'baseline'}",
    )
    assert np.allclose(partner.to_numpy(), probabilities(tmp_path / "baseline").to_numpy(), atol=1e-6)

    # The run folder is the ensemble (ensemble.json): evaluate.py reproduces the run's test result ...
    run_cli("evaluate.py", f"ckpt_path={run}", f"hydra.run.dir={tmp_path / 'eval'}")
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["ensemble"]["weights"] == [0.5, 0.5] and evaluated["n_test"] == 88
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert np.allclose(probabilities(tmp_path / "eval").to_numpy(), probabilities(run).to_numpy(), atol=1e-5)
    # The report counts the run once (the ensemble), not its members.
    run_cli("-m", "cremad_lit", "report", str(run))
    assert len(pd.read_csv(run / "runs.csv")) == 1

    # ... evaluates another actor through a manifest (the six classes, the checkpoint's preprocessing) ...
    # One take of statement 01 per emotion and intensity (15 of the actor's 60): all eight emotions, fewer functionals.
    other = [
        w for w in sorted((ravdess_dir / "Actor_17").glob("*.wav")) if w.stem.split("-")[4:6] == ["01", "01"]
    ]
    manifest = write_manifest(tmp_path / "other" / "clips.csv", other)
    run_cli(
        "evaluate.py",
        f"ckpt_path={run}",
        "data=manifest",
        f"data.manifest={manifest}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "subset=all",
        f"hydra.run.dir={tmp_path / 'cross'}",
    )
    cross = json.loads((tmp_path / "cross" / "metrics.json").read_text())
    assert cross["cross_corpus"] and cross["dataset"] == "manifest" and cross["n_test"] == 11
    assert cross["actors"] == ["spk17"]
    crossed = pd.read_csv(tmp_path / "cross" / "predictions.csv", dtype={"clip_id": str})
    assert set(crossed["label"]) == {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"}
    assert (crossed["label"] == crossed["pred"]).mean() == pytest.approx(cross["accuracy"])
    assert (tmp_path / "cross" / "confusion.png").is_file()
    # ... and predict, reading a folder as one speaker (its statistics over every take in it), gives evaluate's
    # probabilities for the same clips.
    folder = tmp_path / "one-speaker"
    folder.mkdir()
    for wav in other:
        (folder / wav.name).symlink_to(wav)
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={run}",
        f"inputs=[{folder}]",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    predicted = pd.read_csv(tmp_path / "p" / "predictions.csv")
    predicted.index = predicted["file"].map(lambda f: Path(f).stem)
    tested = probabilities(tmp_path / "cross")  # the 11 six-class clips of the folder's 15 takes
    assert len(predicted) == 15 and len(tested) == 11
    assert np.allclose(predicted.loc[tested.index, list(EMOTIONS)].to_numpy(), tested.to_numpy(), atol=1e-4)
    # An audio-only checkpoint predicts straight from a WAV file, here the native 48 kHz stereo original.
    native = RAVDESS_48K / "Actor_01" / "03-01-05-02-01-01-01.wav"
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={run}",
        f"inputs=[{native}]",
        f"hydra.run.dir={tmp_path / 'n'}",
    )
    alone = pd.read_csv(tmp_path / "n" / "predictions.csv")
    assert len(alone) == 1 and alone.loc[0, "prediction"] in EMOTIONS
    assert alone[list(EMOTIONS)].sum(axis=1).iloc[0] == pytest.approx(1.0, abs=1e-4)

    # The model to ship: the same pair fitted on every speaker (C is fixed, so no validation speakers are needed).
    final = tmp_path / "final"
    run_cli("train.py", *quick, "final=all_speakers", "trainer.max_epochs=1", f"hydra.run.dir={final}")
    split = pd.read_csv(final / "split.csv")
    assert (split["split"] == "train").all() and len(split) == 6  # every speaker trains, nobody is held out
    assert not (final / "metrics.json").exists()  # nothing to test on
    assert "val/loss" not in pd.read_csv(final / "history.csv")
    stored = json.loads((final / "ensemble.json").read_text())
    assert stored["members"] == ["checkpoints/last.ckpt", "members/classical"]
    assert json.loads((final / "members" / "classical" / "classical_model.json").read_text())["C"] == 0.01
    few = tmp_path / "few"  # 5 takes: the identity below holds whatever the folder's statistics
    few.mkdir()
    for wav in sorted(folder.iterdir())[::3]:
        (few / wav.name).symlink_to(wav.resolve())
    rows = {}
    for name, ckpt in (
        ("net", final / stored["members"][0]),
        ("lr", final / stored["members"][1]),
        ("pair", final),
    ):
        run_cli(
            "-m",
            "cremad_lit",
            "predict",
            f"ckpt_path={ckpt}",
            f"inputs=[{few}]",
            f"hydra.run.dir={tmp_path / ('final-' + name)}",
        )
        rows[name] = pd.read_csv(tmp_path / f"final-{name}" / "predictions.csv").set_index("file")[
            list(EMOTIONS)
        ]
    assert len(rows["pair"]) == 5
    assert np.allclose(rows["pair"].to_numpy(), (0.5 * rows["net"] + 0.5 * rows["lr"]).to_numpy(), atol=1e-5)

    video_only = run_cli("train.py", *quick, "data.modalities=[video]", check=False)
    assert video_only.returncode != 0 and "ensemble_with=null" in video_only.stderr
