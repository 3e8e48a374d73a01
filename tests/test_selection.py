"""Holding on new people: nested selection (split.inner_folds, the select command), the lockbox's occasions, and the
speaker statistics that read all of a speaker's speech (data.speaker_stats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cremad_lit.data.catalog import build_catalog
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.data.splits import hold_out_outer_test, make_split
from cremad_lit.lockbox import complete_opening, earlier_occasions, record_opening
from tests.conftest import kill_at, on_six_actors, run_cli
from tests.test_corpora import link_actors
from tests.test_kills import killed


def test_inner_folds_never_see_the_outer_test_speakers(ravdess_dir):
    clips = build_catalog(ravdess_dir, "ravdess")
    for protocol in ("blocks", "random"):
        config = {"folds": 6, "protocol": protocol, "seed": 3, "inner_folds": 3}
        for fold in range(6):
            outer = make_split(clips, folds=6, fold=fold, seed=3, protocol=protocol)
            outer_test = set(outer.loc[outer["split"] == "test", "actor_id"])
            tested = []
            for inner_fold in range(3):
                left, inner, record = hold_out_outer_test(
                    clips, {**config, "fold": fold, "inner_fold": inner_fold}, "actor"
                )
                assert set(record["outer_test_actors"]) == outer_test and record["level"] == "inner"
                assert not outer_test & set(left["actor_id"])
                split = make_split(left, folds=inner["folds"], fold=inner["fold"], seed=3, protocol=protocol)
                assert not outer_test & set(split["actor_id"])
                tested += list(split.loc[split["split"] == "test", "actor_id"])
            # The inner folds' test sets cover the outer training speakers once each.
            assert sorted(tested) == sorted(set(clips["actor_id"]) - outer_test)
    plain = {"folds": 6, "fold": 0}
    assert hold_out_outer_test(clips, plain, "actor") == (clips, plain, {})
    with pytest.raises(ValueError, match="inner_folds"):
        hold_out_outer_test(clips, {"folds": 6, "inner_folds": 3}, "clip")
    with pytest.raises(ValueError, match="inner_folds"):
        hold_out_outer_test(clips, {"inner_folds": 3}, "actor")


def test_models_opened_together_are_one_opening(tmp_path):
    assert earlier_occasions([], None) == 0
    openings = [{"occasion": None}, {"occasion": "0.8"}, {"occasion": "0.8"}, {"occasion": None}]
    assert earlier_occasions(openings, "0.8") == 1  # only the unnamed opening came before release 0.8's
    assert earlier_occasions(openings, "0.9") == 3 and earlier_occasions(openings, None) == 3
    assert (
        earlier_occasions([{"occasion": "0.7", "completed": False}], None) == 0
    )  # never completed: not seen

    def opening(
        run: str, occasion: str
    ) -> dict:  # as evaluate.py does: pending, then completed with its numbers
        opened = record_opening(tmp_path, "corpus", [16, 17], {"run": run}, occasion=occasion)
        complete_opening(opened["ledger"], run, 0.5)
        return opened

    first, second, later = opening("a", "0.8"), opening("b", "0.8"), opening("c", "0.9")
    assert (first["opened_before"], second["opened_before"], later["opened_before"]) == (0, 0, 1)
    ledger = json.loads(Path(first["ledger"]).read_text())
    assert [o["occasion"] for o in ledger["openings"]] == ["0.8", "0.8", "0.9"]
    assert all(o["completed"] and o["accuracy"] == 0.5 for o in ledger["openings"])


def test_speaker_statistics_read_all_of_a_speakers_speech(ravdess_dir, tmp_path):
    """RAVDESS's calm and surprised takes are not classes by default, but they are the speaker's speech: with
    data.speaker_stats=all_speech (the config's default) the per-speaker Mel statistics are those of all 60 takes,
    computed here by hand; with `classes` those of the 44 kept ones. No unlabelled take is ever a sample."""
    from cremad_lit.data.datamodule import EmotionDataModule
    from cremad_lit.data.dataset import speaker_stats
    from cremad_lit.data.features import Preprocessing, decode_clip, normalise_mel

    root = link_actors(ravdess_dir, tmp_path / "ravdess", (1, 2))

    def stats(setting: str):
        datamodule = EmotionDataModule.from_config(
            dict(
                root=str(root),
                preprocessing={},
                dataset="ravdess",
                modalities=("audio",),
                cache="off",
                eval_split="all",
                speaker_norm="standard",
                speaker_stats=setting,
            )
        )
        datamodule.setup("test")
        assert len(datamodule.datasets["all"]) == 88
        assert set(datamodule.datasets["all"].clips["emotion"]) <= set(EMOTIONS)
        return datamodule.speaker_speech(), datamodule.datasets["all"].speaker_stats

    speech, every = stats("all_speech")
    assert len(speech) == 120 and (speech["split"] == "unlabelled").sum() == 32
    kept, classes_only = stats("classes")
    assert len(kept) == 88
    prep, wavs = Preprocessing(), sorted((root / "Actor_01").glob("*.wav"))
    labelled = [f for f in wavs if f.stem.split("-")[2] not in ("02", "08")]  # not calm, not surprised
    for setting, files in ((every, wavs), (classes_only, labelled)):
        mels = ((1, normalise_mel(torch.from_numpy(decode_clip("", str(f), prep)["mel"]))) for f in files)
        mean, std = speaker_stats(mels, "standard")[1]
        assert torch.allclose(setting[1][0], mean, atol=1e-4) and torch.allclose(
            setting[1][1], std, atol=1e-4
        )
    assert not torch.allclose(every[1][0], classes_only[1][0], atol=1e-3)
    with pytest.raises(ValueError, match="speaker_stats"):
        EmotionDataModule.from_config(
            dict(root=str(root), preprocessing={}, dataset="ravdess", speaker_stats="everyone")
        )


@pytest.mark.slow
def test_select_chooses_inside_each_outer_fold_and_report_labels_it(
    six_actors, tmp_path, monkeypatch, fork_subcommands
):
    """A study of two candidates (majority class, eGeMAPS + LR) on 6 speakers, 2 outer x 2 inner folds: every inner
    run leaves out its outer fold's test speakers, the choice per outer fold follows the inner scores, the outer runs
    test the choice on the outer speakers and say so in metrics.json, and report labels both levels. Killed (kill -9)
    during a run, between two multiruns and while writing its summary, the same command ends as the study did."""
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "outer_folds": 2,
                "inner_folds": 2,
                "metric": "accuracy",
                "overrides": ["data=ravdess", "split.protocol=blocks", "split.fractions=[0.85,0.0,0.15]"],
                "candidates": {
                    "majority": {"command": "baseline", "overrides": ["method=majority"]},
                    "egemaps": {
                        "command": "baseline",
                        "overrides": ["method=egemaps_logreg", "C_grid=[0.1]"],
                    },
                },
            }
        )
    )

    def select(out: Path, check: bool = True):
        args = ["-m", "cremad_lit", "select", str(study), *on_six_actors(six_actors, tmp_path), "logger=none"]
        return run_cli(*args, "--out", str(out), check=check)

    out = tmp_path / "select"
    result = select(out)
    selection = json.loads((out / "selection.json").read_text())
    assert [f["outer_fold"] for f in selection["folds"]] == [0, 1]
    for fold in selection["folds"]:
        scores = fold["inner_scores"]
        assert fold["chosen"] == max(scores, key=scores.get)
        assert fold["test_actors"] == [3 * fold["outer_fold"] + k for k in (1, 2, 3)]
        outer = json.loads((Path(fold["run"]) / "metrics.json").read_text())
        assert outer["selection"] == {
            "level": "nested",
            "study": "study",
            "candidate": fold["chosen"],
            "inner_folds": 2,
        }
        assert outer["accuracy"] == pytest.approx(fold["accuracy"])
    assert selection["nested_accuracy_mean"] == pytest.approx(
        np.mean([f["accuracy"] for f in selection["folds"]])
    )
    inner_runs = sorted((out / "inner").glob("*/*/metrics.json"))
    assert len(inner_runs) == 8
    for path in inner_runs:
        nested = json.loads(path.read_text())["protocol"]["nested"]
        split = pd.read_csv(path.parent / "split.csv")
        assert not set(nested["outer_test_actors"]) & set(split["actor_id"]), path
        assert len(split) == 3 and (split["split"] == "test").sum() >= 1
    assert "outer accuracy" in result.stdout
    again = select(out)  # finished: nothing runs again
    assert again.stdout.count("finished before") == 2 and "--multirun" not in again.stdout  # nothing ran
    run_cli("-m", "cremad_lit", "report", str(out))
    report = (out / "report.md").read_text()
    assert "chosen by nested selection" in report and "inner fold: for choosing only" in report

    broken = tmp_path / "broken"
    kill_at(
        monkeypatch, "metrics.json:2:while:tree"
    )  # the study and its multirun, inside the second inner run
    assert killed(select(broken, check=False))
    kill_at(monkeypatch, "wall_seconds.txt:2:after")  # between two multiruns (the first is finished by now)
    assert killed(select(broken, check=False))
    kill_at(monkeypatch, "selection.json:1:while")  # while writing the summary
    assert killed(select(broken, check=False))
    assert not (broken / "selection.json").exists()
    kill_at(monkeypatch, None)
    assert list(broken.rglob(".*.tmp"))  # what the kills left half written ...
    select(broken)
    assert not list(broken.rglob(".*.tmp"))  # ... is removed by the next run
    chosen = json.loads((broken / "selection.json").read_text())
    for fold, reference in zip(chosen["folds"], selection["folds"], strict=True):
        assert fold["chosen"] == reference["chosen"] and fold["test_actors"] == reference["test_actors"]
        assert fold["inner_scores"] == pytest.approx(reference["inner_scores"])
        assert fold["accuracy"] == pytest.approx(reference["accuracy"])
    assert chosen["interval"] == pytest.approx(selection["interval"])
    # Each outer fold tested once: the finished outer runs are one per fold, as uninterrupted.
    tested = [
        json.loads(p.read_text())["protocol"]["fold"] for p in (broken / "outer").glob("*/*/*/metrics.json")
    ]
    assert sorted(tested) == [0, 1]


def test_the_choice_to_ship_is_the_one_most_outer_folds_chose():
    """`select --open`: the candidate chosen in most outer folds; a tie goes to the higher mean inner score (never to
    an outer test number)."""
    from cremad_lit.selection import final_choice

    def fold(chosen, a, b):
        return {"chosen": chosen, "inner_scores": {"a": a, "b": b}}

    assert final_choice({"folds": [fold("a", 0.6, 0.5), fold("b", 0.4, 0.9), fold("a", 0.7, 0.6)]}) == "a"
    assert final_choice({"folds": [fold("a", 0.6, 0.5), fold("b", 0.4, 0.9)]}) == "b"  # 0.70 against 0.50
