"""Splits: actor-disjoint by default (fractions or k folds over actors, stratified by gender, deterministic by seed);
a random clip split only when asked for (`split.by=clip`, leaky: every actor is in train and test).

    from cremad_lit.data.splits import make_split
    split = make_split(clips, fractions=(0.7, 0.15, 0.15), seed=0)         # one row per actor: actor_id, gender, split
    split = make_split(clips, folds=5, fold=2, seed=0)                      # fold 2 is the test set
    split = make_split(clips, folds=5, fold=2, by="clip")                   # one row per clip, stratified by emotion
    split = make_split(clips, folds=5, fold=0, protocol="blocks")          # consecutive speaker IDs: 1001-1018, ...
    split, leaky = load_clip_lists({"train": "train.csv", "test": "test.csv"}, clips)  # published clip lists

With `by="actor"` no clip of a test actor is ever in training or model selection: `check_actor_disjoint` asserts it
on every setup.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cremad_lit.data.media import MEDIA_FILES
from cremad_lit.io import write_text

SPLITS = ("train", "val", "test")
SPLIT_BY = ("actor", "clip")
# random: actors dealt into folds at random, stratified by gender | blocks: k folds of consecutive speaker IDs in ID
# order (the literature's CREMA-D and RAVDESS protocols; the remainder goes to the last folds: 18/18/18/18/19).
PROTOCOLS = ("random", "blocks")
log = logging.getLogger(__name__)
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
    protocol: str = "random",
) -> pd.DataFrame:
    """Assign each actor of `clips` (each clip with `by="clip"`) to train, val or test.

    With `folds`, actors are dealt into `folds` gender-stratified folds, fold `fold` is the test set, and validation
    actors are taken from the remaining ones with the val fraction of `fractions` (renormalised to the training side).
    Clip splits do the same with clips in place of actors and emotion in place of gender.
    """
    if by not in SPLIT_BY:
        raise ValueError(f"split.by must be one of {SPLIT_BY}, not {by!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"split.protocol must be one of {PROTOCOLS}, not {protocol!r}")
    if protocol == "blocks" and (folds is None or by != "actor"):
        raise ValueError(
            "split.protocol=blocks deals speakers into folds: it needs split.folds=K and split.by=actor"
        )
    if by == "clip":
        units = clips[["clip_id", "actor_id", "emotion"]].rename(
            columns={"clip_id": "unit", "emotion": "stratum"}
        )
        split = _assign(units.sort_values("unit", ignore_index=True), fractions, folds, fold, seed)
        split = split.rename(columns={"unit": "clip_id", "stratum": "emotion"})
        check_actor_disjoint(split)
        return split
    units = _actors(clips).rename(columns={"actor_id": "unit", "gender": "stratum"})
    blocks = id_blocks(units["unit"], folds) if protocol == "blocks" else None
    split = _assign(units, fractions, folds, fold, seed, blocks).rename(
        columns={"unit": "actor_id", "stratum": "gender"}
    )
    check_actor_disjoint(split)
    return split


def id_blocks(ids, folds: int) -> dict:
    """unit -> fold for `folds` blocks of consecutive IDs in ID order; the remainder goes to the last blocks."""
    ordered = sorted(ids)
    if not 2 <= folds <= len(ordered):
        raise ValueError(
            f"split.folds must be between 2 and the number of speakers ({len(ordered)}), not {folds}"
        )
    base, extra = divmod(len(ordered), folds)
    sizes = [base + (1 if k >= folds - extra else 0) for k in range(folds)]
    bounds = np.cumsum([0, *sizes])
    return {unit: k for k in range(folds) for unit in ordered[bounds[k] : bounds[k + 1]]}


def _assign(units: pd.DataFrame, fractions, folds, fold, seed, blocks: dict | None = None) -> pd.DataFrame:
    """Split the rows of `units` (columns unit, stratum): the same procedure for actors and for clips. `blocks`
    (unit -> fold) replaces the random deal into folds."""
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
        fold_of = blocks or {unit: i % folds for i, unit in enumerate(order)}
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


# The lockbox is drawn with its own seed: it must not move when a run's seed does.
LOCKBOX_SEED = 1729


def lockbox_speakers(clips: pd.DataFrame, setting) -> list:
    """The speakers `split.lockbox` names: a list of speaker ids (each must be in the corpus), or a count drawn once
    and for all (gender-balanced, from LOCKBOX_SEED, whatever the run's seed); [] for none."""
    if setting in (None, 0, "none") or (isinstance(setting, (list, tuple)) and not setting):
        return []
    actors = _actors(clips)
    if isinstance(setting, int):
        if not 0 < setting < len(actors) - 2:
            raise ValueError(
                f"split.lockbox={setting}: the corpus has {len(actors)} speakers, too few to hold out"
            )
        strata = _shuffled_by_gender(
            actors.rename(columns={"actor_id": "unit", "gender": "stratum"}),
            np.random.default_rng(LOCKBOX_SEED),
        )
        dealt = []  # the genders in turn, so the lockbox is as balanced as the count allows
        for i in range(max(len(s) for s in strata)):
            dealt += [s[i] for s in strata if i < len(s)]
        return sorted(_plain(a) for a in dealt[:setting])
    by_name = {str(a): _plain(a) for a in actors["actor_id"]}
    missing = [s for s in setting if str(s) not in by_name]
    if missing:
        raise ValueError(f"split.lockbox names speakers the corpus does not have: {missing}")
    return sorted(by_name[str(s)] for s in setting)


def _plain(value):
    """A numpy scalar as the Python value (JSON, YAML and config lists take those)."""
    return value.item() if hasattr(value, "item") else value


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


def _clip_names(path: Path) -> list[str]:
    """The clip names of one list file (a CSV or text file: the first field of each line, a bare name or a path)."""
    names = []
    for line in Path(path).read_text().splitlines():
        field = line.replace(";", ",").replace("\t", ",").split(",")[0].strip().strip('"')
        name = Path(field.replace("\\", "/")).name
        if name.lower().endswith(MEDIA_FILES):
            name = name.rsplit(".", 1)[0]
        if name:
            names.append(name)
    return names


def load_clip_lists(
    lists: dict, clips: pd.DataFrame, fractions=(0.7, 0.15, 0.15), seed: int = 0
) -> tuple[pd.DataFrame, dict]:
    """A clip split from published lists ({train: file, test: file[, val: file]}), and what it says about speakers.

    Names match clip_ids (a header line, or names the corpus does not have, are counted and left out). Without a val
    list, validation clips come from the train list (the val share of `fractions`, stratified by emotion): never
    from the test list. The second value records the protocol: clips per split, the speakers found on more than one
    side (`leaky` when any is: the model can learn the person instead of the emotion)."""
    unknown = set(lists) - set(SPLITS)
    if unknown or not {"train", "test"} <= set(lists):
        raise ValueError(
            f"split.file lists need train and test (and optionally val) files, not {sorted(lists)}"
        )
    known = set(clips["clip_id"])
    assignment, not_found = {}, {}
    for name, path in lists.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"split.file.{name}={path} does not exist")
        names = _clip_names(path)
        not_found[name] = [n for n in names if n not in known]
        for clip_id in names:
            if clip_id in known:
                if assignment.get(clip_id, name) != name:
                    raise ValueError(
                        f"clip {clip_id} is in both the {assignment[clip_id]} and the {name} list"
                    )
                assignment[clip_id] = name
    split = clips[clips["clip_id"].isin(assignment)][["clip_id", "actor_id", "emotion"]].copy()
    split["split"] = split["clip_id"].map(assignment)
    if "val" not in lists:
        train = split[split["split"] == "train"].rename(columns={"clip_id": "unit", "emotion": "stratum"})
        val_share = fractions[1] / (fractions[0] + fractions[1])
        chosen = _assign(train[["unit", "stratum"]], (1 - val_share, val_share, 0.0), None, 0, seed)
        split.loc[split["clip_id"].isin(chosen.loc[chosen["split"] == "val", "unit"]), "split"] = "val"
    split = split.sort_values("clip_id", ignore_index=True)
    check_actor_disjoint(split)
    sides = split.groupby("actor_id")["split"].agg(lambda s: set(s) & {"train", "test"})
    shared = sorted(a.item() if hasattr(a, "item") else a for a, s in sides.items() if len(s) > 1)
    protocol = {
        "protocol": "lists",
        "files": {name: str(path) for name, path in lists.items()},
        "clips": split["split"].value_counts().to_dict(),
        "not_in_corpus": {name: len(names) for name, names in not_found.items()},
        "left_out": int(len(known) - len(split)),
        "speakers_in_train_and_test": shared,
        "leaky": bool(shared),
    }
    return split, protocol


def lists_leaky_warning(protocol: dict) -> str:
    shared = protocol["speakers_in_train_and_test"]
    return (
        f"split.file lists: {len(shared)} speakers have clips in both train and test (e.g. {shared[:5]}): LEAKY, the "
        "model can recognise the person instead of the emotion; comparable only with numbers on the same lists."
    )


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    write_text(path, split.to_csv(index=False))
    return path


def hold_out_lockbox(clips: pd.DataFrame, setting, eval_split: str | None) -> tuple[pd.DataFrame, list]:
    """The lockbox's speakers leave before any protocol sees the corpus; only `evaluate.py subset=lockbox` opens it
    (then they are all that is left)."""
    lockbox = lockbox_speakers(clips, setting)
    if eval_split == "lockbox" and not lockbox:
        raise ValueError("subset=lockbox, but this run's config holds no lockbox (split.lockbox)")
    if lockbox:
        inside = clips["actor_id"].isin(lockbox)
        clips = clips[inside] if eval_split == "lockbox" else clips[~inside]
        log.info(
            "lockbox speakers %s: %s",
            lockbox,
            "OPENED (evaluated now)" if eval_split == "lockbox" else "held out of this run",
        )
    return clips, lockbox


def hold_out_outer_test(clips: pd.DataFrame, config, by: str) -> tuple[pd.DataFrame, dict, dict]:
    """Nested selection (`split.inner_folds=K split.inner_fold=j`): the run lives inside outer fold `split.fold`'s
    training speakers. That fold's test speakers leave (as the lockbox's do), and the rest is split into K inner folds
    by the same protocol and seed, inner fold j testing: a candidate recipe is scored on speakers that are never the
    reported ones (`python -m cremad_lit select`). Returns the clips left, the split config to apply to them and the
    record for metrics.json ({} when the run is not an inner one)."""
    inner_folds = config.get("inner_folds")
    if not inner_folds:
        return clips, config, {}
    if by != "actor" or not config.get("folds") or config.get("file"):
        raise ValueError(
            "split.inner_folds (nested selection) works inside actor folds: it needs split.folds=K, split.by=actor "
            "and no split.file"
        )
    folds, fold, seed = int(config["folds"]), int(config.get("fold", 0)), int(config.get("seed", 0))
    outer = make_split(
        clips,
        fractions=tuple(config.get("fractions", (0.7, 0.15, 0.15))),
        folds=folds,
        fold=fold,
        seed=seed,
        protocol=config.get("protocol", "random"),
    )
    outer_test = sorted(
        a.item() if hasattr(a, "item") else a for a in outer.loc[outer["split"] == "test", "actor_id"]
    )
    inner = {
        **config,
        "folds": int(inner_folds),
        "fold": int(config.get("inner_fold", 0)),
        "inner_folds": None,
    }
    record = {
        "level": "inner",
        "outer_folds": folds,
        "outer_fold": fold,
        "outer_test_actors": outer_test,
        "inner_folds": int(inner_folds),
        "inner_fold": inner["fold"],
    }
    log.info(
        "nested selection: inner fold %d of %d inside outer fold %d, whose test speakers %s are left out",
        inner["fold"],
        inner["folds"],
        fold,
        outer_test,
    )
    return clips[~clips["actor_id"].isin(outer_test)], inner, record


def choose_split(
    clips: pd.DataFrame, config, by: str, eval_split: str | None, lockbox: list
) -> tuple[pd.DataFrame, dict]:
    """The split table (which actors, or clips, train, validate and test) and the protocol record, as the `split`
    config says: a saved split.csv, published clip lists, every clip (evaluating another corpus, or the lockbox), or a
    new split (random or blocks, folds or fractions)."""
    split_file = config.get("file")
    fractions = tuple(config.get("fractions", (0.7, 0.15, 0.15)))
    protocol = {
        "by": by,
        "protocol": config.get("protocol", "random"),
        "folds": config.get("folds"),
        "fold": config.get("fold", 0) if config.get("folds") else None,
        "leaky": by == "clip",
        **({"lockbox": lockbox} if lockbox else {}),
    }
    if eval_split in ("lockbox", "all"):  # every clip is the test set: no split to make
        split = clips.groupby("actor_id", as_index=False)["gender"].first().assign(split="test")
        if eval_split == "lockbox" or not split_file:
            return split, protocol
    if isinstance(split_file, dict):  # published clip lists, {train: ..., test: ...[, val: ...]}
        split, protocol = load_clip_lists(split_file, clips, fractions, int(config.get("seed", 0)))
        if protocol["leaky"]:
            log.warning(lists_leaky_warning(protocol))
        return split, protocol
    if split_file:
        split = load_split(split_file, clips)
        return split, {"protocol": "file", "file": str(split_file), "leaky": split_key(split) == "clip_id"}
    split = make_split(
        clips,
        fractions=fractions,
        folds=config.get("folds"),
        fold=int(config.get("fold", 0)),
        seed=int(config.get("seed", 0)),
        by=by,
        protocol=protocol["protocol"],
    )
    check_actor_disjoint(split)
    return split, protocol
