"""Actor-disjoint splits: train/val/test fractions or k folds over actors, stratified by gender, deterministic by seed.

    from cremad_lit.data.splits import make_split
    split = make_split(clips, fractions=(0.7, 0.15, 0.15), seed=0)         # one row per actor: actor_id, gender, split
    split = make_split(clips, folds=5, fold=2, seed=0)                      # fold 2 is the test set

No clip of a test actor is ever in training or model selection: `check_actor_disjoint` asserts it on every setup.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _actors(clips: pd.DataFrame) -> pd.DataFrame:
    return (
        clips.groupby("actor_id", as_index=False)["gender"].first().sort_values("actor_id", ignore_index=True)
    )


def _shuffled_by_gender(actors: pd.DataFrame, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(group["actor_id"].to_numpy()) for _, group in sorted(actors.groupby("gender"))]


def _take(ids: np.ndarray, fraction: float) -> int:
    """Actors for a split of `fraction`: at least one once a group has three actors, so small sets still split."""
    if fraction <= 0:
        return 0
    return max(1 if len(ids) >= 3 else 0, int(round(len(ids) * fraction)))


def make_split(
    clips: pd.DataFrame, fractions=(0.7, 0.15, 0.15), folds: int | None = None, fold: int = 0, seed: int = 0
) -> pd.DataFrame:
    """Assign each actor of `clips` to train, val or test.

    With `folds`, actors are dealt into `folds` gender-stratified folds, fold `fold` is the test set, and validation
    actors are taken from the remaining ones with the val fraction of `fractions` (renormalised to the training side).
    """
    actors = _actors(clips)
    rng = np.random.default_rng(seed)
    assignment: dict[int, str] = {}
    train_share, val_share, test_share = (float(f) for f in fractions)
    if folds is None:
        total = train_share + val_share + test_share
        for ids in _shuffled_by_gender(actors, rng):
            n_test, n_val = _take(ids, test_share / total), _take(ids, val_share / total)
            for i, actor in enumerate(ids):
                assignment[int(actor)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    else:
        if not 0 <= fold < folds:
            raise ValueError(f"split.fold must be in 0..{folds - 1}, not {fold}")
        if folds < 2 or folds > len(actors):
            raise ValueError(
                f"split.folds must be between 2 and the number of actors ({len(actors)}), not {folds}"
            )
        # Deal actors round-robin, continuing across genders, so each fold keeps the male/female balance.
        order = np.concatenate(_shuffled_by_gender(actors, rng))
        fold_of = {int(actor): i % folds for i, actor in enumerate(order)}
        val_fraction = val_share / (train_share + val_share)
        rest = actors[actors["actor_id"].map(fold_of) != fold]
        for ids in _shuffled_by_gender(rest, np.random.default_rng(seed + 1)):
            n_val = max(1, _take(ids, val_fraction)) if val_fraction > 0 else 0
            for i, actor in enumerate(ids):
                assignment[int(actor)] = "val" if i < n_val else "train"
        for actor, actor_fold in fold_of.items():
            if actor_fold == fold:
                assignment[actor] = "test"
    actors["split"] = actors["actor_id"].map(assignment)
    check_actor_disjoint(actors)
    return actors


def check_actor_disjoint(split: pd.DataFrame) -> None:
    """Raise if an actor is in two splits, is missing a split, or a split has no actor."""
    duplicated = split["actor_id"][split["actor_id"].duplicated()]
    if len(duplicated):
        raise AssertionError(f"actors in more than one split: {sorted(duplicated.unique())}")
    unknown = set(split["split"].dropna()) - set(SPLITS)
    if split["split"].isna().any() or unknown:
        raise AssertionError(f"every actor needs a split in {SPLITS}; got {unknown or 'missing values'}")
    for name in ("train", "test"):
        if not (split["split"] == name).any():
            raise AssertionError(f"the {name} split has no actor")


def load_split(path: str | os.PathLike, clips: pd.DataFrame) -> pd.DataFrame:
    """A split saved by `save_split`; every actor of `clips` must be in it."""
    split = pd.read_csv(path)
    check_actor_disjoint(split)
    missing = set(clips["actor_id"]) - set(split["actor_id"])
    if missing:
        raise ValueError(f"split file {path} has no split for actors {sorted(missing)}")
    return split


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    split.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
