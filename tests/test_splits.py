"""Actor-disjoint splits: fractions, gender balance, determinism, k-fold, saved files, the guard."""

from __future__ import annotations

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
