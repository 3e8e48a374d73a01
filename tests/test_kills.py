"""kill -9 at three moments of long work (during a training, between runs, while writing the summary), then the same
command again: it ends with the uninterrupted run's results, no run counted twice, no half-written folder read as a
result. Here a multirun and bench_lockbox.py; select in tests/test_selection.py; a lockbox opening killed before its
numbers were written (not recorded) in tests/test_splits.py. The kills come from the test plugin tests/kill_points.py
(a SIGKILL at a named write), loaded by the debug setting CREMAD_LIT_DEBUG_PLUGINS."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY, kill_at, on_synthetic, run_cli

KILLED = -signal.SIGKILL


def killed(result) -> bool:
    return result.returncode in (KILLED, 128 + signal.SIGKILL, 1)  # itself, or its child's death reported


def results(folder: Path) -> pd.DataFrame:
    """Every finished run under `folder` (its metrics.json): what report reads, compared to the uninterrupted one."""
    rows = []
    for path in sorted(folder.glob("**/metrics.json")):
        if "members" in path.relative_to(folder).parts:
            continue
        metrics = json.loads(path.read_text())
        rows.append({"run": str(path.parent.relative_to(folder)), "accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_a_multirun_killed_three_times_then_run_again_ends_as_an_uninterrupted_one(
    synthetic_root, tmp_path, monkeypatch
):
    def multirun(sweep: Path):
        return run_cli(
            "train.py",
            "-m",
            *on_synthetic(synthetic_root, tmp_path),
            *TINY,
            "data.modalities=[audio]",
            "trainer.max_epochs=2",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            check=False,
        )

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert multirun(whole).returncode == 0
    run_cli("-m", "cremad_lit", "report", str(whole))

    kill_at(monkeypatch, "history.csv:3:after")  # the second job, after its first epoch: during a training
    assert killed(multirun(broken))
    assert (broken / "1" / "history.csv").is_file() and not (broken / "1" / "metrics.json").exists()
    run_cli("-m", "cremad_lit", "report", str(broken))  # what has finished so far, and only that
    assert list(pd.read_csv(broken / "runs.csv")["seed"]) == [0]
    kill_at(monkeypatch, "metrics.json:1:after")  # between the two jobs
    assert killed(multirun(broken))
    kill_at(monkeypatch, None)
    assert multirun(broken).returncode == 0
    kill_at(monkeypatch, "report.csv:1:while")  # while writing the summary: the old one stays whole
    assert killed(run_cli("-m", "cremad_lit", "report", str(broken), check=False))
    assert list(pd.read_csv(broken / "report.csv")["runs"]) == [1]  # the report before, whole
    kill_at(monkeypatch, None)
    assert list(broken.rglob(".*.tmp"))  # what the kills left half written ...
    run_cli("-m", "cremad_lit", "report", str(broken))
    assert not list(broken.rglob(".*.tmp"))  # ... is removed by the next report

    pd.testing.assert_frame_equal(results(broken), results(whole))
    again, before = (pd.read_csv(f / "report.csv", index_col=0) for f in (broken, whole))
    assert list(again["runs"]) == [2]  # each seed once
    pd.testing.assert_frame_equal(again.filter(like="accuracy"), before.filter(like="accuracy"))


@pytest.mark.slow
def test_bench_lockbox_killed_three_times_then_run_again_gives_the_uninterrupted_table(
    tmp_path, monkeypatch, fork_subcommands
):
    """bench_lockbox.py's majority row (5 folds of RAVDESS 01-15, then the lockbox opened), into a folder of its own:
    the same table, and one completed opening in the ledger, with or without three kills on the way."""

    def bench(where: Path):
        args = [
            "--rows",
            "majority",
            "--open",
            "test",
            "--logs",
            str(where),
            "--doc",
            str(where / "bench.md"),
        ]
        return run_cli("benchmarks/bench_lockbox.py", *args, check=False)

    def row(where: Path) -> list[str]:  # the majority row's cells but its minutes
        [line] = [x for x in (where / "bench.md").read_text().splitlines() if x.startswith("| majority")]
        return line.split(" | ")[:-1]

    def openings(where: Path) -> list[dict]:
        [ledger] = (where / "lockbox").glob("*.json")
        return json.loads(ledger.read_text())["openings"]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert bench(whole).returncode == 0
    kill_at(monkeypatch, "metrics.json:3:while:tree")  # the benchmark and its multirun, in the third fold
    assert killed(bench(broken))
    kill_at(monkeypatch, "wall_seconds.txt:1:after")  # between the cross-validation and the final model
    assert killed(bench(broken))
    kill_at(monkeypatch, "bench.md:1:while")  # while writing the table
    assert killed(bench(broken))
    assert not (broken / "bench.md").exists()
    kill_at(monkeypatch, None)
    assert list(broken.rglob(".*.tmp"))  # what the kills left half written ...
    assert bench(broken).returncode == 0
    assert not list(broken.rglob(".*.tmp"))  # ... is removed by the next run
    assert row(broken) == row(whole)
    assert [o["completed"] for o in openings(broken)] == [o["completed"] for o in openings(whole)] == [True]
