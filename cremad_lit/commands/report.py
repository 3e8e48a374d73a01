"""Turn a multirun directory (or several) into a results table: mean ± std of each metric per configuration.

    python train.py -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2        # prints its multirun dir
    python -m cremad_lit report logs/train/multiruns/<time>
    python -m cremad_lit report logs/speech                                  # baseline and deep runs side by side

Every metrics.json below DIR is one run (train.py, evaluate.py or the baseline command). Runs are grouped by their
overrides, leaving out the replicate axes (seed, split.fold), so seeds and folds become the spread. Labels show only
what varies between the groups. Baseline runs and, where the test clips have crowd votes, the human crowd appear as
rows of their own. Where the runs' predictions.csv name each clip's speaker, every row also gets a 95% interval of its
accuracy by bootstrap over test speakers, and a paired comparison with a reference row (`--reference LABEL`; by
default the strongest baseline): on how many shared folds/seeds it is better, and the interval of the difference. Writes report.md, report.csv, runs.csv, report.png (accuracy and macro F1 with std error bars)
and report_per_class.png (F1 per emotion per configuration) into DIR and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cremad_lit.reporting import paired_markdown, reading, to_markdown, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarise train.py / baseline multirun directories.")
    parser.add_argument("directory")
    parser.add_argument(
        "--reference", help="the row to pair every other with (default: the strongest baseline)"
    )
    args = parser.parse_args(argv)
    table, paired, chosen = write_report(args.directory, args.reference)
    print(to_markdown(table))
    runs = pd.read_csv(Path(args.directory) / "runs.csv")
    print("\n" + reading(runs, table[table.index.isin(runs["config"])]))
    if paired is not None and len(paired):
        print("\n" + paired_markdown(paired, chosen))
    print(
        f"\nwritten: {Path(args.directory).resolve() / 'report.md'} (and report.csv, runs.csv, paired.csv, report.png, report_per_class.png)"
    )


if __name__ == "__main__":
    main()
