"""Actor-disjoint splits: fractions, gender balance, determinism, k-fold, saved files, the guard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cremad_lit.data.adapters.cremad import load_demographics
from cremad_lit.data.splits import check_actor_disjoint, load_split, make_split, save_split


@pytest.fixture(scope="module")
def clips() -> pd.DataFrame:
    """One row per real actor is all a split needs (actor_id, gender)."""
    return load_demographics(None).reset_index()[["actor_id", "gender"]]


def test_default_split_is_actor_disjoint_balanced_and_deterministic(clips):
    split = make_split(clips, seed=0)
    assert split["actor_id"].is_unique and len(split) == 91
    sizes = split["split"].value_counts().to_dict()
    assert sizes == {"train": 65, "val": 13, "test": 13}
    for name, group in split.groupby("split"):
        assert 0.35 < (group["gender"] == "female").mean() < 0.6, name
    assert split.equals(make_split(clips, seed=0))
    assert not split.equals(make_split(clips, seed=1))


def test_kfold_each_actor_tested_once_and_val_from_training_side(clips):
    tested = []
    for fold in range(5):
        split = make_split(clips, folds=5, fold=fold, seed=0)
        test = set(split.loc[split["split"] == "test", "actor_id"])
        assert 18 <= len(test) <= 19
        assert (split["split"] == "val").sum() >= 10
        tested.extend(test)
    assert sorted(tested) == sorted(clips["actor_id"])


def test_small_sets_still_get_every_split():
    tiny = pd.DataFrame({"actor_id": range(1001, 1007), "gender": ["male", "female"] * 3})
    assert make_split(tiny)["split"].value_counts().to_dict() == {"train": 2, "val": 2, "test": 2}


def test_saved_split_reloads_and_must_cover_all_actors(clips, tmp_path):
    split = make_split(clips, seed=2)
    path = save_split(split, tmp_path / "split.csv")
    assert load_split(path, clips).equals(split)
    more = pd.concat([clips, pd.DataFrame({"actor_id": [2000], "gender": ["male"]})])
    with pytest.raises(ValueError, match="2000"):
        load_split(path, more)


def test_guard_rejects_an_actor_in_two_splits():
    bad = pd.DataFrame({"actor_id": [1, 1, 2], "split": ["train", "test", "test"]})
    with pytest.raises(AssertionError, match="more than one split"):
        check_actor_disjoint(bad)
    with pytest.raises(AssertionError, match="train split is empty"):
        check_actor_disjoint(pd.DataFrame({"actor_id": [1], "split": ["test"]}))


def test_bad_fold_arguments(clips):
    with pytest.raises(ValueError, match="fold"):
        make_split(clips, folds=5, fold=5)


def test_blocks_folds_are_consecutive_speaker_ids_on_the_real_cremad_names(real_names_root):
    """split.protocol=blocks on the 7,442 real names: 1001-1018, 1019-1036, 1037-1054, 1055-1072, 1073-1091, with
    validation speakers from the training side of each fold only."""
    from cremad_lit.data.catalog import build_catalog

    clips = build_catalog(real_names_root)
    assert len(clips) == 7442 and clips["actor_id"].nunique() == 91
    expected = [(1001, 1018), (1019, 1036), (1037, 1054), (1055, 1072), (1073, 1091)]
    for fold, (first, last) in enumerate(expected):
        split = make_split(clips, folds=5, fold=fold, seed=3, protocol="blocks")
        test = sorted(split.loc[split["split"] == "test", "actor_id"])
        assert test == list(range(first, last + 1))
        val = split.loc[split["split"] == "val", "actor_id"]
        assert len(val) >= 10 and set(val).isdisjoint(test)
    # the seed moves the validation speakers, never the test blocks
    other = make_split(clips, folds=5, fold=0, seed=4, protocol="blocks")
    assert sorted(other.loc[other["split"] == "test", "actor_id"]) == list(range(1001, 1019))
    with pytest.raises(ValueError, match="needs split.folds"):
        make_split(clips, protocol="blocks")


def test_blocks_folds_of_ravdess_take_four_consecutive_actors():
    actors = pd.DataFrame({"actor_id": range(1, 25), "gender": ["male", "female"] * 12})
    for fold in range(6):
        split = make_split(actors, folds=6, fold=fold, protocol="blocks")
        assert sorted(split.loc[split["split"] == "test", "actor_id"]) == list(
            range(4 * fold + 1, 4 * fold + 5)
        )


def write_list(path, names, header="name,label"):
    path.write_text("\n".join([header, *(f"{n}.flv,{n.split('_')[2]}" for n in names)]) + "\n")
    return path


def test_published_clip_lists_say_leaky_when_a_speaker_is_on_both_sides(synthetic_root, tmp_path):
    from cremad_lit.data.datamodule import EmotionDataModule

    names = sorted(p.stem for p in (synthetic_root / "VideoFlash").glob("*.flv"))
    # the modality-imbalance papers' kind of list: every actor on both sides
    leaky = {
        "train": write_list(tmp_path / "train.csv", names[::2]),
        "test": write_list(tmp_path / "test.csv", names[1::2]),
    }
    datamodule = EmotionDataModule.from_config(
        dict(
            root=str(synthetic_root),
            preprocessing={"frames": 2, "image_size": 32},
            cache="off",
            split={"file": leaky, "seed": 0},
        )
    )
    datamodule.setup()
    protocol = datamodule.protocol
    assert protocol["protocol"] == "lists" and protocol["leaky"] and datamodule.split_by == "clip"
    assert len(protocol["speakers_in_train_and_test"]) == 6
    assert protocol["not_in_corpus"] == {"train": 1, "test": 1}  # the header lines
    sides = datamodule.clips.set_index("clip_id")["split"]
    assert set(sides[names[1::2]]) == {"test"} and set(sides[names[::2]]) == {"train", "val"}

    # lists that keep speakers apart: not leaky, and the split is by speaker in effect
    first, rest = [n for n in names if n.startswith("1001")], [n for n in names if not n.startswith("1001")]
    apart = {"train": write_list(tmp_path / "a.csv", rest), "test": write_list(tmp_path / "b.csv", first)}
    datamodule = EmotionDataModule.from_config(
        dict(
            root=str(synthetic_root),
            preprocessing={"frames": 2, "image_size": 32},
            cache="off",
            split={"file": apart},
        )
    )
    datamodule.setup()
    assert not datamodule.protocol["leaky"] and datamodule.split_by == "actor"
    assert datamodule.protocol["speakers_in_train_and_test"] == []


@pytest.mark.slow
def test_train_on_published_lists_records_the_protocol(synthetic_root, tmp_path):
    import json

    from tests.conftest import run_cli, train_args

    names = sorted(p.stem for p in (synthetic_root / "VideoFlash").glob("*.flv"))
    train, test = (
        write_list(tmp_path / "train.csv", names[::2]),
        write_list(tmp_path / "test.csv", names[1::2]),
    )
    result = run_cli(
        *train_args(
            synthetic_root,
            tmp_path,
            "trainer.max_epochs=1",
            f"hydra.run.dir={tmp_path / 'run'}",
            shared_cache=True,
        ),
        f"split.file={{train:{train},test:{test}}}",
    )
    log = (tmp_path / "run" / "train.log").read_text()
    assert "LEAKY" in log and "6 speakers have clips in both train and test" in log
    assert f"run dir: {(tmp_path / 'run').resolve()}" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"]["protocol"] == "lists" and metrics["protocol"]["leaky"] is True
    assert metrics["split_by"] == "clip" and metrics["n_test"] == len(names[1::2])
    assert 0 <= metrics["uar"] <= 1 and metrics["war"] == metrics["accuracy"]


def test_the_lockbox_is_chosen_once_by_ids_or_a_count_whatever_the_seed(ravdess_dir):
    from cremad_lit.data.catalog import build_catalog
    from cremad_lit.data.splits import lockbox_speakers

    clips = build_catalog(str(ravdess_dir), "ravdess")
    assert lockbox_speakers(clips, None) == [] and lockbox_speakers(clips, []) == []
    assert lockbox_speakers(clips, [18, 16, 17]) == [16, 17, 18]
    drawn = lockbox_speakers(clips, 4)
    assert drawn == lockbox_speakers(clips, 4) and len(drawn) == 4
    genders = clips.groupby("actor_id")["gender"].first()
    assert sorted(genders.loc[drawn]) == ["female", "female", "male", "male"]
    with pytest.raises(ValueError, match=r"does not have: \[99\]"):
        lockbox_speakers(clips, [16, 99])
    with pytest.raises(ValueError, match="too few"):
        lockbox_speakers(clips, 17)


def test_lockbox_speakers_leave_every_protocol_and_only_split_lockbox_opens_them(ravdess_dir, tmp_path):
    from cremad_lit.data.datamodule import EmotionDataModule

    def setup(split: dict, eval_split: str = "test") -> EmotionDataModule:
        datamodule = EmotionDataModule.from_config(
            dict(
                root=str(ravdess_dir),
                preprocessing={"frames": 1, "image_size": 32},
                dataset="ravdess",
                modalities=["audio"],
                split={**split, "lockbox": [16, 17, 18]},
                cache="off",
                eval_split=eval_split,
            )
        )
        datamodule.setup("fit")
        return datamodule

    seen = set()
    for fold in range(5):  # the project's protocol: 5 blocks of 3 over actors 01-15
        datamodule = setup({"folds": 5, "fold": fold, "protocol": "blocks"})
        assert set(datamodule.actors("all")).isdisjoint({16, 17, 18})
        assert datamodule.actors("test") == list(range(3 * fold + 1, 3 * fold + 4))
        seen.update(datamodule.actors("test"))
        assert datamodule.protocol["lockbox"] == [16, 17, 18]
    assert seen == set(range(1, 16))
    for split in ({"by": "clip", "folds": 3}, {}):
        assert set(setup(split).actors("all")).isdisjoint({16, 17, 18})
    opened = setup({"folds": 5, "fold": 0, "protocol": "blocks"}, eval_split="lockbox")
    assert opened.actors("lockbox") == [16, 17, 18] and set(opened.clips["split"]) == {"test"}
    assert len(opened.test_dataloader().dataset) == 3 * 44  # every clip of the three, six emotions
    with pytest.raises(ValueError, match="holds no lockbox"):
        EmotionDataModule.from_config(
            dict(
                root=str(ravdess_dir),
                preprocessing={"frames": 1},
                dataset="ravdess",
                modalities=["audio"],
                cache="off",
                eval_split="lockbox",
            )
        ).setup("test")


@pytest.mark.slow
def test_opening_the_lockbox_is_recorded_and_a_second_opening_is_marked(ravdess_dir, tmp_path, monkeypatch):
    """Each opening is in the ledger and the second is marked; an opening killed (kill -9) while writing its numbers is
    not recorded, and the same command run again records it once."""
    import json

    import pandas as pd

    from tests.conftest import common, kill_at, run_cli
    from tests.test_corpora import link_actors
    from tests.test_kills import killed

    root = link_actors(ravdess_dir, tmp_path / "ravdess", range(1, 9))
    base = ["data=ravdess", *common(root, tmp_path), "logger=none"]
    run = tmp_path / "baseline"
    run_cli(
        "-m",
        "cremad_lit",
        "baseline",
        *base,
        "method=majority",
        "split.lockbox=[7,8]",
        f"hydra.run.dir={run}",
    )
    trained = json.loads((run / "metrics.json").read_text())
    assert set(trained["test_actors"]).isdisjoint({7, 8}) and trained["protocol"]["lockbox"] == [7, 8]
    opening = ["evaluate.py", f"ckpt_path={run}", "subset=lockbox", *common(root, tmp_path)[1:3]]
    kill_at(monkeypatch, "metrics.json:1:while")
    assert killed(run_cli(*opening, f"hydra.run.dir={tmp_path / 'opened' / 'first'}", check=False))
    kill_at(monkeypatch, None)
    for name in ("first", "second"):  # the killed opening's command again, then a second look
        run_cli(*opening, f"hydra.run.dir={tmp_path / 'opened' / name}")
    first, second = (
        json.loads((tmp_path / "opened" / n / "metrics.json").read_text()) for n in ("first", "second")
    )
    assert first["actors"] == [7, 8] and first["n_test"] == 88
    assert (first["lockbox"]["opened_before"], second["lockbox"]["opened_before"]) == (0, 1)
    ledger = json.loads(Path(first["lockbox"]["ledger"]).read_text())
    assert ledger["speakers"] == [7, 8] and [o["run"] for o in ledger["openings"]] == [
        str((tmp_path / "opened" / n).resolve()) for n in ("first", "second")
    ]
    assert [o["completed"] for o in ledger["openings"]] == [True, True]
    assert ledger["openings"][0]["accuracy"] == pytest.approx(first["accuracy"])
    run_cli("-m", "cremad_lit", "report", str(tmp_path / "opened"))
    table = pd.read_csv(tmp_path / "opened" / "runs.csv")
    assert sorted(table["config"]) == ["all runs", "all runs [lockbox opened 1 time(s) before]"]
