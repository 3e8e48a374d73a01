"""The run record (cremad_lit/record.py): one schema written by every command, read in every version by find_runs."""

from __future__ import annotations

import json

import pytest

from cremad_lit.io import write_json
from cremad_lit.record import SCHEMA, find_runs, read_run, record


def test_records_of_this_version_and_of_0_8_read_the_same(tmp_path):
    """A train run with a classical partner: 0.8 wrote the folder as `checkpoint` and the network's file as
    `network_checkpoint`; 0.9 writes `model` and `checkpoint`, each with one meaning. Both read alike."""
    folder, ckpt = tmp_path / "old", str(tmp_path / "old" / "checkpoints" / "last.ckpt")
    write_json(
        folder / "metrics.json",
        {"task": "train", "accuracy": 0.5, "checkpoint": str(folder), "network_checkpoint": ckpt},
    )
    new = tmp_path / "new"
    tested_on = {"split": "test", "dataset": "ravdess", "test_actors": [3, 4]}
    payload = record(
        "train", {"accuracy": 0.5}, tested_on, model=new, checkpoint=new / "checkpoints" / "last.ckpt"
    )
    write_json(new / "metrics.json", payload)
    old_run, new_run = read_run(folder), read_run(new)
    assert (old_run.schema, new_run.schema) == (1, SCHEMA) and payload["test_actors"] == [3, 4]
    assert old_run.model == str(folder) and old_run.checkpoint == ckpt
    assert new_run.model == str(new) and new_run.checkpoint.endswith("last.ckpt")
    # A 0.1-0.3 train run (no task, no partner) and a baseline run (its folder is the model).
    write_json(tmp_path / "older" / "metrics.json", {"accuracy": 0.4, "checkpoint": ckpt})
    write_json(tmp_path / "base" / "members" / "x" / "metrics.json", {"task": "member", "accuracy": 0.3})
    write_json(tmp_path / "base" / "metrics.json", {"task": "baseline", "accuracy": 0.3})
    runs = find_runs(tmp_path)
    assert [r.dir.name for r in runs] == ["base", "x", "new", "old", "older"]
    assert [r.task for r in find_runs(tmp_path, tasks=("train",))] == ["train"] * 3
    assert read_run(tmp_path / "older").model == ckpt and read_run(tmp_path / "base").model == str(
        tmp_path / "base"
    )
    with pytest.raises(ValueError, match="task"):
        record("fit", {}, {})
    assert json.loads((new / "metrics.json").read_text())["schema"] == SCHEMA
