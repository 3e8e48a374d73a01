"""Nested selection: candidate recipes chosen on each outer fold's inner folds, the choice tested (`select`).

Usage and options: commands/select.py (`python -m cremad_lit select`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cremad_lit.data.corpus import SEPARATOR
from cremad_lit.io import write_json, write_text
from cremad_lit.record import find_runs
from cremad_lit.search import read_search
from cremad_lit.uncertainty import accuracy_interval, paired_difference

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
        if candidate.get("search") and int(candidate.get("trials", 0)) < 1:
            raise SystemExit(
                f"candidate {name}: a search candidate needs trials: N (the trials of each outer fold's search)"
            )
    if int(study["inner_folds"]) < 2 or int(study["outer_folds"]) < 2:
        raise SystemExit("a study needs outer_folds >= 2 and inner_folds >= 2")
    if study.get("outer", "chosen") not in ("chosen", "all"):
        raise SystemExit(
            "a study's outer: chosen (the selection's folds only) | all (every candidate on every fold)"
        )
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


def run_search(command: str, overrides: list[str], sweep_dir: Path, trials: int) -> dict:
    """One search (cremad_lit/search.py) in `sweep_dir`, unless its study already holds `trials`; its search.json."""
    done = sweep_dir / "search.json"
    if done.is_file():
        result = read_search(sweep_dir)
        if sum(result["counts"][s] for s in ("complete", "pruned", "fail")) >= trials:
            print(f"== {sweep_dir}: searched before, not run again", flush=True)
            return result
    args = [sys.executable, *ENTRIES[command], "--multirun", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print(f"== {' '.join(args[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, "WANDB_SILENT": "true"})
    write_text(sweep_dir / "wall_seconds.txt", f"{time.perf_counter() - started:.0f}\n")
    return read_search(sweep_dir)


def searched(
    study: dict, name: str, common: list[str], out: Path
) -> tuple[dict[int, float], dict[int, list[str]]]:
    """A search candidate: its search inside each outer fold (on that fold's inner folds only); outer fold -> the best
    trial's mean inner score, and outer fold -> the best point's overrides."""
    candidate, outer, inner = study["candidates"][name], int(study["outer_folds"]), int(study["inner_folds"])
    scores, points = {}, {}
    for fold in range(outer):
        result = run_search(
            candidate.get("command", "train"),
            [
                *common,
                *candidate.get("overrides", []),
                f"hparams_search={candidate['search']}",
                f"split.fold={fold}",
                f"hydra.sweeper.study_name={name}-outer-{fold}",
                f"hydra.sweeper.inner_folds={inner}",
                f"hydra.sweeper.metric={study.get('metric', 'accuracy')}",
                f"hydra.sweeper.n_trials={int(candidate['trials'])}",
            ],
            out / "inner" / name / f"outer-{fold}",
            int(candidate["trials"]),
        )
        if not result["best"]:
            raise RuntimeError(f"candidate {name}: the search of outer fold {fold} finished no trial")
        scores[fold], points[fold] = float(result["best"]["value"]), list(result["best"]["overrides"])
    return scores, points


def select(study: dict, extra: list[str], out: Path) -> dict:
    outer, inner, metric = (
        int(study["outer_folds"]),
        int(study["inner_folds"]),
        study.get("metric", "accuracy"),
    )
    given = {o.split("=", 1)[0] for o in extra}
    missing = [key for key in study.get("needs", []) if key not in given]
    if missing:
        raise SystemExit(
            f"study {study['name']} needs {missing} on the command line (KEY=VALUE): see {study['file']}"
        )
    common = [*study.get("overrides", []), *extra, f"split.folds={outer}"]
    scores, points = {}, {}
    for name, candidate in study["candidates"].items():
        if candidate.get("search"):
            scores[name], points[name] = searched(study, name, common, out)
            continue
        command, own = candidate.get("command", "train"), list(candidate.get("overrides", []))
        folds = [f"split.fold={','.join(map(str, range(outer)))}"]
        inner_sweep = [f"split.inner_folds={inner}", f"split.inner_fold={','.join(map(str, range(inner)))}"]
        run_multirun(command, [*common, *own, *folds, *inner_sweep], out / "inner" / name, outer * inner)
        scores[name] = inner_scores(out / "inner" / name, metric, outer, inner)
    chosen = choose(scores, outer)
    record = {"level": "nested", "study": study["name"], "inner_folds": inner, "metric": metric}
    every = study.get("outer", "chosen") == "all"
    for name in study["candidates"] if every else dict.fromkeys(chosen.values()):
        candidate = study["candidates"][name]
        # Only the folds this candidate won (every fold with outer: all) and has not run yet (a resumed study too).
        done = outer_runs(out, name)
        folds = [i for i in range(outer) if (every or chosen[i] == name) and i not in done]
        tag = [f"++selection={{level:nested,study:{study['name']},candidate:{name},inner_folds:{inner}}}"]
        # A search's best point differs from fold to fold: one run per fold; a fixed recipe: one multirun.
        groups = [[i] for i in folds] if name in points else [folds] if folds else []
        for group in groups:
            point = points[name][group[0]] if name in points else []
            own = [
                o for o in candidate.get("overrides", []) if not o.startswith("hydra.sweeper.")
            ]  # the search's own
            run_multirun(
                candidate.get("command", "train"),
                [*common, *own, *point, f"split.fold={','.join(map(str, group))}", *tag],
                out / "outer" / name / f"folds-{'-'.join(map(str, group))}",
                len(group),
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
                predictions.append(read_predictions(run_dir))
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
        "procedures": procedures(study, out),
    }
    write_json(out / "selection.json", result)
    write_text(out / "selection.md", markdown(result, list(scores)))
    return result


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """A run's predictions.csv; a mix's tested on one corpus only names its speakers as that corpus's own runs do,
    so that candidates with and without the other corpora pair over the same people."""
    table = pd.read_csv(run_dir / "predictions.csv", dtype={"speaker": str})
    corpus, separator, speaker = (table["speaker"].str.partition(SEPARATOR)[i] for i in range(3))
    if separator.eq(SEPARATOR).all() and corpus.nunique() == 1:
        table = table.assign(speaker=speaker)
    return table


def procedures(study: dict, out: Path) -> dict:
    """With `outer: all`: each candidate's own outer estimate (a search's: the search procedure's), and its accuracy
    difference from the first candidate paired over the same outer test speakers."""
    outer, found = int(study["outer_folds"]), {}
    for name in study["candidates"]:
        runs = outer_runs(out, name)
        if sorted(runs) != list(range(outer)):
            continue
        predictions = pd.concat([read_predictions(run) for run, _ in runs.values()], ignore_index=True)
        accuracy = np.array([metrics["accuracy"] for _, metrics in runs.values()])
        found[name] = {
            "accuracy_mean": float(accuracy.mean()),
            "accuracy_std": float(accuracy.std(ddof=1)),
            "uar_mean": float(np.mean([metrics["uar"] for _, metrics in runs.values()])),
            "interval": accuracy_interval(predictions),
            "predictions": predictions,
        }
    first = next(iter(found), None)
    for name, entry in found.items():
        entry["against_first"] = (
            None if name == first else paired_difference(entry["predictions"], found[first]["predictions"])
        )
    return {name: {k: v for k, v in entry.items() if k != "predictions"} for name, entry in found.items()}


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
    found = result.get("procedures") or {}
    if len(found) > 1:
        first = next(iter(found))
        lines += [
            "",
            "Every candidate on every outer fold (`outer: all`; a search candidate: the search procedure, run inside "
            "each outer fold):",
            "",
            f"| candidate | outer accuracy | 95% interval (speakers) | UAR | difference from {first} | its 95% interval |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, entry in found.items():
            low, high = entry["interval"]["low"], entry["interval"]["high"]
            paired = entry["against_first"]
            versus = (
                f"{paired['difference']:+.3f} | [{paired['low']:+.3f}, {paired['high']:+.3f}]"
                if paired
                else "- | -"
            )
            lines.append(
                f"| {name} | {entry['accuracy_mean']:.3f} ± {entry['accuracy_std']:.3f} | [{low:.3f}, {high:.3f}] | "
                f"{entry['uar_mean']:.3f} | {versus} |"
            )
    return "\n".join(lines) + "\n"


def final_choice(result: dict) -> str:
    """The candidate the procedure ships: the one chosen in most outer folds (a tie: the higher mean inner score).
    Read from the inner scores alone, so the outer numbers stay an estimate of the procedure that makes it."""
    folds = result["folds"]
    votes = pd.Series([f["chosen"] for f in folds]).value_counts()
    tied = [name for name in votes.index if votes[name] == votes.max()]
    inner = {n: np.mean([f["inner_scores"][n] for f in folds]) for n in tied}
    return max(tied, key=lambda n: (inner[n], -tied.index(n)))


def resolve(overrides: list[str], extra: list[str]) -> list[str]:
    """`${key}` in a study's lockbox overrides, filled from the command line's key=value (`+key` too)."""
    given = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1] for o in extra if "=" in o}

    def fill(text: str) -> str:
        for key in re.findall(r"\$\{([^}]+)\}", text):
            if key not in given:
                raise SystemExit(f"the study's lockboxes use ${{{key}}}: give {key}=... on the command line")
            text = text.replace(f"${{{key}}}", given[key])
        return text

    return [fill(o) for o in overrides]


def open_chosen(study: dict, extra: list[str], out: Path, occasion: str) -> dict:
    """`select --open OCCASION`: the final choice trained on every speaker outside the lockboxes (final=all_speakers),
    then opened on each of the study's `lockboxes` (evaluate.py subset=lockbox), all as one occasion (lockbox.py)."""
    boxes = study.get("lockboxes")
    if not boxes:
        raise SystemExit(f"study {study['name']} names no lockboxes: nothing to open ({study['file']})")
    result = json.loads((out / "selection.json").read_text())
    name = final_choice(result)
    candidate = study["candidates"][name]
    if candidate.get("search"):
        raise SystemExit(
            f"--open: the choice {name} is a search; train its best point by hand, then evaluate.py"
        )
    # No folds, no protocol: final=all_speakers trains on everyone outside the lockboxes.
    common = [
        o
        for o in [*study.get("overrides", []), *extra]
        if not o.startswith(("split.", "hydra.")) or o.startswith("split.lockbox")
    ]
    model = out / "final" / name
    if not (model / "final.json").is_file():  # written once the run ended whole: a killed run trains again
        command = candidate.get("command", "train")
        args = [sys.executable, *ENTRIES[command], *common, *candidate.get("overrides", [])]
        args += ["final=all_speakers", f"hydra.run.dir={model}"]
        print(f"== {' '.join(args[1:])}", flush=True)
        subprocess.run(args, check=True, env={**os.environ, "WANDB_SILENT": "true"})
        write_json(model / "final.json", {"candidate": name, "study": study["name"]})
    logs = [o for o in extra if o.startswith(("paths.", "logger="))]  # where the ledger lives, how to log
    opened = {}
    for box, overrides in boxes.items():
        target = out / "lockbox" / box
        if not (target / "metrics.json").is_file():
            args = [sys.executable, "-m", "cremad_lit", "evaluate", f"ckpt_path={model}", "subset=lockbox"]
            args += [
                f"lockbox_occasion={occasion}",
                *resolve(overrides, extra),
                *logs,
                f"hydra.run.dir={target}",
            ]
            print(f"== {' '.join(args[1:])}", flush=True)
            subprocess.run(args, check=True, env={**os.environ, "WANDB_SILENT": "true"})
        metrics = json.loads((target / "metrics.json").read_text())
        predictions = pd.read_csv(target / "predictions.csv", dtype={"speaker": str})
        opened[box] = {
            "speakers": metrics["actors"],
            "clips": len(predictions),
            "interval": accuracy_interval(predictions),
            "uar": metrics["uar"],
            "opened_before": metrics["lockbox"]["opened_before"],
            "run": str(target.resolve()),
        }
    record = {"occasion": occasion, "chosen": name, "model": str(model.resolve()), "lockboxes": opened}
    write_json(out / "opened.json", record)
    return record


def opened_markdown(record: dict) -> str:
    lines = [
        f"The choice, {record['chosen']}, trained on every speaker outside the lockboxes ({record['model']}), "
        f"opened as occasion {record['occasion']}:",
        "",
        "| lockbox | speakers | clips | accuracy [95% interval, speakers] | UAR | occasions before |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for box, entry in record["lockboxes"].items():
        interval = entry["interval"]
        lines.append(
            f"| {box} | {', '.join(map(str, entry['speakers']))} | {entry['clips']} | {interval['accuracy']:.3f} "
            f"[{interval['low']:.3f}, {interval['high']:.3f}] | {entry['uar']:.3f} | {entry['opened_before']} |"
        )
    return "\n".join(lines) + "\n"
