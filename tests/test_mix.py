"""Several corpora as one (data=mix): real RAVDESS actors and real ASED (Amharic, FLAC) speakers, namespaced, split
inside each corpus, trained and evaluated as one run with every number per corpus too.

    .venv/bin/python -m pytest tests/test_mix.py
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cremad_lit.data.corpus import Corpus, MixCorpus, corpus_sampling_weights
from tests.conftest import run_cli
from tests.test_corpora import TINY_AUDIO

SPLIT = {"by": "actor", "fractions": [0.5, 0.25, 0.25], "seed": 0, "protocol": "random", "folds": None}


@pytest.fixture(scope="module")
def two_corpora(six_actors, ased_dir, tmp_path_factory):
    """The suite's six RAVDESS actors and six ASED speakers' common sentences 01-02 (a manifest of their FLAC files):
    small, real, in two languages."""
    folder = tmp_path_factory.mktemp("mix")
    ravdess = six_actors[0]
    manifest = pd.read_csv(ased_dir / "manifest.csv", dtype=str)
    sentence = manifest["clip_id"].str.split("-").str[1]
    keep = manifest[
        manifest["speaker"].isin(["01", "02", "03", "04", "05", "06"]) & sentence.isin(["01", "02"])
    ].copy()
    keep["audio_path"] = [str(ased_dir / p) for p in keep["audio_path"]]
    keep.to_csv(folder / "ased.csv", index=False)
    return ravdess, folder / "ased.csv"


def mix_config(ravdess, ased, **data) -> dict:
    return {
        "dataset": "mix",
        "modalities": ["audio"],
        "split": SPLIT,
        "corpora": {
            "ravdess": {"dataset": "ravdess", "root": str(ravdess), "split": {"lockbox": [6]}},
            "ased": {"dataset": "manifest", "manifest": str(ased)},
        },
        **data,
    }


def test_a_mix_namespaces_speakers_and_splits_inside_each_corpus(two_corpora):
    ravdess, ased = two_corpora
    corpus = Corpus.from_config(mix_config(ravdess, ased))
    assert isinstance(corpus, MixCorpus) and corpus.classes == ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
    clips = corpus.catalog()
    assert set(clips["corpus"]) == {"ravdess", "ased"} and clips["clip_id"].is_unique
    assert all(a.startswith(f"{c}/") for a, c in zip(clips["actor_id"], clips["corpus"], strict=True))
    assert not (clips["corpus"].eq("ased") & clips["emotion"].eq("DIS")).any()  # ASED has no disgust

    assigned = corpus.assign(clips)
    assert assigned.lockbox == ["ravdess/6"] and "ravdess/6" not in set(assigned.clips["actor_id"])
    for name in ("ravdess", "ased"):  # every corpus has its own train, val and test speakers, none shared
        own = assigned.clips[assigned.clips["corpus"] == name]
        sides = [set(own.loc[own["split"] == s, "actor_id"]) for s in ("train", "val", "test")]
        assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert set(assigned.protocol["corpora"]) == {"ravdess", "ased"}

    # RAVDESS's part is split as RAVDESS alone is: the same test speakers, so a mix and a run on one corpus pair up.
    alone = Corpus.from_config(
        {
            **mix_config(ravdess, ased)["corpora"]["ravdess"],
            "modalities": ["audio"],
            "split": {**SPLIT, "lockbox": [6]},
        }
    )
    alone = alone.assign(alone.catalog())
    ravdess_part = assigned.clips[assigned.clips["corpus"] == "ravdess"]
    for side in ("train", "val", "test"):
        assert [f"ravdess/{a}" for a in alone.actors(side)] == sorted(
            set(ravdess_part.loc[ravdess_part["split"] == side, "actor_id"])
        )

    # role=train: every ASED speaker trains, none validates or tests; the lockbox opens RAVDESS's (ASED has none).
    config = mix_config(ravdess, ased)
    config["corpora"]["ased"]["role"] = "train"
    extra = Corpus.from_config(config)
    with_extra = extra.assign(extra.catalog())
    ased_part = with_extra.clips[with_extra.clips["corpus"] == "ased"]
    assert len(ased_part) == (clips["corpus"] == "ased").sum() and set(ased_part["split"]) == {"train"}
    assert (
        with_extra.actors("test")
        == assigned.clips.query("corpus == 'ravdess' and split == 'test'")["actor_id"]
        .drop_duplicates()
        .sort_values()
        .tolist()
    )
    opened = extra.assign(extra.catalog(), eval_split="lockbox")
    assert set(opened.clips["actor_id"]) == {"ravdess/6"}
    # role=test (the cross-corpus protocol): RAVDESS only tests, all of it but its lockbox; ASED trains, as alone.
    config = mix_config(ravdess, ased)
    config["corpora"]["ravdess"]["role"] = "test"
    cross = Corpus.from_config(config)
    crossed = cross.assign(cross.catalog())
    ravdess_part = crossed.clips[crossed.clips["corpus"] == "ravdess"]
    assert set(ravdess_part["split"]) == {"test"} and "ravdess/6" not in set(ravdess_part["actor_id"])
    assert ravdess_part["actor_id"].nunique() == 5 and crossed.actors("train")
    assert not set(crossed.actors("train")) & set(ravdess_part["actor_id"])
    config["corpora"]["ased"]["role"] = "test"
    with pytest.raises(ValueError, match="none is left to train on"):
        Corpus.from_config(config)

    # The classes every corpus has: ASED's five; any corpus has: RAVDESS's eight with data.classes=union.
    assert Corpus.from_config(mix_config(ravdess, ased, classes="shared")).classes == (
        "ANG",
        "FEA",
        "HAP",
        "NEU",
        "SAD",
    )
    assert len(Corpus.from_config(mix_config(ravdess, ased, classes="union")).classes) == 8
    # Training's draws: each corpus equally often (balanced), in between with a temperature, or every clip alike.
    sizes = clips["corpus"].value_counts()
    for sampling, expected in (("balanced", 1.0), (2, (sizes["ased"] / sizes["ravdess"]) ** 0.5)):
        share = pd.Series(corpus_sampling_weights(clips, sampling)).groupby(clips["corpus"]).sum()
        assert share.sum() == pytest.approx(1) and share["ased"] / share["ravdess"] == pytest.approx(expected)
    assert corpus_sampling_weights(clips, "proportional") is None
    with pytest.raises(ValueError, match="data.sampling must be proportional, balanced or a temperature"):
        corpus_sampling_weights(clips, "often")
    with pytest.raises(ValueError, match="lockbox or a split.file belongs to one corpus"):
        Corpus.from_config(mix_config(ravdess, ased, split={**SPLIT, "lockbox": [1]}))


@pytest.mark.slow
def test_train_and_evaluate_on_a_mix_report_every_number_per_corpus(two_corpora, tmp_path):
    """`data=mix` as its config file ships it, the two paths given: train, then evaluate the run again; metrics.json's
    per-corpus numbers are those of predictions.csv's rows of each corpus."""
    ravdess, ased = two_corpora
    run = tmp_path / "run"
    data = ["data=mix", f"data.corpora.ravdess.root={ravdess}", f"data.corpora.ased.manifest={ased}"]
    data += ["data.sampling=balanced"]  # the training loader draws through its corpus weights
    common = [f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}", "logger=none"]
    trained = run_cli(
        "train.py", *data, *common, *TINY_AUDIO, "split.fractions=[0.5,0.25,0.25]", f"hydra.run.dir={run}"
    )
    assert "data.sampling=balanced: training draws ased 50%, ravdess 50%" in trained.stdout + trained.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(metrics["per_corpus"]) == {"ravdess", "ased"}
    for name, numbers in metrics["per_corpus"].items():
        own = predictions[predictions["corpus"] == name]
        assert numbers["n_test"] == len(own) > 0
        assert numbers["war"] == pytest.approx((own["label"] == own["pred"]).mean())
        recalls = own.assign(right=own["label"] == own["pred"]).groupby("label")["right"].mean()
        assert numbers["uar"] == pytest.approx(recalls.mean()) and numbers["classes"] == sorted(recalls.index)
    split = pd.read_csv(run / "split.csv", dtype=str)
    assert split["actor_id"].str.partition("/")[0].eq(split["corpus"]).all()

    again = tmp_path / "again"
    run_cli("evaluate.py", f"ckpt_path={run}", *common, f"hydra.run.dir={again}")
    assert json.loads((again / "metrics.json").read_text())["per_corpus"] == metrics["per_corpus"]

    # predict on the FLAC files of ASED's test clips: the numbers evaluate gave them
    tested = predictions[predictions["corpus"] == "ased"]
    paths = pd.read_csv(ased, dtype=str).set_index("clip_id")["audio_path"]
    files = paths.loc[tested["clip_id"].str.partition("/")[2]].tolist()
    run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={run}",
        f"inputs=[{','.join(files)}]",
        common[1],
        f"hydra.run.dir={tmp_path / 'predict'}",
    )
    predicted = pd.read_csv(tmp_path / "predict" / "predictions.csv").set_index("file").loc[files]
    classes = [c[2:] for c in tested.columns if c.startswith("p_")]
    assert predicted[classes].to_numpy() == pytest.approx(
        tested[[f"p_{c}" for c in classes]].to_numpy(), abs=1e-5
    )

    run_cli(
        "-m", "cremad_lit", "report", str(run)
    )  # the report's own section, an interval over each corpus's speakers
    section = (run / "report.md").read_text().split("## Per corpus")[1]
    for name, numbers in metrics["per_corpus"].items():
        assert f"| {name} | 1 | {numbers['war']:.3f} ± 0.000 | [" in section


def test_the_linear_model_weighs_its_training_clips_as_the_sampling_says():
    """The classical model fits each clip once: data.sampling reaches it as sample weights (a clip of weight 0 is as
    if absent; equal weights are the unweighted fit)."""
    import numpy as np

    from cremad_lit.classical import fit_classical

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), np.tile(np.arange(3), 20)
    x[y == 1] += 1.0
    val = (x[:6], y[:6])
    plain, _ = fit_classical("compare_logreg", (x, y), val, [1.0])
    same, _ = fit_classical("compare_logreg", (x, y), val, [1.0], np.ones(60))
    assert np.allclose(same["coef"], plain["coef"])
    weights = np.r_[np.full(30, 2.0), np.zeros(30)]  # the second "corpus" weighs nothing
    weighted, _ = fit_classical("compare_logreg", (x, y), val, [1.0], weights)
    relabelled = np.r_[y[:30], rng.permutation(y[30:])]  # so its labels change nothing
    again, _ = fit_classical("compare_logreg", (x, relabelled), val, [1.0], weights)
    assert not np.allclose(weighted["coef"], plain["coef"]) and np.allclose(again["coef"], weighted["coef"])


@pytest.mark.slow
def test_select_between_one_corpus_and_the_mix_then_open_both_lockboxes_as_one_occasion(
    two_corpora, tmp_path, fork_subcommands
):
    """A study of RAVDESS alone against RAVDESS + ASED (role=train), each corpus with a lockbox: `select --open`
    trains the choice on every speaker outside both lockboxes and opens each once, one occasion in each corpus's
    ledger; run again, it opens nothing. The evaluated corpus's own lockbox cannot be renamed at evaluation."""
    import yaml

    from cremad_lit.selection import final_choice

    ravdess, ased = two_corpora
    mix = ["data=mix", f"data.corpora.ravdess.root={ravdess}", "data.corpora.ravdess.split.lockbox=[6]"]
    mix += [
        f"data.corpora.ased.manifest={ased}",
        "data.corpora.ased.role=train",
        "data.corpora.ased.split.lockbox=[6]",
    ]
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "outer_folds": 2,
                "inner_folds": 2,
                "overrides": ["split.protocol=blocks", "split.fractions=[0.85,0.0,0.15]", "method=majority"],
                "candidates": {
                    "ravdess": {"command": "baseline", "overrides": ["data=ravdess", "split.lockbox=[6]"]},
                    "plus_ased": {"command": "baseline", "overrides": mix},
                },
                "lockboxes": {
                    "ravdess": ["data=ravdess", "data.root=${data.root}", "lockbox=[6]"],
                    "ased": ["data=manifest", "data.manifest=${ased_manifest}", "lockbox=[6]"],
                },
            }
        )
    )
    logs = tmp_path / "logs"
    given = [f"data.root={ravdess}", f"+ased_manifest={ased}", f"paths.log_dir={logs}", "logger=none"]
    given += [f"paths.cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "select"

    def select():
        return run_cli("-m", "cremad_lit", "select", str(study), *given, "--out", str(out), "--open", "t")

    result = select()
    selection = json.loads((out / "selection.json").read_text())
    opened = json.loads((out / "opened.json").read_text())
    assert opened["chosen"] == final_choice(selection) and opened["occasion"] == "t"
    assert opened["chosen"] in result.stdout and "| ased | 6 |" in result.stdout
    final = pd.read_csv(out / "final" / opened["chosen"] / "split.csv", dtype=str)
    assert set(final["split"]) == {"train"}
    trained = set(final["actor_id"].str.rpartition("/")[2])
    assert trained == {"1", "2", "3", "4", "5"}  # everyone outside the lockboxes, in either corpus
    for box in ("ravdess", "ased"):
        metrics = json.loads((out / "lockbox" / box / "metrics.json").read_text())
        assert metrics["actors"] == [6] and metrics["lockbox"]["occasion"] == "t"
        assert opened["lockboxes"][box]["opened_before"] == 0
    ledgers = sorted((logs / "lockbox").glob("*.json"))
    assert len(ledgers) == 2  # one per corpus
    for ledger in ledgers:
        openings = json.loads(ledger.read_text())["openings"]
        assert [(o["occasion"], o["completed"]) for o in openings] == [("t", True)]
    select()  # finished: nothing trains or opens again
    assert all(len(json.loads(p.read_text())["openings"]) == 1 for p in ledgers)

    refused = run_cli(
        "evaluate.py",
        f"ckpt_path={out / 'inner' / 'ravdess' / '0'}",  # trained on RAVDESS with lockbox=[6]
        "subset=lockbox",
        "lockbox=[5]",
        f"paths.log_dir={logs}",
        check=False,
    )
    assert refused.returncode != 0 and "its own corpus keeps that one" in refused.stderr + refused.stdout
