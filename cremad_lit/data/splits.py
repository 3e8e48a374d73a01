"""Splits: actor-disjoint by default (fractions or k folds over actors, stratified by gender, deterministic by seed);
a random clip split only when asked for (`split.by=clip`, leaky: every actor is in train and test).

    from cremad_lit.data.splits import make_split
    split = make_split(clips, fractions=(0.7, 0.15, 0.15), seed=0)         # one row per actor: actor_id, gender, split
    split = make_split(clips, folds=5, fold=2, seed=0)                      # fold 2 is the test set
    split = make_split(clips, folds=5, fold=2, by="clip")                   # one row per clip, stratified by emotion

With `by="actor"` no clip of a test actor is ever in training or model selection: `check_actor_disjoint` asserts it
on every setup.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
SPLIT_BY = ("actor", "clip")
LEAKY_WARNING = (
    "split.by=clip: a random CLIP split, as behind most published CREMA-D numbers. Every actor is in train, val and "
    "test, so the model can recognise the person instead of the emotion: LEAKY, inflated accuracy, not comparable "
    "with actor-disjoint numbers (split.by=actor, the default)."
)


def split_key(split: pd.DataFrame) -> str:
    """The column a split table assigns: clip_id for clip splits, actor_id for actor splits."""
    return "clip_id" if "clip_id" in split.columns else "actor_id"


def _actors(clips: pd.DataFrame) -> pd.DataFrame:
    return (
        clips.groupby("actor_id", as_index=False)["gender"].first().sort_values("actor_id", ignore_index=True)
    )


def _shuffled_by_gender(units: pd.DataFrame, rng: np.random.Generator) -> list[np.ndarray]:
    """The units of each stratum (gender for actors, emotion for clips), shuffled."""
    return [rng.permutation(group["unit"].to_numpy()) for _, group in sorted(units.groupby("stratum"))]


def _take(ids: np.ndarray, fraction: float) -> int:
    """Actors for a split of `fraction`: at least one once a group has three actors, so small sets still split."""
    if fraction <= 0:
        return 0
    return max(1 if len(ids) >= 3 else 0, int(round(len(ids) * fraction)))


def make_split(
    clips: pd.DataFrame,
    fractions=(0.7, 0.15, 0.15),
    folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
    by: str = "actor",
) -> pd.DataFrame:
    """Assign each actor of `clips` (each clip with `by="clip"`) to train, val or test.

    With `folds`, actors are dealt into `folds` gender-stratified folds, fold `fold` is the test set, and validation
    actors are taken from the remaining ones with the val fraction of `fractions` (renormalised to the training side).
    Clip splits do the same with clips in place of actors and emotion in place of gender.
    """
    if by not in SPLIT_BY:
        raise ValueError(f"split.by must be one of {SPLIT_BY}, not {by!r}")
    if by == "clip":
        units = clips[["clip_id", "actor_id", "emotion"]].rename(
            columns={"clip_id": "unit", "emotion": "stratum"}
        )
        split = _assign(units.sort_values("unit", ignore_index=True), fractions, folds, fold, seed)
        split = split.rename(columns={"unit": "clip_id", "stratum": "emotion"})
        check_actor_disjoint(split)
        return split
    units = _actors(clips).rename(columns={"actor_id": "unit", "gender": "stratum"})
    split = _assign(units, fractions, folds, fold, seed).rename(
        columns={"unit": "actor_id", "stratum": "gender"}
    )
    check_actor_disjoint(split)
    return split


def _assign(units: pd.DataFrame, fractions, folds, fold, seed) -> pd.DataFrame:
    """Split the rows of `units` (columns unit, stratum): the same procedure for actors and for clips."""
    rng = np.random.default_rng(seed)
    assignment: dict = {}
    train_share, val_share, test_share = (float(f) for f in fractions)
    if folds is None:
        total = train_share + val_share + test_share
        for ids in _shuffled_by_gender(units, rng):
            n_test, n_val = _take(ids, test_share / total), _take(ids, val_share / total)
            for i, unit in enumerate(ids):
                assignment[unit] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    else:
        if not 0 <= fold < folds:
            raise ValueError(f"split.fold must be in 0..{folds - 1}, not {fold}")
        if folds < 2 or folds > len(units):
            raise ValueError(
                f"split.folds must be between 2 and the number of units ({len(units)}), not {folds}"
            )
        # Deal round-robin, continuing across strata, so each fold keeps the male/female (or emotion) balance.
        order = np.concatenate(_shuffled_by_gender(units, rng))
        fold_of = {unit: i % folds for i, unit in enumerate(order)}
        val_fraction = val_share / (train_share + val_share)
        rest = units[units["unit"].map(fold_of) != fold]
        for ids in _shuffled_by_gender(rest, np.random.default_rng(seed + 1)):
            n_val = max(1, _take(ids, val_fraction)) if val_fraction > 0 else 0
            for i, unit in enumerate(ids):
                assignment[unit] = "val" if i < n_val else "train"
        for unit, unit_fold in fold_of.items():
            if unit_fold == fold:
                assignment[unit] = "test"
    units = units.copy()
    units["split"] = units["unit"].map(assignment)
    return units


def check_actor_disjoint(split: pd.DataFrame) -> None:
    """Raise if an actor (a clip, in a clip split) is in two splits or none, or train or test is empty (test may be
    empty only when every actor trains: the final model)."""
    key = split_key(split)
    duplicated = split[key][split[key].duplicated()]
    if len(duplicated):
        raise AssertionError(f"{key} values in more than one split: {sorted(duplicated.unique())}")
    unknown = set(split["split"].dropna()) - set(SPLITS)
    if split["split"].isna().any() or unknown:
        raise AssertionError(f"every {key} needs a split in {SPLITS}; got {unknown or 'missing values'}")
    everyone_trains = (
        split["split"] == "train"
    ).all()  # the model to ship (final=all_speakers): nothing held out
    for name in ("train",) if everyone_trains else ("train", "test"):
        if not (split["split"] == name).any():
            raise AssertionError(f"the {name} split is empty")


def load_split(path: str | os.PathLike, clips: pd.DataFrame) -> pd.DataFrame:
    """A split saved by `save_split`; every actor (clip, for a clip split) of `clips` must be in it."""
    split = pd.read_csv(path, dtype={"clip_id": str})
    key = split_key(split)
    split[key] = split[key].astype(clips[key].dtype)
    check_actor_disjoint(split)
    missing = set(clips[key]) - set(split[key])
    if missing:
        raise ValueError(
            f"split file {path} has no split for {len(missing)} {key} values, e.g. {sorted(missing)[:5]}"
        )
    return split


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    split.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
