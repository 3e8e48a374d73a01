"""Train on one corpus, test on another, as a table: RAVDESS, ASED and the two together, every direction.

    make bench-cross-corpus          # this table, then the lockbox models on ASED (bench_cross_corpus.py)
    python benchmarks/bench_corpus_table.py [--methods linear,ge2e_linear]

Every cell is one `data=mix` configuration run as a user runs it (`python -m cremad_lit baseline`, a Hydra multirun
over 5 folds, `data.classes=shared`: the five emotions both corpora have). RAVDESS actors 01-15 (its lockbox 16-18
shut) and ASED speakers 01-30 (its lockbox 31-40 shut) are each dealt into 5 blocks of consecutive speakers
(`split.protocol=blocks`). A corpus with `role=test` is never trained on: the models of the 5 folds, each trained on
the other corpus's training speakers of that fold, are all tested on every one of its speakers (the cross-corpus
cells). A corpus with `role=all` is tested on its own held-out fold (the diagonal: speaker-disjoint cross-validation).
The third row trains on both. Accuracy (WAR) with its 95% interval by bootstrap over the test speakers, UAR (mean
recall over the five); ASED also on the common sentences 01-02 alone (its other sentences were written for one
emotion, so there the words can give it away). Nothing is chosen here: the models are fixed beforehand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, run_timed, write_section  # noqa: E402

from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared"))
LOGS = REPO / "logs" / "bench-corpus-table"
FOLDS = 5
COMMON_SENTENCES = ("01", "02")
METHODS = {  # name -> (label, command, overrides); a member row reads its source row's runs: (source, folder)
    "linear": (
        "speaker-normalised ComParE 2016 + logistic regression, C = 0.01",
        "baseline",
        ["method=compare_logreg", "data.speaker_norm=standard", "C_grid=[0.01]"],
    ),
    "ge2e_linear": (
        "speaker-normalised GE2E features + logistic regression, C = 0.01 (0.9's model to ship)",
        "baseline",
        ["method=ge2e_logreg", "data.speaker_norm=standard", "C_grid=[0.01]"],
    ),
    "speech": (
        "experiment=speech: the Mel + eGeMAPS network averaged with the linear model (the pair)",
        "train",
        [
            "experiment=speech",
            "data.num_workers=0",
            "++trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
        ],
    ),
    "speech_network": ("experiment=speech's network alone", "member", ("speech", "members/network")),
}
MIX = [
    "data=mix",
    f"data.corpora.ravdess.root={SHARED / 'ravdess-speech'}",
    "data.corpora.ravdess.split.lockbox=[16,17,18]",
    f"data.corpora.ased.manifest={SHARED / 'ased' / 'manifest.csv'}",
    f"data.corpora.ased.split.lockbox=[{','.join(map(str, range(31, 41)))}]",
    "data.classes=shared",
    "split.protocol=blocks",
    f"split.folds={FOLDS}",
    f"split.fold={','.join(map(str, range(FOLDS)))}",
    "logger=none",
]
# Trained on -> the roles that say so (the corpus not trained on only tests).
TRAINED_ON = {
    "RAVDESS 01-15": ["data.corpora.ravdess.role=all", "data.corpora.ased.role=test"],
    "ASED 01-30": ["data.corpora.ravdess.role=test", "data.corpora.ased.role=all"],
    "RAVDESS + ASED": ["data.corpora.ravdess.role=all", "data.corpora.ased.role=all"],
}
BOTH = "RAVDESS + ASED"
TESTED_ON = {"RAVDESS 01-15": "ravdess", "ASED 01-30": "ased"}


def run(method: str, trained_on: str) -> pd.DataFrame:
    """The 5 folds of one cell's configuration (one multirun, once), their predictions pooled."""
    _, command, overrides = METHODS[method]
    if command == "member":  # trained by its source row: nothing runs again
        source, member = overrides
        runs = sorted(p.parent for p in folder(source, trained_on).glob("*/predictions.csv"))
        return pooled([r / member for r in runs])
    out = folder(method, trained_on)
    if len(list(out.glob("*/predictions.csv"))) < FOLDS:
        entry = ["train.py"] if command == "train" else ["-m", "cremad_lit", "baseline"]
        args = [*entry, "--multirun", *overrides, *MIX, *TRAINED_ON[trained_on], f"hydra.sweep.dir={out}"]
        env = {}
        if (
            command == "train"
        ):  # two folds at a time, one thread each: faster on 2 cores than one fold on both
            args.append("hydra/launcher=parallel")
            env["OMP_NUM_THREADS"] = "1"
        run_timed(args, out, f"{method}, trained on {trained_on}", env)
    return pooled(sorted(p.parent for p in out.glob("*/predictions.csv")))


def folder(method: str, trained_on: str) -> Path:
    return LOGS / method / trained_on.replace(" ", "").replace("+", "_")


def pooled(runs: list[Path]) -> pd.DataFrame:
    tables = [pd.read_csv(r / "predictions.csv", dtype={"speaker": str, "clip_id": str}) for r in runs]
    return pd.concat(tables, ignore_index=True)


def common_sentences(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["clip_id"].str.split("-").str[1].isin(COMMON_SENTENCES)]


def uar(table: pd.DataFrame) -> float:
    return float((table["label"] == table["pred"]).groupby(table["label"]).mean().mean())


def cell(table: pd.DataFrame, diagonal: bool) -> str:
    interval = accuracy_interval(table)
    text = f"{interval['accuracy']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}], UAR {uar(table):.3f}"
    return f"**{text}** (CV)" if diagonal else text


def directions(found: dict[str, pd.DataFrame]) -> dict[str, str]:
    """One method's cells by direction (trained on -> tested on), accuracy [95%] only: the README's compact table."""
    cells = {}
    for trained_on, table in found.items():
        for name, corpus in TESTED_ON.items():
            tested = table[table["corpus"] == corpus]
            parts = [(name, tested)] + (
                [(f"{name}, sentences 01-02", common_sentences(tested))] if corpus == "ased" else []
            )
            for label, part in parts:
                interval = accuracy_interval(part)
                own = name == trained_on or trained_on == BOTH
                text = f"{interval['accuracy']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"
                cells[f"{trained_on} -> {label}" + (" (CV)" if own else "")] = text
    return cells


def seconds(method: str) -> int:
    return sum(int(p.read_text()) for p in (LOGS / method).glob("*/wall_seconds.txt"))  # a member row: 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}"
    )
    args = parser.parse_args()
    if not (SHARED / "ased" / "manifest.csv").is_file():
        raise SystemExit(f"ASED not found under {SHARED} (set CREMAD_LIT_SHARED)")
    lines = [
        "| method | trained on | RAVDESS 01-15: accuracy [95%], UAR | ASED 01-30 | ASED, sentences 01-02 |",
        "| --- | --- | --- | --- | --- |",
    ]
    paired, compact = [], {}
    for method in args.methods.split(","):
        found = {trained_on: run(method, trained_on) for trained_on in TRAINED_ON}
        compact[method] = directions(found)
        for trained_on, table in found.items():
            by_corpus = {name: table[table["corpus"] == corpus] for name, corpus in TESTED_ON.items()}
            own = {
                name: name == trained_on or trained_on == BOTH for name in TESTED_ON
            }  # its own held-out fold
            cells = [cell(by_corpus[name], own[name]) for name in TESTED_ON]
            cells.append(cell(common_sentences(by_corpus["ASED 01-30"]), own["ASED 01-30"]))
            lines.append(f"| {method} | {trained_on} | {' | '.join(cells)} |")
        for (
            name,
            corpus,
        ) in TESTED_ON.items():  # the other corpus added to training, paired on this one's people
            both = found[BOTH]
            diff = paired_difference(
                both[both["corpus"] == corpus], found[name][found[name]["corpus"] == corpus]
            )
            paired.append(
                f"| {method} | {name} | {diff['difference']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] "
                f"| {diff['speakers']} |"
            )
    methods = args.methods.split(",")
    runs = ", ".join(f"{m} {seconds(m)} s" for m in methods if METHODS[m][1] != "member")
    legend = "\n".join(f"- `{m}`: {METHODS[m][0]}" for m in methods)
    body = (
        "## Train on one corpus, test on another (`make bench-cross-corpus`, bench_corpus_table.py)\n\n"
        f"Machine: {machine()}; seconds of runs: {runs}. Five emotions (those both corpora have: "
        "`data.classes=shared`), 5 folds of consecutive speakers in each corpus (RAVDESS 01-15, ASED 01-30; the "
        "lockboxes 16-18 and 31-40 shut). A corpus not trained on (`data.corpora.NAME.role=test`) is tested whole "
        "by each fold's model; bold cells (CV) test each corpus's own held-out fold. Accuracy (WAR) [95% interval "
        "by bootstrap over the test speakers], UAR; chance is 0.2.\n\n"
        + legend
        + "\n\n"
        + "\n".join(lines)
        + "\n\nBoth corpora in training against the tested corpus alone (accuracy difference, paired over the same "
        "test speakers, the same folds):\n\n| method | tested on | difference [95%] | speakers |\n"
        "| --- | --- | ---: | ---: |\n" + "\n".join(paired)
    )
    methods_shown = list(compact)
    rows = list(next(iter(compact.values())))
    body += (
        "\n\nThe same cells by direction (accuracy [95%]; the README's table):\n\n"
        + f"| trained on -> tested on | {' | '.join(f'`{m}`' for m in methods_shown)} |\n"
        + "| --- |"
        + " ---: |" * len(methods_shown)
        + "\n"
        + "\n".join(f"| {row} | {' | '.join(compact[m][row] for m in methods_shown)} |" for row in rows)
    )
    write_section("corpus-table", body)
    print(body)


if __name__ == "__main__":
    main()
