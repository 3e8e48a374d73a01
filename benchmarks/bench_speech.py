"""Real speech benchmark: every method on the same 6 actor folds of RAVDESS (actors 01-18), actor-disjoint and clip split.

    make bench-speech        # or: python benchmarks/bench_speech.py [--rows speech,egemaps] [--protocols actor]
    python benchmarks/bench_speech.py --table-only    # rewrite the table from what has finished

Each row x protocol is one Hydra multirun over split.fold=0..5 (train.py or the baseline command, exactly as a user
runs them) into logs/bench-speech/<row>-<protocol>/; a finished one (6 metrics.json) is not run again, so an
interrupted benchmark resumes. The table (mean ± std of test accuracy and macro F1 over the folds, wall time) goes
into docs/benchmarks.md and is printed. Everything from scratch (no pretrained weights on these machines).
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
AUDIO = ["data.modalities=[audio]"]
PAPER = "paper settings (AdamW 5e-5, batch 8, <= 10 epochs, early stopping patience 3)"
# The two backbones were measured with release 0.1's recipe: the Mel image alone, no speaker normalisation.
RECIPE = "experiment=speech settings of 0.1 (Mel only, no speaker normalisation)"
MEL_ONLY = ["data.speaker_norm=none", "data.functionals=none", "model.functionals=null", "ensemble_with=null"]
# name -> (label, command, overrides)
ROWS = {
    "majority": ("majority class (of the training actors)", "baseline", ["method=majority"]),
    "egemaps": ("eGeMAPS functionals + logistic regression", "baseline", []),
    "egemaps_speaker": (
        "eGeMAPS functionals + logistic regression, speaker-normalised",
        "baseline",
        ["data.speaker_norm=standard"],
    ),
    "compare_speaker": (
        "ComParE 2016 functionals (6,373) + logistic regression, speaker-normalised",
        "baseline",
        ["method=compare_logreg", "data.speaker_norm=standard"],
    ),
    "resnet18_paper": (
        f"ResNet-18 (paper's Model 1 audio branch), {PAPER}",
        "train",
        ["experiment=paper_model1", *AUDIO, "model.audio_backbone.pretrained=false"],
    ),
    "effnet_paper": (
        f"EfficientNet-B0 (paper's Model 2 audio branch), {PAPER}",
        "train",
        ["experiment=paper_model2", *AUDIO, "model.audio_backbone.pretrained=false"],
    ),
    "resnet18_recipe": (
        f"ResNet-18, {RECIPE}",
        "train",
        [
            "experiment=speech",
            "model/backbone@model.audio_backbone=resnet18",
            "model.audio_backbone.pretrained=false",
            *MEL_ONLY,
        ],
    ),
    "effnet_recipe": (
        f"EfficientNet-B0, {RECIPE}",
        "train",
        [
            "experiment=speech",
            "model/backbone@model.audio_backbone=efficientnet_b0",
            "model.audio_backbone.pretrained=false",
            *MEL_ONLY,
        ],
    ),
    "speech_mel": (
        "release 0.1's experiment=speech (half-width ResNet-18, Mel only, no speaker normalisation)",
        "train",
        ["experiment=speech", *MEL_ONLY],
    ),
    "speech": (
        "**experiment=speech** (the network below averaged with speaker-normalised ComParE + LR, C = 0.01, fitted on the same training actors)",
        "train",
        ["experiment=speech"],
    ),
    # Its two members, read from the same runs (<fold>/members/*): nothing is trained again.
    "speech_network": (
        "experiment=speech's network alone (half-width ResNet-18 on the Mel + eGeMAPS branch, speaker-normalised)",
        "member",
        ["speech", "members/network"],
    ),
    "speech_partner": (
        "experiment=speech's classical member alone (speaker-normalised ComParE + LR, C = 0.01 fixed)",
        "member",
        ["speech", "members/classical"],
    ),
    "speech_compare": (
        "experiment=speech with the ComParE branch instead of eGeMAPS",
        "train",
        [
            "experiment=speech",
            "data.functionals=compare",
            "model.functionals.in_features=6373",
            "ensemble_with=null",
        ],
    ),
}
# The strongest classical baseline: every other row is paired with it.
REFERENCE = "compare_speaker"
PROTOCOLS = ("actor", "clip")


def sweep_dir(row: str, protocol: str) -> Path:
    return REPO / "logs" / "bench-speech" / f"{row}-{protocol}"


def run_dirs(row: str, protocol: str) -> list[Path]:
    """The row's finished fold runs; for a member row, that member's folder in each fold run of its source row."""
    _, command, overrides = ROWS[row]
    if command == "member":
        source, member = overrides
        return [d / member for d in run_dirs(source, protocol) if (d / member / "metrics.json").is_file()]
    return sorted(p.parent for p in sweep_dir(row, protocol).glob("*/metrics.json"))


def finished(row: str, protocol: str) -> list[dict]:
    results = [json.loads((d / "metrics.json").read_text()) for d in run_dirs(row, protocol)]
    for result in results:  # evaluate.py (ensemble rows) names the tested actors `actors`
        result.setdefault("test_actors", result.get("actors"))
    return results


def run(row: str, protocol: str) -> float:
    _, command, overrides = ROWS[row]
    if command == "member":  # trained by its source row
        return run(overrides[0], protocol)
    entry = ["train.py"] if command == "train" else ["-m", "cremad_lit", "baseline"]
    args = [
        sys.executable,
        *entry,
        "--multirun",
        "data=ravdess",
        f"data.root={ROOT}",
        *overrides,
        f"split.folds={FOLDS}",
        f"split.fold={','.join(map(str, range(FOLDS)))}",
        f"split.by={protocol}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir(row, protocol)}",
    ]
    env = {**os.environ, "WANDB_SILENT": "true"}
    if command == "train":  # two folds at a time, one thread each: faster on 2 cores than one fold on both
        args += [
            "hydra/launcher=parallel",
            "++trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
        ]
        env["OMP_NUM_THREADS"] = "1"
    print(f"== {row} / {protocol}: {' '.join(args[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, cwd=REPO, check=True, env=env)
    seconds = time.perf_counter() - started
    write_text(sweep_dir(row, protocol) / "wall_seconds.txt", f"{seconds:.0f}\n")
    return seconds


def cell(results: list[dict], key: str) -> str:
    if len(results) < FOLDS:
        return f"({len(results)}/{FOLDS} folds)" if results else "not run"
    values = np.array([r[key] for r in results])
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def published() -> tuple[dict, list[str]]:
    """The rows (label -> table line) and † notes of the section now in docs/benchmarks.md. A row with no runs on this
    machine keeps its published line, so re-running some rows does not erase the others."""
    lines = section_lines("bench-speech")
    rows = {line[2:].split(" | ")[0]: line for line in lines if line.startswith("| ") and " ± " in line}
    return rows, [line for line in lines if line.startswith("† ")]


def published_paired() -> dict:
    """label -> line of the paired table now in docs/benchmarks.md (kept for rows not re-run here)."""
    lines = section_lines("bench-speech")
    return {
        line[2:].split(" | ")[0]: line
        for line in lines
        if line.startswith("| ") and " ± " not in line and " / " in line and "[" in line
    }


def test_predictions(row: str, protocol: str = "actor") -> pd.DataFrame | None:
    """Every fold's test predictions of a finished row, pooled, when they name each clip's speaker."""
    files = [d / "predictions.csv" for d in run_dirs(row, protocol) if (d / "predictions.csv").is_file()]
    if len(files) < FOLDS:
        return None
    tables = [pd.read_csv(f, dtype={"speaker": str, "clip_id": str}) for f in files]
    return pd.concat(tables, ignore_index=True) if all("speaker" in t for t in tables) else None


def interval_cell(row: str) -> str:
    predictions = test_predictions(row)
    if predictions is None:
        return ""
    interval = accuracy_interval(predictions)
    return f"[{interval['low']:.3f}, {interval['high']:.3f}]"


def paired_lines() -> list[str]:
    """Every row with actor-fold predictions against the reference: folds better, the pooled difference and its 95%
    interval by bootstrap over the 18 test speakers."""
    reference = test_predictions(REFERENCE)
    if reference is None:
        return []
    by_fold = {tuple(sorted(map(str, r["test_actors"]))): r["accuracy"] for r in finished(REFERENCE, "actor")}
    lines = [
        f"Paired with {ROWS[REFERENCE][0]} on the same 6 actor folds (accuracy difference):",
        "",
        "| method | folds better / worse | pooled difference | 95% interval (18 test speakers) |",
        "| --- | ---: | ---: | ---: |",
    ]
    kept = published_paired()
    for row, (label, _, _) in ROWS.items():
        predictions = test_predictions(row)
        if row != REFERENCE and predictions is None and label in kept:
            lines.append(kept[label])  # not re-run here: the line an earlier run of this benchmark wrote
        if row == REFERENCE or predictions is None:
            continue
        folds = {tuple(sorted(map(str, r["test_actors"]))): r["accuracy"] for r in finished(row, "actor")}
        better = sum(folds[a] > by_fold[a] for a in folds if a in by_fold)
        worse = sum(folds[a] < by_fold[a] for a in folds if a in by_fold)
        paired = paired_difference(predictions, reference)
        lines.append(
            f"| {label} | {better} / {worse} | {paired['difference']:+.3f} | "
            f"[{paired['low']:+.3f}, {paired['high']:+.3f}] |"
        )
    return lines


def table() -> str:
    published_rows, published_notes = published()
    kept_notes = []
    lines = [
        "| method (RAVDESS actors 01-18, 6 folds) | actor-disjoint accuracy | 95% interval (speakers) | macro F1 | clip split accuracy | macro F1 | minutes (actor + clip) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    elsewhere = {}
    for row, (label, _, _) in ROWS.items():
        old = published_rows[label].split(" | ") if label in published_rows else None
        if old is not None and len(old) == 6:  # published before the interval column
            old.insert(2, "")
        if old is not None and not any(finished(row, protocol) for protocol in PROTOCOLS):
            lines.append(" | ".join(old))
            kept_notes += [note for note in published_notes if f"{row}-" in note and note not in kept_notes]
            continue
        cells, minutes = [], []
        for protocol in PROTOCOLS:
            results = finished(row, protocol)
            wall = sweep_dir(row, protocol) / "wall_seconds.txt"
            # Folds run by hand on another machine (the same overrides) leave a machine.txt saying where.
            other = sweep_dir(row, protocol) / "machine.txt"
            if not results and old is not None:  # this protocol not re-run here: its published cells
                cells += old[1:4] if protocol == "actor" else old[4:6]
                minutes.append(old[6].strip(" |").split(" + ")[PROTOCOLS.index(protocol)])
                continue
            metrics = [cell(results, "accuracy"), cell(results, "f1_macro")]
            cells += [metrics[0], interval_cell(row), metrics[1]] if protocol == "actor" else metrics
            if other.is_file():
                elsewhere[f"{row}-{protocol}"] = other.read_text().strip()
                minutes.append("†")
            else:
                minutes.append(f"{float(wall.read_text()) / 60:.1f}" if wall.is_file() else "-")
        lines.append(f"| {label} | {' | '.join(cells)} | {' + '.join(minutes)} |")
    notes = [f"† {', '.join(sorted(elsewhere))}: run on {text}." for text in sorted(set(elsewhere.values()))]
    paired = paired_lines()
    return (
        "\n".join(lines)
        + "".join(f"\n\n{note}" for note in notes + kept_notes)
        + ("\n\n" + "\n".join(paired) if paired else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the finished runs")
    args = parser.parse_args()
    if not ROOT.is_dir():
        raise SystemExit(f"RAVDESS speech not found at {ROOT} (set CREMAD_LIT_SHARED)")
    for row in [] if args.table_only else args.rows.split(","):
        for protocol in args.protocols.split(","):
            if len(finished(row, protocol)) < FOLDS:
                run(row, protocol)
    body = (
        "## Real speech (`make bench-speech`)\n\n"
        f"Machine: {machine()}. RAVDESS audio-only speech, actors 01-18, the six shared emotions (792 clips); "
        f"the same {FOLDS} folds for every method (`split.folds={FOLDS} split.fold=0..5`, seed 0): 3 test actors per "
        "fold, 2 validation actors from the rest (early stopping, checkpoint and C chosen on them), 13 training actors. "
        "The clip split deals clips into 6 emotion-stratified folds instead: every actor in train and test (leaky). "
        "Mean ± std over the 6 folds; minutes = wall time of each 6-fold multirun (deep rows: two folds at a time, "
        "one thread each). A row with no runs on the machine that wrote this keeps the line it had (measured by an "
        "earlier commit with the same overrides).\n\n" + table()
    )
    write_section("bench-speech", body)
    print(body)


if __name__ == "__main__":
    main()
