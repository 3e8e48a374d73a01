"""Speech on people no choice has seen: RAVDESS 01-15 in 5 folds for choosing, the lockbox 16-18 opened once a release.

    make bench-lockbox                                  # cross-validation of every row (resumable)
    python benchmarks/bench_lockbox.py --open 0.8       # once per release, after the choice: the lockbox column
    python benchmarks/bench_lockbox.py --table-only     # rewrite the table from what has finished
    python benchmarks/bench_lockbox.py --rows majority --open x --logs DIR --doc FILE   # elsewhere (tests)

Cross-validation: each row is one multirun over `split.protocol=blocks split.folds=5 split.fold=0..4
split.lockbox=[16,17,18]` (test blocks 01-03, 04-06, ..., 13-15; 2 validation actors from the other 12), exactly as a
user runs it, into logs/bench-lockbox/<row>-cv/. `--open RELEASE`: each row's model is trained on all of 01-15
(`final=all_speakers`; the lockbox stays out) into <row>-final/, then `evaluate.py subset=lockbox
lockbox_occasion=RELEASE` tests it on 16-18: every row in one occasion, recorded in the ledger (cremad_lit/lockbox.py).
Opening is its own step so that it happens after the choice, not while making it. The two members of
experiment=speech are read from its runs (members/ in each fold; the ensemble record of the lockbox evaluation).
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
import common  # noqa: E402
from common import machine, section_lines, write_section  # noqa: E402

from cremad_lit.errors import load_debug_plugins  # noqa: E402
from cremad_lit.io import remove_dead_writers_files, write_text  # noqa: E402
from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "ravdess-speech"
LOGS = REPO / "logs" / "bench-lockbox"
FOLDS = 5
LOCKBOX = [16, 17, 18]
LOCKBOX_OVERRIDE = f"split.lockbox=[{','.join(map(str, LOCKBOX))}]"
PROTOCOL = ["split.protocol=blocks", f"split.folds={FOLDS}", LOCKBOX_OVERRIDE]
LINEAR = ["method=compare_logreg", "data.speaker_norm=standard", "C_grid=[0.01]"]
# name -> (label, command, overrides); a member row reads (source row, members/<name>, index in member_accuracy)
ROWS = {
    "majority": ("majority class (of the training actors)", "baseline", ["method=majority"]),
    "linear": (
        "speaker-normalised ComParE 2016 + logistic regression, C = 0.01 (statistics over all of a speaker's speech)",
        "baseline",
        LINEAR,
    ),
    "linear_classes": (
        "the same, statistics over the kept classes' clips only (release 0.7)",
        "baseline",
        [*LINEAR, "data.speaker_stats=classes"],
    ),
    "speech": (
        "**experiment=speech**: its network averaged with the linear model above, fitted on the same actors",
        "train",
        ["experiment=speech"],
    ),
    "speech_network": ("its network alone", "member", ["speech", "members/network", 0]),
    "speech_partner": ("its classical member alone", "member", ["speech", "members/classical", 1]),
    "speech_adversarial": (
        "experiment=speech with its network trained speaker-adversarially (`loss.speaker_adversary=1.0`)",
        "train",
        ["experiment=speech", "loss.speaker_adversary=1.0"],
    ),
    # release 0.9 (issue 40): the pretrained GE2E speaker encoder of Resemblyzer's wheel, three ways
    "ge2e_linear": (
        "speaker-normalised GE2E speaker-encoder features (each LSTM layer's mean state + the embedding, 1,024) + "
        "logistic regression, C = 0.01",
        "baseline",
        ["method=ge2e_logreg", "data.speaker_norm=standard", "C_grid=[0.01]"],
    ),
    "trio": (
        "experiment=speech plus the GE2E linear model as a third member (weights 1/3 each, fixed beforehand)",
        "train",
        [
            "experiment=speech",
            "ensemble_with.method=[compare_logreg,ge2e_logreg]",
            "ensemble_with.network_weight=0.3334",
        ],
    ),
    "trio_network": (
        "the trio's network alone (the same recipe as experiment=speech's)",
        "member",
        ["trio", "members/network", 0],
    ),
    "trio_ge2e": ("the trio's GE2E member alone", "member", ["trio", "members/classical-ge2e_logreg", 2]),
    "ge2e_pair": (
        "experiment=speech_ge2e: the frozen GE2E branch (layer-weighted LSTM states) in place of the Mel CNN, "
        "averaged with the linear model",
        "train",
        ["experiment=speech_ge2e"],
    ),
    "ge2e_pair_network": (
        "experiment=speech_ge2e's network alone (the GE2E branch)",
        "member",
        ["ge2e_pair", "members/network", 0],
    ),
}
REFERENCE = "linear"
# a row's label is its key in the published table (a row not re-run keeps its line there)
assert len({label for label, _, _ in ROWS.values()}) == len(ROWS), "every row needs its own label"


def sweep(row: str, stage: str) -> Path:
    return LOGS / f"{row}-{stage}"


def run(row: str, stage: str, args: list[str]) -> None:
    label, command, overrides = ROWS[row]
    entry = ["train.py"] if command == "train" else ["-m", "cremad_lit", "baseline"]
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags before the overrides
    args = [
        sys.executable,
        *entry,
        *flags,
        "data=ravdess",
        f"data.root={ROOT}",
        *overrides,
        *(
            PROTOCOL if stage == "cv" else [LOCKBOX_OVERRIDE]
        ),  # final=all_speakers: every speaker but the lockbox
        *(a for a in args if not a.startswith("-")),
        "data.num_workers=0",
        "data.persistent_workers=false",
        "logger=none",
    ]
    env = {**os.environ, "WANDB_SILENT": "true"}
    if command == "train":  # two folds at a time, one thread each: faster on 2 cores than one fold on both
        args += ["++trainer.enable_progress_bar=false", "callbacks.progress_bar=null"]
        if "--multirun" in args:
            args.append("hydra/launcher=parallel")
            env["OMP_NUM_THREADS"] = "1"
    print(f"== {row} / {stage}: {' '.join(args[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, env=env)
    write_text(sweep(row, stage) / "wall_seconds.txt", f"{time.perf_counter() - started:.0f}\n")


def fold_dirs(row: str) -> list[Path]:
    """The row's finished cross-validation runs (a member row: that member's folder in its source row's runs)."""
    _, command, overrides = ROWS[row]
    if command == "member":
        return [
            d / overrides[1] for d in fold_dirs(overrides[0]) if (d / overrides[1] / "metrics.json").is_file()
        ]
    return sorted(p.parent for p in sweep(row, "cv").glob("*/metrics.json"))


def cross_validate(row: str) -> None:
    _, command, overrides = ROWS[row]
    if command == "member" or len(fold_dirs(row)) == FOLDS:
        return
    folds = f"split.fold={','.join(map(str, range(FOLDS)))}"
    run(row, "cv", ["--multirun", folds, f"hydra.sweep.dir={sweep(row, 'cv')}"])


def open_lockbox(row: str, release: str) -> None:
    """Train the row's model on every speaker of 01-15, then open the lockbox with it (once: skipped if done)."""
    _, command, _ = ROWS[row]
    if command == "member":
        return
    final = sweep(row, "final")
    model = final / "model"
    if not any(
        (model / name).exists() for name in ("ensemble.json", "classical_model.npz", "checkpoints/last.ckpt")
    ):
        run(row, "final", ["final=all_speakers", f"hydra.run.dir={model}"])
    if (final / "lockbox" / "metrics.json").is_file():
        return
    args = [
        sys.executable,
        "evaluate.py",
        f"ckpt_path={model}",
        "subset=lockbox",
        f"lockbox_occasion={release}",
        f"data.root={ROOT}",
        f"paths.log_dir={LOGS.parent}",  # the ledger: <logs>/lockbox/
        "data.num_workers=0",
        f"hydra.run.dir={final / 'lockbox'}",
    ]
    print(f"== {row} / lockbox: {' '.join(args[1:])}", flush=True)
    subprocess.run(args, cwd=REPO, check=True, env={**os.environ, "WANDB_SILENT": "true"})


def predictions(directories: list[Path]) -> pd.DataFrame | None:
    files = [d / "predictions.csv" for d in directories]
    if not files or not all(f.is_file() for f in files):
        return None
    return pd.concat(
        [pd.read_csv(f, dtype={"speaker": str, "clip_id": str}) for f in files], ignore_index=True
    )


def lockbox_result(row: str) -> dict | None:
    """The row's lockbox metrics (a member: its accuracy from the ensemble record)."""
    _, command, overrides = ROWS[row]
    source = overrides[0] if command == "member" else row
    path = sweep(source, "final") / "lockbox" / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    if command == "member":
        return {
            "accuracy": metrics["ensemble"]["member_accuracy"][overrides[2]],
            "lockbox": metrics["lockbox"],
        }
    return metrics


def interval_text(table: pd.DataFrame | None) -> str:
    if table is None:
        return ""
    interval = accuracy_interval(table)
    return f"[{interval['low']:.3f}, {interval['high']:.3f}]"


def difference_text(table: pd.DataFrame | None, reference: pd.DataFrame | None) -> str:
    if table is None or reference is None:
        return ""
    paired = paired_difference(table, reference)
    return f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]"


def published() -> dict[str, str]:
    """label -> the row's line now in docs/benchmarks.md: a row with no runs here keeps it (measured by an earlier
    commit with the same overrides), so re-running some rows does not erase the others."""
    lines = section_lines("bench-lockbox")
    return {line[2:].split(" | ")[0]: line for line in lines if line.startswith("| ") and "---" not in line}


def table() -> str:
    lines = [
        "| method (from scratch) | CV accuracy, 5 folds of 01-15 | 95% interval (15 speakers) | CV UAR | "
        "vs linear, pooled [95%] | lockbox 16-18 accuracy | 95% interval (3 speakers) | vs linear [95%] | minutes (CV) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference_cv = predictions(fold_dirs(REFERENCE))
    reference_box = predictions([sweep(REFERENCE, "final") / "lockbox"])
    openings = set()
    kept = published()
    for row, (label, command, overrides) in ROWS.items():
        results = [json.loads((d / "metrics.json").read_text()) for d in fold_dirs(row)]
        if not results and lockbox_result(row) is None and label in kept:
            lines.append(kept[label])
            continue
        if len(results) < FOLDS:
            cv = [f"({len(results)}/{FOLDS} folds)", "", "", ""]
        else:
            accuracy = np.array([r["accuracy"] for r in results])
            uar = np.array([r["uar"] for r in results])
            pooled = predictions(fold_dirs(row))
            cv = [
                f"{accuracy.mean():.3f} ± {accuracy.std(ddof=1):.3f}",
                interval_text(pooled),
                f"{uar.mean():.3f} ± {uar.std(ddof=1):.3f}",
                "" if row == REFERENCE else difference_text(pooled, reference_cv),
            ]
        box = lockbox_result(row)
        if box is None:
            opened = ["not opened", "", ""]
        else:
            openings.add((box["lockbox"].get("occasion"), box["lockbox"]["opened_before"]))
            table_box = None if command == "member" else predictions([sweep(row, "final") / "lockbox"])
            opened = [
                f"{box['accuracy']:.3f}",
                interval_text(table_box),
                "" if row == REFERENCE else difference_text(table_box, reference_box),
            ]
        wall = sweep(overrides[0] if command == "member" else row, "cv") / "wall_seconds.txt"
        minutes = f"{float(wall.read_text()) / 60:.1f}" if wall.is_file() and command != "member" else ""
        lines.append(f"| {label} | {' | '.join(cv)} | {' | '.join(opened)} | {minutes} |")
    said = "; ".join(f"occasion {o}, opened {n} time(s) before" for o, n in sorted(openings, key=str))
    return "\n".join(lines) + (f"\n\nLockbox: {said} (the ledger in logs/lockbox/)." if said else "")


def main() -> None:
    global LOGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    parser.add_argument(
        "--open", metavar="RELEASE", help="train on 01-15 and open the lockbox, all rows at once"
    )
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the finished runs")
    parser.add_argument(
        "--logs", default=str(LOGS.parent), help="the logs folder: runs and the lockbox ledger"
    )
    parser.add_argument("--doc", default=str(common.DOC), help="the file the table section is written into")
    args = parser.parse_args()
    LOGS, common.DOC = Path(args.logs).resolve() / "bench-lockbox", Path(args.doc).resolve()
    load_debug_plugins()  # a debug setting, empty in use (cremad_lit/errors.py)
    for folder in (LOGS, common.DOC.parent):  # what a killed run left half written
        if folder.is_dir():
            remove_dead_writers_files(folder, recursive=folder == LOGS)
    if not ROOT.is_dir():
        raise SystemExit(f"RAVDESS speech not found at {ROOT} (set CREMAD_LIT_SHARED)")
    rows = [] if args.table_only else args.rows.split(",")
    for row in rows:
        cross_validate(row)
    if args.open:
        for row in rows:
            open_lockbox(row, args.open)
    body = (
        "## Real speech on people no choice has seen (`make bench-lockbox`)\n\n"
        f"Machine: {machine()}. RAVDESS audio-only speech, the six shared emotions. Every choice is made on actors "
        f"01-15: 5 folds of 3 consecutive actors (`{' '.join(PROTOCOL)}`), 2 validation actors from the other 12; "
        "mean ± std over the folds, intervals by bootstrap over the test speakers, differences paired with the "
        "linear model on the same speakers. The lockbox (actors 16-18, 132 clips) is opened once per release, after "
        "the choice: each row's model trained on all of 01-15 (`final=all_speakers`) is evaluated with "
        "`evaluate.py subset=lockbox`; 3 people, so its interval is wide.\n\n" + table()
    )
    write_section("bench-lockbox", body)
    print(body)


if __name__ == "__main__":
    main()
