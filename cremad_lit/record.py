"""The run record: what every command writes of a run (metrics.json, run_info.json) and how every reader finds runs.

    from cremad_lit.record import find_runs
    for run in find_runs("logs/train/multiruns/<sweep>"):         # every finished run below a folder, any version
        run.dir, run.task, run.metrics["accuracy"], run.model       # model: what `evaluate.py ckpt_path=` loads

metrics.json is written by train.py, evaluate.py, the baseline and an ensemble's members, each through `record()` and
`results.write_results` (atomically, last: a folder with a metrics.json is a finished run). Every record has:
- `schema` (2 since 0.9; none before) and `task` (TASKS);
- the results (accuracy, uar, f1_macro, confusion_matrix, per_class_f1, n_test, ...: metrics.py) and what they were
  measured on (split, split_by, protocol, dataset, test_actors | actors: Assignment.tested_on);
- `model`: what the numbers measure, as `evaluate.py ckpt_path=` and `predict` load it (a checkpoint, a baseline run,
  or a run folder whose ensemble.json holds a network and its classical partner);
- `checkpoint`: the network's own checkpoint file (train runs), whether or not the run has a partner;
- then what the task adds (monitor, selection, ensemble, lockbox, run_info's version and commit).
Before 0.9 `checkpoint` meant `model` and a run with a partner had `network_checkpoint`: `read_run` reads both.
run_info.json (train.py) carries the same `schema` beside the version, commit and what the run left out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

SCHEMA = 2
TASKS = {
    "train": "train.py: a network (and its classical partner) fitted, then tested",
    "eval": "evaluate.py: saved models tested on the clips a data config names",
    "baseline": "the baseline command: a classical model fitted and tested",
    "member": "one member of an ensemble, alone (train.py's members/<name>/, evaluate.py's members/<i>/)",
}


def record(task: str, results: dict, tested_on: dict, *, model=None, checkpoint=None, **extra) -> dict:
    """The metrics.json payload of a run (results.write_results writes it)."""
    if task not in TASKS:
        raise ValueError(f"a run's task is one of {tuple(TASKS)}, not {task!r}")
    return {
        "schema": SCHEMA,
        "task": task,
        **results,
        **tested_on,
        "model": model if model is None or isinstance(model, list) else str(model),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        **extra,
    }


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run, as its metrics.json says (any version)."""

    dir: Path
    task: str
    model: str | list | None
    checkpoint: str | None
    metrics: dict
    schema: int


def read_run(run_dir: str | Path) -> Run:
    """The record in `run_dir`/metrics.json, of this version or an older one."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    schema = int(metrics.get("schema", 1))
    task = metrics.get("task", "train")  # 0.1-0.3 wrote train runs without one
    if schema >= 2:
        model, checkpoint = metrics.get("model"), metrics.get("checkpoint")
    elif metrics.get("network_checkpoint"):  # a 0.7/0.8 run with a partner: `checkpoint` was its folder
        model, checkpoint = metrics.get("checkpoint"), metrics["network_checkpoint"]
    else:
        model = checkpoint = metrics.get("checkpoint")
    if task == "baseline" and model is None:
        model = str(run_dir)
    return Run(run_dir, task, model, checkpoint, metrics, schema)


def find_runs(root: str | Path, tasks=None) -> list[Run]:
    """Every finished run (a metrics.json) in or below `root`, in path order; `tasks`: only these."""
    root = Path(root)
    folders = sorted({f.parent for f in (*root.glob("metrics.json"), *root.glob("**/metrics.json"))})
    runs = [read_run(folder) for folder in folders]
    return [r for r in runs if tasks is None or r.task in tasks]
