"""Hyperparameter search (cremad_lit/search.py through Hydra's sweeper slot, hparams_search=...): the objective is the
mean of the inner folds' metrics, no inner split holds an outer test or lockbox speaker, a killed sweep resumes
without counting a trial twice, pruned trials are recorded as pruned, and `select` judges a search as a candidate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from cremad_lit.search import distributions, override_text
from tests.conftest import kill_at, on_six_actors, read_wandb_log, run_cli
from tests.test_kills import killed

# RAVDESS 01-06 with actor 6 as the lockbox (nothing may ever hold it): outer fold 0 of 2 (blocks) tests the first
# speakers; the rest make the inner folds.
PROTOCOL = [
    "data=ravdess",
    "split.protocol=blocks",
    "split.folds=2",
    "split.fold=0",
    "split.fractions=[0.85,0.0,0.15]",
    "split.lockbox=[6]",
]
LINEAR = [
    "hparams_search=linear_optuna",
    "hydra.sweeper.params.method=egemaps_logreg",
    "hydra.sweeper.inner_folds=2",
]


def test_the_search_space_reads_hydras_sweep_grammar():
    space, pinned, fixed = distributions(
        {
            "lr": "tag(log, interval(1e-4, 1e-2))",
            "layers": "range(1, 4)",
            "channels": "choice([16,32],[32,64])",
            "cell": "choice(lstm, gru)",
            "method": "egemaps_logreg",
        },
        ["data=ravdess", "dropout=interval(0.1, 0.5)"],
    )
    assert space["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert space["layers"] == optuna.distributions.IntDistribution(1, 3)
    assert space["channels"].choices == ("[16,32]", "[32,64]")  # lists kept as override text
    assert space["dropout"] == optuna.distributions.FloatDistribution(0.1, 0.5)
    assert pinned == ["method=egemaps_logreg"] and fixed == ["data=ravdess"]
    assert override_text([16, 32]) == "[16,32]" and override_text(True) == "true"
    with pytest.raises(ValueError, match="also fixed"):
        distributions({"lr": "interval(0.1, 0.2)"}, ["lr=0.1"])
    with pytest.raises(ValueError, match="set by the search itself"):
        distributions({"lr": "interval(0.1, 0.2)"}, ["split.inner_folds=3"])


@pytest.mark.parametrize(
    ("search", "entry", "base"),
    [
        ("speech_optuna", "train", ["experiment=speech", "data=ravdess"]),
        ("paper_optuna", "train", ["experiment=paper_model2"]),
        ("linear_optuna", "baseline", ["data=ravdess"]),
    ],
)
def test_every_searched_key_is_a_setting_of_the_config_it_searches(search, entry, base):
    """A misspelt key in a search space would only fail at the first trial: every key is a value (or a group) of
    the composed config, and the sweeper slot holds the fold search."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tests.conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(entry, overrides=[*base, f"hparams_search={search}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaFoldSweeper") and cfg.split.folds
    space, pinned, _ = distributions(OmegaConf.to_container(sweeper.params), [])
    assert space
    for key in [*space, *(p.split("=", 1)[0] for p in pinned)]:
        if "/" in key:  # a group: each choice is a file of it
            for choice in space[key].choices:
                assert (REPO / "conf" / key / f"{choice}.yaml").is_file(), (key, choice)
        else:
            assert OmegaConf.select(cfg, key, default="missing") != "missing", key


@pytest.mark.slow
def test_a_search_scores_inner_folds_resumes_after_kill_9_and_prunes(six_actors, tmp_path, monkeypatch):
    """Three trials of the linear model (C and speaker normalisation searched) on two inner folds: each trial's value
    is the mean of its fold runs' metrics.json, no fold run holds an outer test or lockbox speaker. Killed (kill -9)
    while its second trial writes a fold's metrics, the same command keeps the finished trial, reruns the interrupted
    point and ends with three counted trials. A pruner that stops every trial after its first fold records them as
    pruned, with W&B's runs grouped by study."""
    sweep = tmp_path / "search"

    def search(*extra: str, check: bool = True):
        args = ["-m", "cremad_lit", "baseline", *PROTOCOL, *on_six_actors(six_actors, tmp_path), *LINEAR]
        return run_cli(*args, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", *extra, check=check)

    kill_at(monkeypatch, "metrics.json:3:while")  # trial 0's two folds are written; trial 1 dies in its first
    assert killed(search("logger=none", check=False))
    kill_at(monkeypatch, None)
    first = (sweep / "trial-000" / "fold-0" / "metrics.json").stat().st_mtime_ns
    search("logger=none")
    result = json.loads((sweep / "search.json").read_text())
    states = {t["number"]: t for t in result["trials"]}
    assert states[0]["state"] == "complete" and states[1]["state"] == "interrupted"
    [rerun] = [t for t in result["trials"] if t["rerun_of"] == 1]
    assert rerun["params"] == states[1]["params"] and rerun["state"] == "complete"
    assert result["counts"] == {"complete": 3, "pruned": 0, "fail": 0, "interrupted": 1}
    assert (sweep / "trial-000" / "fold-0" / "metrics.json").stat().st_mtime_ns == first  # not run again
    for trial in (t for t in result["trials"] if t["state"] == "complete"):
        folds = [json.loads((Path(run) / "metrics.json").read_text()) for run in trial["runs"]]
        assert [f["protocol"]["nested"]["inner_fold"] for f in folds] == [0, 1]
        assert trial["value"] == pytest.approx(np.mean([f["accuracy"] for f in folds]))
        assert trial["fold_scores"] == pytest.approx([f["accuracy"] for f in folds])
        for run, fold in zip(trial["runs"], folds, strict=True):
            outer_test = set(fold["protocol"]["nested"]["outer_test_actors"])
            assert outer_test and 6 not in outer_test
            split = pd.read_csv(Path(run) / "split.csv")
            assert not set(split["actor_id"]) & {*outer_test, 6}, (
                run
            )  # the outer test speakers and the lockbox
            overrides = yaml.safe_load((Path(run) / ".hydra" / "overrides.yaml").read_text())
            assert f"C_grid={override_text(trial['params']['C_grid'])}" in overrides
    best = max((t for t in result["trials"] if t["state"] == "complete"), key=lambda t: t["value"])
    assert result["best"]["number"] == best["number"]
    markdown = (sweep / "search.md").read_text()
    assert f"C_grid={override_text(best['params']['C_grid'])}" in markdown and "split.fold=0" in markdown
    assert (sweep / "history.png").stat().st_size > 10_000 and (sweep / "importance.png").is_file()
    again = search("logger=none")  # the study holds its three trials: nothing runs
    assert "Launching" not in again.stdout + again.stderr

    pruned = tmp_path / "pruned"
    run_cli(
        "-m", "cremad_lit", "baseline", *PROTOCOL, *on_six_actors(six_actors, tmp_path), *LINEAR,
        "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.01",
        "hydra.sweeper.study_name=pruned", f"hydra.sweep.dir={pruned}",
    )  # fmt: skip
    result = json.loads((pruned / "search.json").read_text())
    assert [t["state"] for t in result["trials"]] == ["pruned", "pruned"] and result["best"] is None
    assert not list(pruned.glob("trial-*/fold-1"))  # stopped after their first fold
    for run in pruned.glob("trial-*/fold-0"):
        records = read_wandb_log(next((run / "wandb").rglob("run-*.wandb")))
        [record] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert record.run_group == "baseline/search/pruned"
        assert "split.inner_fold=0" in record.display_name and "C_grid=" in record.display_name


@pytest.mark.slow
def test_select_judges_a_search_by_its_outer_folds(six_actors, tmp_path, fork_subcommands):
    """A study whose second candidate is a search: inside each outer fold the search sees only that fold's training
    speakers; its best point is trained on them and tested on the outer fold (outer: all puts both candidates on every
    fold), and the paired comparison covers the same speakers."""
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "outer_folds": 2,
                "inner_folds": 2,
                "metric": "accuracy",
                "outer": "all",
                "overrides": ["data=ravdess", "split.protocol=blocks", "split.fractions=[0.85,0.0,0.15]"],
                "candidates": {
                    "fixed": {"command": "baseline", "overrides": ["method=egemaps_logreg", "C_grid=[0.1]"]},
                    "searched": {
                        "command": "baseline",
                        "overrides": ["hydra.sweeper.params.method=egemaps_logreg"],
                        "search": "linear_optuna",
                        "trials": 1,
                    },
                },
            }
        )
    )
    out = tmp_path / "select"
    args = ["-m", "cremad_lit", "select", str(study), *on_six_actors(six_actors, tmp_path), "logger=none"]
    result = run_cli(*args, "--out", str(out))
    selection = json.loads((out / "selection.json").read_text())
    for fold in (0, 1):
        outer_test = {3 * fold + k for k in (1, 2, 3)}
        search = json.loads((out / "inner" / "searched" / f"outer-{fold}" / "search.json").read_text())
        assert search["counts"]["complete"] == 1 and search["split"] == {"folds": 2, "fold": fold}
        for trial in search["trials"]:
            for run in trial["runs"]:
                assert not set(pd.read_csv(Path(run) / "split.csv")["actor_id"]) & outer_test
        [outer] = list((out / "outer" / "searched").glob(f"folds-{fold}/*/metrics.json"))
        overrides = yaml.safe_load((outer.parent / ".hydra" / "overrides.yaml").read_text())
        assert set(search["best"]["overrides"]) <= set(overrides)  # the best point, on the outer fold
        assert json.loads(outer.read_text())["test_actors"] == sorted(outer_test)
        chosen = next(f for f in selection["folds"] if f["outer_fold"] == fold)
        assert chosen["inner_scores"]["searched"] == pytest.approx(search["best"]["value"])
    procedures = selection["procedures"]
    assert set(procedures) == {"fixed", "searched"} and procedures["fixed"]["against_first"] is None
    assert procedures["searched"]["against_first"]["speakers"] == 6
    assert "difference from fixed" in result.stdout
