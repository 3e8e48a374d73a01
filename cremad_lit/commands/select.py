"""Nested selection: choose between candidate recipes inside each outer fold's training speakers, then test the choice.

    python -m cremad_lit select speech data.root=../shared/ravdess-speech          # conf/study/speech.yaml
    python -m cremad_lit select my_study.yaml data.root=DIR --out logs/select/mine  # any study file
    python -m cremad_lit select speech_mix data.root=DIR +ased_manifest=CSV --open 0.9  # then open the lockboxes

A study (conf/study/*.yaml) names the outer and inner folds, the overrides every run gets and the candidates (each a
command, train or baseline, and its overrides). For every candidate one Hydra multirun covers all outer x inner folds
(`split.inner_folds=K split.inner_fold=j`: outer fold i's test speakers are left out, the rest is split again; see
data/splits.py), each exactly as a user runs it. Per outer fold, the candidate with the best mean inner score (the
study's metric; a tie goes to the one listed first) is trained on that fold's training speakers and tested on its test
speakers, which no choice has seen: the mean of those outer numbers estimates what the *selection procedure* gives on
new people. Each outer run's metrics.json records `selection` (level nested); `report` on the folder labels it.
Writes selection.json and selection.md into the study folder and prints the table. Finished multiruns are not run
again (an interrupted study resumes). Overrides on the command line go to every run (data.root, hydra/launcher=...).

A candidate may be a search (`search: <conf/hparams_search name>`, `trials: N`; cremad_lit/search.py): inside each
outer fold the search runs on that fold's inner folds, and its best point is what trains on the outer fold, so its
outer numbers estimate the search *procedure*. Its inner score is its best trial's mean (a maximum: biased up against
a fixed recipe); `outer: all` in the study runs every candidate on every outer fold and compares each with the first,
paired over the same test speakers (conf/study/linear_search.yaml).

`--open OCCASION`, after every choice: the candidate chosen in most outer folds (a tie: the higher mean inner score)
is trained on every speaker outside the lockboxes (`final=all_speakers`, into <study>/final/) and opened on each of
the study's `lockboxes` (evaluate.py overrides per lockbox, `${key}` filled from the command line) with
`subset=lockbox lockbox_occasion=OCCASION`: one occasion in each corpus's ledger. Writes opened.json; a lockbox
already opened by this study is read back, not opened again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cremad_lit.io import remove_dead_writers_files
from cremad_lit.selection import load_study, markdown, open_chosen, opened_markdown, select


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a name in conf/study/ or a YAML file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (data.root=DIR, ...)")
    parser.add_argument("--out", help="the study folder (default logs/select/<study>)")
    parser.add_argument(
        "--open",
        metavar="OCCASION",
        help="then train the choice on all speakers and open the study's lockboxes",
    )
    args = parser.parse_args(argv)
    study = load_study(args.study)
    out = Path(args.out or Path("logs") / "select" / study["name"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_writers_files(out, recursive=True)  # what a killed study (or its runs) left half written
    result = select(study, args.overrides, out)
    print(markdown(result, list(study["candidates"])))
    print(f"written: {out / 'selection.json'} and {out / 'selection.md'}")
    if args.open:
        print(opened_markdown(open_chosen(study, args.overrides, out, args.open)))
        print(f"written: {out / 'opened.json'}")


if __name__ == "__main__":
    main()
