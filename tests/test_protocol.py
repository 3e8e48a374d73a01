"""Research protocol: kill + resume, reproducibility, k-fold report, 2-process DDP, SLURM config, predict, human baseline."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from cremad_lit.checkpointing import AtomicCheckpointIO
from cremad_lit.data.crowd_votes import human_baseline
from tests.conftest import META, REPO, SAMPLE_FLVS, kill_at, run_cli, train_args


def args(root: Path, tmp: Path, *extra: str) -> list[str]:
    """train.py's tiny settings on the suite's synthetic corpus and its shared cache."""
    return train_args(root, tmp, *extra, shared_cache=True)


def outcome(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    assert (history["speed/clips_per_s"] > 0).all() and history["speed/data_wait_share"].between(0, 1).all()
    learning = history.drop(
        columns=[c for c in history if c.startswith("speed/")]
    )  # timings differ run to run
    return {k: metrics[k] for k in ("accuracy", "f1_macro", "confusion_matrix", "test_actors")}, learning


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_one(synthetic_root, tmp_path, monkeypatch):
    settings = [
        "trainer.max_epochs=4",
        "callbacks.early_stopping.patience=10",
        "trainer.deterministic=true",
        "seed=3",
    ]
    reference = tmp_path / "reference"
    run_cli(*args(synthetic_root, tmp_path, *settings, "logger=none", f"hydra.run.dir={reference}"))

    killed = tmp_path / "killed"
    kill_at(monkeypatch, "last.ckpt:1:after")  # kill -9 just after the first checkpoint is on disk
    run = run_cli(*args(synthetic_root, tmp_path, *settings, f"hydra.run.dir={killed}"), check=False)
    kill_at(monkeypatch, None)
    assert run.returncode == -signal.SIGKILL
    last = killed / "checkpoints" / "last.ckpt"
    assert last.exists() and not (killed / "metrics.json").exists(), (
        "the kill must land after the first checkpoint, before the end"
    )
    epoch_at_kill = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert epoch_at_kill < 3

    env = {**os.environ, "WANDB_SILENT": "true"}
    resumed = subprocess.run(  # as a user resumes it: the script the run wrote
        ["bash", str(killed / "resume.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics, history = outcome(killed)
    reference_metrics, reference_history = outcome(reference)
    assert list(history["epoch"]) == [0, 1, 2, 3]  # the planned epochs, in the same run dir
    assert metrics == reference_metrics
    pd.testing.assert_frame_equal(history, reference_history, rtol=1e-5)
    assert (
        len({p.name.rsplit("-", 1)[-1] for p in (killed / "wandb").glob("offline-run-*")}) == 1
    )  # the same W&B run


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def crash(obj, handle, *a, **k):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_kfold_multirun_reports_mean_and_std_across_folds(synthetic_root, tmp_path):
    sweep = tmp_path / "folds"
    run_cli(
        *args(
            synthetic_root,
            tmp_path,
            "-m",
            "logger=none",
            "trainer.max_epochs=1",
            "split.folds=3",
            "split.fold=0,1,2",
            f"hydra.sweep.dir={sweep}",
        )
    )
    tested = []
    for job in ("0", "1", "2"):
        split = pd.read_csv(sweep / job / "split.csv")
        tested += list(split.loc[split["split"] == "test", "actor_id"])
    assert sorted(tested) == list(range(1001, 1007))  # every actor tested exactly once
    run_cli("-m", "cremad_lit", "report", str(sweep))
    summary = pd.read_csv(sweep / "report.csv", index_col=0)
    runs = pd.read_csv(sweep / "runs.csv")
    assert len(summary) == 1 and summary["runs"].iloc[0] == 3 and sorted(runs["split.fold"]) == [0, 1, 2]
    assert summary["accuracy_mean"].iloc[0] == pytest.approx(runs["accuracy"].mean())
    assert summary["accuracy_std"].iloc[0] == pytest.approx(runs["accuracy"].std(ddof=1))


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(synthetic_root, tmp_path):
    run_dir = tmp_path / "ddp"
    run_cli(
        *args(
            synthetic_root,
            tmp_path,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=2",
            "balance=mmpareto",  # its gradients and every balance statistic are summed over the two ranks
            f"hydra.run.dir={run_dir}",
        )
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = pd.read_csv(run_dir / "split.csv")
    assert (
        metrics["n_test"] == 16 * (split["split"] == "test").sum()
    )  # every test clip once, gathered over both ranks
    assert len(pd.read_csv(run_dir / "predictions.csv")["clip_id"].unique()) == metrics["n_test"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run
    assert not list(tmp_path.glob("logs/train/runs/*"))  # one output directory: the ranks share it
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert 0 <= metrics["modality_balance"]["acc_only_audio"] <= 1  # the masked evaluations, over both ranks


def test_slurm_launcher_config_and_unique_run_dirs(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.partition == "gpu"
    assert re.search(r"_\d{6}$", cfg.hydra.run.dir) and re.search(
        r"_\d{6}$", cfg.hydra.sweep.dir
    )  # microseconds
    commands = [
        [
            sys.executable,
            "-m",
            "cremad_lit",
            "eda",
            f"data.root={META.parent / 'cremad-samples'}",
            f"paths.log_dir={tmp_path}",
        ]
        for _ in range(3)
    ]
    processes = [
        subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands
    ]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    assert len(list((tmp_path / "eda" / "runs").iterdir())) == 3  # started in the same second, three run dirs


@pytest.mark.slow
def test_predict_on_real_clips_and_any_name(tiny_checkpoint, kaggle_root, tmp_path, samples_dir):
    renamed = tmp_path / "inputs" / "an interview.flv"
    renamed.parent.mkdir()
    shutil.copy(SAMPLE_FLVS[0], renamed)
    shutil.copy(next(kaggle_root.glob("*.mp4")), tmp_path / "inputs" / "clip.mp4")
    (tmp_path / "inputs" / "broken.mkv").write_bytes(b"not a video at all")
    out = tmp_path / "predict"
    inputs = ",".join(f"'{p}'" for p in SAMPLE_FLVS)
    result = run_cli(
        "-m",
        "cremad_lit",
        "predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=[{inputs},'{tmp_path / 'inputs'}']",
        f"hydra.run.dir={out}",
    )
    predictions = json.loads((out / "predictions.json").read_text())
    good = [p for p in predictions if "probabilities" in p]
    assert len(good) == 8 and [p for p in predictions if "error" in p][0]["file"].endswith("broken.mkv")
    for p in good:
        assert (
            sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            and p["prediction"] in p["probabilities"]
        )
        assert (out / f"{Path(p['file']).stem}.png").is_file()
    assert len(pd.read_csv(out / "predictions.csv")) == 9 and "an interview.flv" in result.stdout


def test_human_baseline_over_all_clips(meta_dir):
    result = human_baseline(meta_dir / "summaryTable.csv")
    assert result["n_clips"] == 7442
    assert (round(result["voice"], 3), round(result["face"], 3), round(result["audiovisual"], 3)) == (
        0.416,
        0.663,
        0.722,
    )
    assert result["per_class"]["HAP"]["face"] > result["per_class"]["HAP"]["voice"]


@pytest.mark.slow
def test_evaluation_reports_the_human_baseline_on_the_same_clips(
    tiny_checkpoint, synthetic_root, tmp_path, meta_dir
):
    root = tmp_path / "with-votes"
    shutil.copytree(synthetic_root, root)
    (root / "processedResults").mkdir()
    shutil.copy(meta_dir / "summaryTable.csv", root / "processedResults" / "summaryTable.csv")
    out = tmp_path / "eval"
    run_cli(
        "evaluate.py",
        f"ckpt_path={tiny_checkpoint}",
        f"data.root={root}",
        "subset=all",
        f"hydra.run.dir={out}",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    clips = pd.read_csv(out / "predictions.csv")["clip_id"]
    assert metrics["human_baseline"] == human_baseline(
        meta_dir / "summaryTable.csv", clips
    )  # JSON keeps floats exactly
    assert metrics["human_baseline"]["n_clips"] == metrics["n_test"] == 96
    comparison = pd.read_csv(out / "human_vs_model.csv", index_col=0)
    assert (
        list(comparison.columns) == ["model", "human_voice", "human_face", "human_audiovisual"]
        and len(comparison) == 6
    )
    assert (out / "human_vs_model.png").is_file()
    # The report puts the crowd beside the model, on the same clips.
    run_cli("-m", "cremad_lit", "report", str(out))
    report = pd.read_csv(out / "report.csv", index_col=0)
    for channel in ("voice", "face", "audiovisual"):
        assert report.loc[f"human crowd ({channel})", "accuracy_mean"] == pytest.approx(
            metrics["human_baseline"][channel]
        )
