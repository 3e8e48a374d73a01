"""Does more people help? The linear model on RAVDESS 01-15 alone against the same with ASED's speakers added to training.

    make bench-more-people           # or: python benchmarks/bench_more_people.py [--folds 5]

Five folds of RAVDESS actors 01-15 (split.protocol=blocks, the lockbox 16-18 held out, as conf/study/speech.yaml). Each
fold is run twice with the speaker-normalised ComParE + logistic regression model (C = 0.01, fixed beforehand): on
RAVDESS alone (`data=ravdess`), and on `data=mix` with ASED speakers 01-30 as `role=train` (every one of them trains,
none validates or tests; ASED's lockbox 31-40 held out), with the clips weighed alike or each corpus half
(`data.sampling=balanced`: sample weights in the logistic regression). The mix splits RAVDESS exactly as RAVDESS alone is split, so
both are tested on the same 15 people, and the difference is paired over them (95% bootstrap interval). Nothing is
chosen here: both configurations are fixed beforehand, and the number is the answer either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, run_timed, write_section  # noqa: E402

from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared"))
LOGS = REPO / "logs" / "bench-more-people"
ASED_LOCKBOX = list(range(31, 41))  # as benchmarks/bench_cross_corpus.py: never read
LINEAR = ["baseline", "method=compare_logreg", "data.speaker_norm=standard", "C_grid=[0.01]", "logger=none"]
PROTOCOL = ["split.protocol=blocks", "split.folds={folds}", "split.fold={fold}"]
CONFIGS = {
    "ravdess": ["data=ravdess", f"data.root={SHARED / 'ravdess-speech'}", "split.lockbox=[16,17,18]"],
    "ravdess+ased": [
        "data=mix",
        f"data.corpora.ravdess.root={SHARED / 'ravdess-speech'}",
        "data.corpora.ravdess.split.lockbox=[16,17,18]",
        f"data.corpora.ased.manifest={SHARED / 'ased' / 'manifest.csv'}",
        "data.corpora.ased.role=train",
        f"data.corpora.ased.split.lockbox=[{','.join(map(str, ASED_LOCKBOX))}]",
    ],
}
# The same mix, each corpus weighing half of the training loss (data.sampling=balanced: RAVDESS's fewer clips count more).
CONFIGS["ravdess+ased balanced"] = [*CONFIGS["ravdess+ased"], "data.sampling=balanced"]


def run(config: str, fold: int, folds: int) -> pd.DataFrame:
    """One fold of one configuration (once: a finished run is read back), its predictions with bare speaker ids."""
    out = LOGS / config / f"fold{fold}"
    if not (out / "metrics.json").is_file():
        protocol = [p.format(folds=folds, fold=fold) for p in PROTOCOL]
        args = ["-m", "cremad_lit", *LINEAR, *CONFIGS[config], *protocol, f"hydra.run.dir={out}"]
        run_timed(args, out, f"{config} fold {fold}")
    predictions = pd.read_csv(out / "predictions.csv", dtype={"speaker": str, "clip_id": str})
    # The mix names RAVDESS's speakers ravdess/N: the same people, paired by their own ids.
    predictions["speaker"] = predictions["speaker"].str.removeprefix("ravdess/")
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    folds = parser.parse_args().folds
    pooled = {c: pd.concat([run(c, k, folds) for k in range(folds)], ignore_index=True) for c in CONFIGS}
    # Each run's own time (a rerun reads finished runs back): what a fresh clone spends, features computed included.
    seconds = sum(
        int((LOGS / c / f"fold{k}" / "wall_seconds.txt").read_text()) for c in CONFIGS for k in range(folds)
    )
    lines = [
        "## Does more people help? RAVDESS 01-15 with ASED's speakers added to training (`make bench-more-people`)",
        "",
        f"{machine()}; {seconds} s of runs. The linear model (speaker-normalised ComParE 2016 + "
        f"logistic regression, C = 0.01), {folds} folds of RAVDESS actors 01-15 (blocks; lockbox 16-18 shut). "
        "`ravdess+ased`: `data=mix`, ASED speakers 01-30 all training (`role=train`; ASED's lockbox 31-40 shut), "
        "RAVDESS split exactly as alone, so every row is tested on the same 15 people; `balanced`: each corpus weighs "
        "half of the training loss (`data.sampling=balanced`). Interval: 95% bootstrap over those speakers; the "
        "difference is paired on them.",
        "",
        "| training speakers | WAR | 95% interval | UAR | difference with RAVDESS alone |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for config, predictions in pooled.items():
        interval = accuracy_interval(predictions)
        recalls = predictions.assign(right=predictions["label"] == predictions["pred"]).groupby("label")[
            "right"
        ]
        difference = ""
        if config != "ravdess":
            paired = paired_difference(predictions, pooled["ravdess"])
            difference = f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]"
        lines.append(
            f"| `{config}` | {interval['accuracy']:.3f} | [{interval['low']:.3f}, {interval['high']:.3f}] "
            f"({interval['speakers']} speakers) | {recalls.mean().mean():.3f} | {difference} |"
        )
    body = "\n".join(lines)
    write_section("bench-more-people", body)
    (LOGS / "summary.json").write_text(json.dumps({"table": lines}, indent=1))
    print(body)


if __name__ == "__main__":
    main()
