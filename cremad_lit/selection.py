"""Nested selection: candidate recipes chosen on each outer fold's inner folds, the choice tested (`select`).

Usage and options: commands/select.py (`python -m cremad_lit select`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cremad_lit.io import write_json, write_text
from cremad_lit.record import find_runs
from cremad_lit.uncertainty import accuracy_interval

STUDIES = Path(__file__).resolve().parent / "conf" / "study"
# Each candidate's runs, as a user runs them: commands of the installed package (a checkout is not needed).
ENTRIES = {"train": ["-m", "cremad_lit", "train"], "baseline": ["-m", "cremad_lit", "baseline"]}


def load_study(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.is_file():
        path = STUDIES / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES.glob("*.yaml"))
        raise SystemExit(f"no study {name_or_path!r}: give a YAML file or one of {known} (conf/study/)")
    study = yaml.safe_load(path.read_text())
    for name, candidate in study["candidates"].items():
        if candidate.get("command", "train") not in ENTRIES:
            raise SystemExit(f"candidate {name}: command must be one of {list(ENTRIES)}")
    if int(study["inner_folds"]) < 2 or int(study["outer_folds"]) < 2:
        raise SystemExit("a study needs outer_folds >= 2 and inner_folds >= 2")
    return {**study, "name": path.stem, "file": str(path.resolve())}


def run_multirun(command: str, overrides: list[str], sweep_dir: Path, expected: int) -> None:
    """One Hydra multirun, unless `sweep_dir` already holds `expected` finished runs."""
    if len(list(sweep_dir.glob("*/metrics.json"))) >= expected:
        print(f"== {sweep_dir}: finished before, not run again", flush=True)
        return
    args = [sys.executable, *ENTRIES[command], "--multirun", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print(f"== {' '.join(args[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, "WANDB_SILENT": "true"})
    write_text(sweep_dir / "wall_seconds.txt", f"{time.perf_counter() - started:.0f}\n")


def finished_runs(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """Every run under `sweep_dir` (not the members/ of an ensemble run), with its metrics."""
    runs = [r for r in find_runs(sweep_dir) if "members" not in r.dir.relative_to(sweep_dir).parts]
    return [(r.dir, r.metrics) for r in runs]


def outer_runs(out: Path, name: str) -> dict[int, tuple[Path, dict]]:
    """outer fold -> the finished outer run of candidate `name`."""
    return {
        metrics["protocol"]["fold"]: (run, metrics) for run, metrics in finished_runs(out / "outer" / name)
    }


def inner_scores(sweep_dir: Path, metric: str, outer_folds: int, inner_folds: int) -> dict[int, float]:
    """outer fold -> the mean inner-test score of one candidate (every inner fold must have finished)."""
    by_outer: dict[int, list[float]] = {}
    for _, metrics in finished_runs(sweep_dir):
        nested = metrics["protocol"]["nested"]
        by_outer.setdefault(nested["outer_fold"], []).append(metrics[metric])
    missing = [i for i in range(outer_folds) if len(by_outer.get(i, [])) != inner_folds]
    if missing:
        raise RuntimeError(f"{sweep_dir}: inner folds missing for outer folds {missing}")
    return {i: float(np.mean(values)) for i, values in sorted(by_outer.items())}


def choose(scores: dict[str, dict[int, float]], outer_folds: int) -> dict[int, str]:
    """outer fold -> the candidate with the best mean inner score (ties: the one listed first)."""
    names = list(scores)
    return {i: max(names, key=lambda n: (scores[n][i], -names.index(n))) for i in range(outer_folds)}


def select(study: dict, extra: list[str], out: Path) -> dict:
    outer, inner, metric = (
        int(study["outer_folds"]),
        int(study["inner_folds"]),
        study.get("metric", "accuracy"),
    )
    common = [*study.get("overrides", []), *extra, f"split.folds={outer}"]
    scores = {}
    for name, candidate in study["candidates"].items():
        command, own = candidate.get("command", "train"), list(candidate.get("overrides", []))
        folds = [f"split.fold={','.join(map(str, range(outer)))}"]
        inner_sweep = [f"split.inner_folds={inner}", f"split.inner_fold={','.join(map(str, range(inner)))}"]
        run_multirun(command, [*common, *own, *folds, *inner_sweep], out / "inner" / name, outer * inner)
        scores[name] = inner_scores(out / "inner" / name, metric, outer, inner)
    chosen = choose(scores, outer)
    record = {"level": "nested", "study": study["name"], "inner_folds": inner, "metric": metric}
    for name in dict.fromkeys(chosen.values()):
        candidate = study["candidates"][name]
        # Only the folds this candidate won and has not run yet (a resumed study whose choices moved included).
        folds = [i for i in range(outer) if chosen[i] == name and i not in outer_runs(out, name)]
        if not folds:
            continue
        tag = [f"++selection={{level:nested,study:{study['name']},candidate:{name},inner_folds:{inner}}}"]
        run_multirun(
            candidate.get("command", "train"),
            [*common, *candidate.get("overrides", []), f"split.fold={','.join(map(str, folds))}", *tag],
            out / "outer" / name / f"folds-{'-'.join(map(str, folds))}",
            len(folds),
        )
    return summarise(study, scores, chosen, out, record)


def summarise(study: dict, scores: dict, chosen: dict, out: Path, record: dict) -> dict:
    folds, predictions = [], []
    for name in dict.fromkeys(chosen.values()):
        for fold, (run_dir, metrics) in sorted(outer_runs(out, name).items()):
            if chosen.get(fold) != name:
                continue
            folds.append(
                {
                    "outer_fold": fold,
                    "chosen": name,
                    "inner_scores": {n: scores[n][fold] for n in scores},
                    "test_actors": metrics["test_actors"],
                    "accuracy": metrics["accuracy"],
                    "uar": metrics["uar"],
                    "run": str(run_dir.resolve()),
                }
            )
            if (run_dir / "predictions.csv").is_file():
                predictions.append(pd.read_csv(run_dir / "predictions.csv", dtype={"speaker": str}))
    folds.sort(key=lambda f: f["outer_fold"])
    accuracy = np.array([f["accuracy"] for f in folds])
    pooled = pd.concat(predictions, ignore_index=True) if len(predictions) == len(folds) else None
    result = {
        **record,
        "study_file": study["file"],
        "candidates": {n: c for n, c in study["candidates"].items()},
        "folds": folds,
        "nested_accuracy_mean": float(accuracy.mean()),
        "nested_accuracy_std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
        "interval": accuracy_interval(pooled) if pooled is not None and "speaker" in pooled else None,
    }
    write_json(out / "selection.json", result)
    write_text(out / "selection.md", markdown(result, list(scores)))
    return result


def markdown(result: dict, names: list[str]) -> str:
    lines = [
        f"# Nested selection: study {result['study']} ({result['inner_folds']} inner folds, by {result['metric']})",
        "",
        "| outer fold | test speakers | "
        + " | ".join(f"inner {n}" for n in names)
        + " | chosen | outer accuracy |",
        "| ---: | --- |" + " ---: |" * len(names) + " --- | ---: |",
    ]
    for fold in result["folds"]:
        inner = " | ".join(f"{fold['inner_scores'][n]:.3f}" for n in names)
        speakers = ", ".join(map(str, fold["test_actors"]))
        lines.append(
            f"| {fold['outer_fold']} | {speakers} | {inner} | {fold['chosen']} | {fold['accuracy']:.3f} |"
        )
    interval = result["interval"]
    span = (
        f", 95% interval [{interval['low']:.3f}, {interval['high']:.3f}] over test speakers"
        if interval
        else ""
    )
    lines += [
        "",
        f"The selection procedure on speakers no choice saw: accuracy {result['nested_accuracy_mean']:.3f} ± "
        f"{result['nested_accuracy_std']:.3f} over {len(result['folds'])} outer folds{span}.",
    ]
    return "\n".join(lines) + "\n"
