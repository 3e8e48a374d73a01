"""Real speech in eight classes: RAVDESS actors 01-18 with all its emotions (`data.classes=all`, 1,080 clips), the
literature's fold layout (6 blocks of 3 consecutive actors, `split.protocol=blocks`), WAR, UAR and macro F1.

    make bench-speech8       # or: python benchmarks/bench_speech8.py [--rows majority,egemaps] [--table-only]

Each row is one Hydra multirun over split.fold=0..5 (the baseline command or train.py, as a user runs them) into
logs/bench-speech8/<row>/; a finished row (6 metrics.json) is not run again. Validation actors come from the training
side of each fold (2 of the 15). The table (mean ± std over the folds, the 95% interval of WAR by bootstrap over the
18 test speakers, and every row paired with speaker-normalised ComParE + LR) goes into docs/benchmarks.md.
experiment=speech runs with its six-class settings, not re-chosen for eight classes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, section_lines, write_section  # noqa: E402

from cremad_lit.io import write_text  # noqa: E402
from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "ravdess-speech"
FOLDS = 6
PROTOCOL = [f"split.folds={FOLDS}", "split.protocol=blocks", "data.classes=all"]
ROWS = {
    "majority": ("majority class (of the training actors)", "baseline", ["method=majority"]),
    "egemaps": ("eGeMAPS functionals + logistic regression", "baseline", []),
    "egemaps_speaker": (
        "eGeMAPS + logistic regression, speaker-normalised",
        "baseline",
        ["data.speaker_norm=standard"],
    ),
    "compare_speaker": (
        "ComParE 2016 (6,373) + logistic regression, speaker-normalised",
        "baseline",
        ["method=compare_logreg", "data.speaker_norm=standard"],
    ),
    # release 0.9 (issue 40): the pretrained GE2E speaker encoder's features, as the classical rows (C on validation)
    "ge2e_speaker": (
        "GE2E speaker-encoder features (1,024: each LSTM layer's mean state + the embedding) + logistic regression, "
        "speaker-normalised",
        "baseline",
        ["method=ge2e_logreg", "data.speaker_norm=standard"],
    ),
    # The network alone, as measured in 0.5 (before experiment=speech became an ensemble).
    "speech": (
        "experiment=speech (its six-class settings)",
        "train",
        ["experiment=speech", "ensemble_with=null"],
    ),
}
REFERENCE = "compare_speaker"


def sweep_dir(row: str) -> Path:
    return REPO / "logs" / "bench-speech8" / row


def finished(row: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir(row).glob("*/metrics.json"))]


def run(row: str) -> None:
    _, command, overrides = ROWS[row]
    entry = ["train.py"] if command == "train" else ["-m", "cremad_lit", "baseline"]
    args = [
        sys.executable,
        *entry,
        "--multirun",
        "data=ravdess",
        f"data.root={ROOT}",
        *overrides,
        *PROTOCOL,
        f"split.fold={','.join(map(str, range(FOLDS)))}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir(row)}",
    ]
    env = {**os.environ, "WANDB_SILENT": "true"}
    if command == "train":  # two folds at a time, one thread each
        args += [
            "hydra/launcher=parallel",
            "++trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
        ]
        env["OMP_NUM_THREADS"] = "1"
    print(f"== {row}: {' '.join(args[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, env=env)
    write_text(sweep_dir(row) / "wall_seconds.txt", f"{time.perf_counter() - started:.0f}\n")


def predictions(row: str) -> pd.DataFrame | None:
    files = sorted(sweep_dir(row).glob("*/predictions.csv"))
    if len(files) < FOLDS:
        return None
    return pd.concat(
        [pd.read_csv(f, dtype={"speaker": str, "clip_id": str}) for f in files], ignore_index=True
    )


def cell(results: list[dict], key: str) -> str:
    values = np.array([r[key] for r in results])
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def published() -> tuple[dict[str, str], dict[str, str]]:
    """label -> the row's line now in docs/benchmarks.md, in the main table and in the paired one: a row with no runs
    here keeps them (measured by an earlier commit with the same overrides), so re-running some rows erases none."""
    main, paired, in_paired = {}, {}, False
    for line in section_lines("bench-speech8"):
        in_paired = in_paired or line.startswith("Paired with")
        if line.startswith("| ") and "---" not in line:
            (paired if in_paired else main)[line[2:].split(" | ")[0]] = line
    return main, paired


def table() -> str:
    kept, kept_paired = published()
    lines = [
        "| method (RAVDESS actors 01-18, 8 classes, 6 blocks of 3 actors) | WAR | 95% interval (speakers) | UAR | macro F1 | minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, (label, _, _) in ROWS.items():
        results = finished(row)
        if not results and label in kept:
            lines.append(kept[label])
            continue
        if len(results) < FOLDS:
            lines.append(f"| {label} | ({len(results)}/{FOLDS} folds) | | | | |")
            continue
        interval = accuracy_interval(predictions(row))
        wall = sweep_dir(row) / "wall_seconds.txt"
        minutes = f"{float(wall.read_text()) / 60:.1f}" if wall.is_file() else "-"
        lines.append(
            f"| {label} | {cell(results, 'war')} | [{interval['low']:.3f}, {interval['high']:.3f}] | "
            f"{cell(results, 'uar')} | {cell(results, 'f1_macro')} | {minutes} |"
        )
    reference = predictions(REFERENCE)
    if reference is not None:
        by_fold = {tuple(sorted(map(str, r["test_actors"]))): r["war"] for r in finished(REFERENCE)}
        lines += [
            "",
            f"Paired with {ROWS[REFERENCE][0]} on the same 6 folds (WAR difference):",
            "",
            "| method | folds better / worse | pooled difference | 95% interval (18 test speakers) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for row, (label, _, _) in ROWS.items():
            other = predictions(row)
            if row != REFERENCE and other is None and not finished(row) and label in kept_paired:
                lines.append(kept_paired[label])
            if row == REFERENCE or other is None:
                continue
            folds = {tuple(sorted(map(str, r["test_actors"]))): r["war"] for r in finished(row)}
            better = sum(folds[a] > by_fold[a] for a in folds if a in by_fold)
            worse = sum(folds[a] < by_fold[a] for a in folds if a in by_fold)
            paired = paired_difference(other, reference)
            lines.append(
                f"| {label} | {better} / {worse} | {paired['difference']:+.3f} | "
                f"[{paired['low']:+.3f}, {paired['high']:+.3f}] |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not ROOT.is_dir():
        raise SystemExit(f"RAVDESS speech not found at {ROOT} (set CREMAD_LIT_SHARED)")
    for row in [] if args.table_only else args.rows.split(","):
        if len(finished(row)) < FOLDS:
            run(row)
    body = (
        "## Real speech in eight classes (`make bench-speech8`)\n\n"
        f"Machine: {machine()}. RAVDESS audio-only speech, actors 01-18, all eight emotions (`data.classes=all`, "
        "1,080 clips: 144 of each, neutral 72); 6 folds of 3 consecutive actors (`split.protocol=blocks`: 1-3, "
        "4-6, ...), 2 validation actors from the other 15 (early stopping, checkpoint and C chosen on them). "
        "WAR = accuracy, UAR = mean per-class recall; mean ± std over the folds. Chance is 0.125 (UAR), the "
        "majority class about 0.13 (WAR).\n\n" + table()
    )
    write_section("bench-speech8", body)
    print(body)


if __name__ == "__main__":
    main()
