"""Every option of every config group composes with each entry point's main config and resolves; every config file
starts with its one-line comment; no file in conf/ is unreachable.

    .venv/bin/python -m pytest tests/test_configs.py
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from tests.conftest import REPO

CONF = REPO / "conf"
# A group's folder -> how an override names it. Backbones and functionals branches are chosen at a package.
GROUPS = {
    "data": ["data"],
    "model": ["model"],
    "model/backbone": ["model/backbone@model.video_backbone", "model/backbone@model.audio_backbone"],
    "model/temporal": ["model/temporal"],
    "model/fusion": ["model/fusion"],
    "model/functionals": ["+model/functionals@model.functionals"],
    "balance": ["balance"],
    "objectives": ["objectives"],
    "optim": ["optim"],
    "trainer": ["trainer"],
    "callbacks": ["callbacks"],
    "logger": ["logger"],
    "paths": ["paths"],
    "split": ["split"],
    "experiment": ["experiment"],
    "final": ["final"],
    "debug": ["debug"],
    "hydra/launcher": ["hydra/launcher"],
    "hydra/sweeper": ["hydra/sweeper"],
    "hydra/sweeper/pruner": ["hydra/sweeper/pruner"],
    "hparams_search": ["hparams_search"],
}
# Options that need more than their name to compose: the settings a user adds on the command line.
NEEDS = {
    ("data", "manifest"): ["data.manifest=clips.csv"],
    ("final", "all_speakers"): ["experiment=speech", "data=ravdess"],
    **{
        ("hydra/sweeper/pruner", p.stem): ["hydra/sweeper=optuna"]
        for p in (CONF / "hydra/sweeper/pruner").glob("*.yaml")
    },
}


def resolved(name: str, overrides: list[str]) -> dict:
    """The composed config with every value outside `hydra` resolved (run-time values set as a run sets them)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            name, overrides=[*overrides, "hydra.runtime.output_dir=/tmp/run"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        HydraConfig.instance().cfg = None


def options(group: str) -> list[str]:
    """A group's options: its files, less the bases other files extend (named `_*.yaml`)."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml") if not path.stem.startswith("_"))


CASES = [
    (group, override, option)
    for group, overrides in GROUPS.items()
    for override in overrides
    for option in options(group)
]


@pytest.mark.parametrize(("group", "override", "option"), CASES, ids=[f"{o}={n}" for _, o, n in CASES])
def test_every_option_of_every_group_composes_and_resolves(group, override, option):
    # Resolving every value catches a broken interpolation or a key the option refers to but no file sets.
    cfg = resolved("train", [*NEEDS.get((group, option), []), f"{override}={option}"])
    assert cfg["model"]["_target_"] and cfg["data"]["_target_"] and cfg["trainer"]["_target_"]


def test_every_config_file_is_reachable_and_says_what_it_is_for():
    top = {"train", "eval", "prepare", "predict", "baseline", "eda", "export", "app"}
    for path in sorted(CONF.rglob("*.yaml")):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("# @package")]
        first = lines[0]
        assert first.startswith("# ") and len(first) > 20, f"{path} must start with a one-line comment"
        group = path.parent.relative_to(CONF).as_posix()
        assert group in GROUPS or (group == "." and path.stem in top) or group in ("hydra", "study"), (
            f"{path.relative_to(REPO)} is in no group the tests compose"
        )


@pytest.mark.parametrize("study", sorted(p.stem for p in (CONF / "study").glob("*.yaml")))
def test_every_candidate_of_every_study_composes(study):
    """`python -m cremad_lit select <study>` (conf/study/): each candidate's runs, an inner and an outer one, compose
    with its command's config and resolve."""
    from cremad_lit.selection import load_study, resolve

    spec = load_study(study)
    for name, candidate in spec["candidates"].items():
        entry = {"train": "train", "baseline": "baseline"}[candidate.get("command", "train")]
        given = [
            f"{key}=/some/path" for key in spec.get("needs", [])
        ]  # what the study asks the command line for
        overrides = [
            *spec["overrides"],
            *given,
            *candidate.get("overrides", []),
            f"split.folds={spec['outer_folds']}",
        ]
        if candidate.get(
            "search"
        ):  # its inner runs are a search's trials (tests/test_search.py composes those)
            searching = resolved(entry, [*overrides, f"hparams_search={candidate['search']}", "split.fold=1"])
            assert searching["split"]["folds"] == spec["outer_folds"], name
            overrides = [o for o in overrides if not o.startswith("hydra.sweeper.")]
        else:
            inner = resolved(
                entry, [*overrides, f"split.inner_folds={spec['inner_folds']}", "split.inner_fold=1"]
            )
            assert inner["split"]["inner_folds"] == spec["inner_folds"], name
        outer = resolved(entry, [*overrides, "++selection={level:nested,study:s,candidate:c,inner_folds:2}"])
        assert outer["selection"]["level"] == "nested", name
        # RAVDESS's lockbox stays shut in every candidate: the run's own, or (a mix) its RAVDESS corpus's.
        corpora = outer["data"].get("corpora") or {}
        lockbox = corpora["ravdess"]["split"]["lockbox"] if corpora else outer["split"]["lockbox"]
        assert lockbox == [16, 17, 18], name
        final = resolved(entry, [*overrides, "final=all_speakers"])  # `--open`: the choice on every speaker
        assert final["split"]["fractions"] == [1.0, 0.0, 0.0], name
    for box, box_overrides in spec.get("lockboxes", {}).items():  # `--open`: each lockbox's evaluation
        evaluation = resolved("eval", ["ckpt_path=x", "subset=lockbox", *resolve(box_overrides, given)])
        assert evaluation["lockbox"] and evaluation["data"]["dataset"], box


def test_the_entry_points_compose():
    for name in ("train", "eval", "prepare", "predict", "baseline", "eda", "export", "app"):
        overrides = ["ckpt_path=x.ckpt"] if name in ("eval", "predict", "export", "app") else []
        assert resolved(name, overrides)["paths"]["output_dir"] == "/tmp/run", name


def test_the_trio_recipe_is_the_study_candidate_it_was_chosen_as():
    """experiment=speech_trio composes to exactly the `trio` candidate of conf/study/speech_ge2e.yaml (the recipe the
    nested selection measured), so the command in the README is what was chosen."""
    from cremad_lit.selection import load_study

    trio = load_study("speech_ge2e")["candidates"]["trio"]["overrides"]
    assert resolved("train", ["experiment=speech_trio"]) == resolved("train", list(trio))
