"""End to end through the real commands: train.py (real Trainer, W&B offline), evaluate.py, multirun + report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image

from cremad_lit.data.labels import EMOTIONS
from tests.conftest import TINY, on_synthetic, read_wandb_log, run_cli


@pytest.mark.slow
def test_train_writes_metrics_plots_split_and_checkpoints(trained_run):
    run_dir, result, _ = trained_run
    assert f"run dir: {run_dir.resolve()}" in result.stdout
    # The console a new user reads: Lightning's lines once, no advertisement, no warnings about settings we never set.
    console = result.stdout + result.stderr
    assert console.count("Seed set to") == 1 and "GPU available" in console
    for noise in ("💡 Tip", "anonymous setting", "LeafSpec", "pin_memory"):
        assert noise not in console, noise
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= metrics[key] <= 1.0
    # the field's names: WAR = accuracy, UAR = the mean of the per-class recalls, computed from the confusion matrix
    matrix = metrics["confusion_matrix"]
    recalls = [row[i] / sum(row) for i, row in enumerate(matrix) if sum(row)]
    assert metrics["war"] == metrics["accuracy"] and metrics["uar"] == pytest.approx(
        sum(recalls) / len(recalls)
    )
    assert metrics["protocol"]["by"] == "actor" and metrics["protocol"]["leaky"] is False
    assert set(metrics["per_class_f1"]) == set(EMOTIONS)
    split = pd.read_csv(run_dir / "split.csv")
    test_actors = sorted(split.loc[split["split"] == "test", "actor_id"])
    assert metrics["test_actors"] == test_actors and metrics["n_test"] == 16 * len(test_actors)
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_test"]
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == metrics["n_test"] and set(predictions["clip_id"].str[:4].astype(int)) == set(
        test_actors
    )
    assert (predictions["label"] == predictions["pred"]).mean() == pytest.approx(
        metrics["accuracy"], abs=1e-6
    )
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [0, 1] and history[["train/loss", "val/loss"]].notna().all().all()
    log_text = (run_dir / "train.log").read_text()  # one readable line per epoch, also with progress bars off
    assert f"{run_dir.name} epoch 1: train/loss" in log_text and "val/acc" in log_text
    assert metrics["monitor"]["val/loss"] == pytest.approx(
        history["val/loss"].min(), rel=1e-6
    )  # the best, returned to sweepers
    for png in ("confusion.png", "curves.png"):
        with Image.open(run_dir / png) as image:
            assert image.width > 400
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and metrics["checkpoint"].endswith(".ckpt")
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["version"] and "git_commit" in info
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)  # plain data only
    assert checkpoint["cremad_lit"]["config"]["model"]["video_backbone"]["name"] == "test_efficientnet"
    assert checkpoint["cremad_lit"]["emotions"] == list(EMOTIONS)


@pytest.mark.slow
def test_wandb_offline_run_holds_config_curves_and_test_media(trained_run):
    run_dir, _, _ = trained_run
    [offline] = list((run_dir / "wandb").glob("offline-run-*"))
    assert list(offline.glob("run-*.wandb"))  # the run's own log, which `wandb sync` uploads
    records = read_wandb_log(next(offline.glob("run-*.wandb")))

    def items(kind: str, field: str) -> dict:
        found = {}
        for record in records:
            if record.WhichOneof("record_type") == kind:
                for item in getattr(getattr(record, kind), field):
                    found[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        return found

    config = items("config", "update")
    assert (
        config["model"]["video_backbone"]["name"] == "test_efficientnet"
        and config["monitor"]["metric"] == "val/loss"
    )
    assert {"val/loss", "val/acc", "train/loss_epoch", "epoch"} <= set(
        items("history", "item")
    )  # per-epoch curves
    summary = items("summary", "update")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert summary["test/accuracy"] == pytest.approx(metrics["accuracy"])
    files = offline / "files"
    media = files / "media"
    assert list((media / "images").glob("test/confusion_matrix_image_*.png"))
    # what the video branch saw: the run dir's contact sheet, logged as an image
    assert (run_dir / "faces.png").is_file() and list((media / "images").glob("data/faces_*.png"))
    assert list((media / "table").rglob("confusion_matrix*.table.json"))
    per_class = json.loads(next((media / "table").rglob("per_class*.table.json")).read_text())
    assert per_class["columns"] == ["emotion", "f1", "support", "recall"] and [
        row[0] for row in per_class["data"]
    ] == list(EMOTIONS)

    # A readable run: named by its own overrides (not where its data live), grouped, typed and tagged.
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert "model=tiny" in run.display_name and "trainer.max_epochs=2" in run.display_name
    assert "data.root" not in run.display_name and "paths." not in run.display_name
    assert run.run_group == "train" and run.job_type == "train"
    assert set(run.tags) == {"model:tiny", "modalities:audio+video", "dataset:cremad", "split:actor"}
    # The per-clip predictions table: one row per test clip, with the frame strip, the audio and the Mel image.
    predictions = json.loads(next((media / "table").rglob("predictions*.table.json")).read_text())
    assert predictions["columns"][:6] == ["clip_id", "actor", "true", "predicted", "correct", "confidence"]
    assert predictions["columns"][-3:] == ["frames", "audio", "mel"]
    assert len(predictions["data"]) == metrics["n_test"]
    assert [row[-3:] for row in predictions["data"]] == [["Image", "Audio", "Image"]] * metrics["n_test"]
    # The media travel in the table's artifact: one audio file and two images (frames, Mel) per clip.
    [artifact] = [
        r.artifact
        for r in records
        if r.WhichOneof("record_type") == "artifact" and "predictions" in r.artifact.name
    ]
    entries = {e.path: e for e in artifact.manifest.contents}
    audio = [p for p in entries if p.startswith("media/audio/") and p.endswith(".wav")]
    images = [p for p in entries if p.startswith("media/images/") and p.endswith(".png")]
    assert len(audio) == metrics["n_test"] and len(images) == 2 * metrics["n_test"]
    strips = [Image.open(entries[p].local_path).size for p in images]
    assert (64, 32) in strips  # 2 frames of 32 px side by side (the others: 64x128 Mel images)
    by_clip = {r[0]: r for r in predictions["data"]}
    csv = pd.read_csv(run_dir / "predictions.csv").set_index("clip_id")
    for clip_id, line in csv.iterrows():
        assert by_clip[clip_id][2] == line["label"] and by_clip[clip_id][3] == line["pred"]


@pytest.mark.slow
def test_evaluate_reproduces_the_test_metrics(trained_run):
    run_dir, _, tmp = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    eval_dir = tmp / "eval"
    result = run_cli(
        "evaluate.py",
        f"ckpt_path={metrics['checkpoint']}",
        f"hydra.run.dir={eval_dir}",
        f"paths.log_dir={tmp / 'logs'}",
    )
    assert "accuracy" in result.stdout
    again = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "per_class_f1"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert again["confusion_matrix"] == metrics["confusion_matrix"] and again["n_test"] == metrics["n_test"]
    assert again["actors"] == metrics["test_actors"]
    everything = run_cli(
        "evaluate.py", f"ckpt_path={metrics['checkpoint']}", "subset=all", f"hydra.run.dir={tmp / 'eval-all'}"
    )
    assert json.loads((tmp / "eval-all" / "metrics.json").read_text())["n_test"] == 96
    assert "on 96 clips (all)" in everything.stdout


@pytest.mark.slow
def test_train_and_evaluate_test_the_same_ema_weights(synthetic_root, tmp_path):
    """The demo's configuration (EMA weights, augmentation, early stopping): train.py's test and evaluate.py on the
    checkpoint it tested give the same numbers for every clip, and those are the averaged weights, not the raw ones."""
    run_dir = tmp_path / "run"
    run_cli(
        "train.py",
        "experiment=demo",
        *on_synthetic(synthetic_root, tmp_path),
        *TINY,
        "logger=none",
        "trainer.max_epochs=3",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged), (
        "EMA should differ from the raw weights"
    )

    run_cli("evaluate.py", f"ckpt_path={metrics['checkpoint']}", f"hydra.run.dir={tmp_path / 'eval'}")
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in (
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "per_class_f1",
        "confusion_matrix",
    ):
        assert again[key] == metrics[key], key
    columns = [f"p_{e}" for e in EMOTIONS]
    tested = pd.read_csv(run_dir / "predictions.csv").set_index("clip_id")[columns]
    evaluated = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("clip_id")[columns]
    assert len(tested) == metrics["n_test"] > 0
    assert (tested.loc[evaluated.index] - evaluated).abs().to_numpy().max() < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("model", ["effnet_lstm", "resnet_vit_lstm"])
def test_paper_models_fit_and_test_for_real(synthetic_root, tmp_path, model):
    """The paper's two architectures (no weights, small frames) through one real train/val/test pass."""
    result = run_cli(
        "train.py",
        *on_synthetic(synthetic_root, tmp_path),
        f"model={model}",
        "model.video_backbone.pretrained=false",
        "model.audio_backbone.pretrained=false",
        "model.video_backbone.input_size=64",
        "trainer=cpu",
        "logger=none",
        "data.preprocessing.frames=2",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.pin_memory=false",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_test"] == 32 and "run dir:" in result.stdout


@pytest.mark.slow
def test_multirun_jobs_and_report(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "train.py",
        "-m",
        *on_synthetic(synthetic_root, tmp_path),
        *TINY,
        "hydra/launcher=parallel",  # two jobs at a time in joblib workers, which do not share the command line
        "trainer.max_epochs=1",
        "data.modalities=[audio],[audio,video]",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert jobs == ["0", "1", "2", "3"]
    # W&B: each run named by what varies in the sweep, all in one group named after the multirun.
    names, groups = [], set()
    for job in jobs:
        records = read_wandb_log(next((sweep / job / "wandb").rglob("run-*.wandb")))
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        names.append(run.display_name)
        groups.add(run.run_group)
    assert sorted(names) == sorted(
        f"data.modalities={m} seed={s}" for m in ("[audio]", "[audio,video]") for s in (0, 1)
    )
    assert groups == {f"train/{sweep.name}"}
    result = run_cli("-m", "cremad_lit", "report", str(sweep))
    table = pd.read_csv(sweep / "report.csv", index_col=0)
    # Labels hold only what varied between configurations; the seeds are the spread.
    assert sorted(table.index) == ["data.modalities=[audio,video]", "data.modalities=[audio]"]
    assert (table["runs"] == 2).all()
    by_label = {}  # each configuration's seeds, read from the jobs' own overrides and metrics
    for job in jobs:
        overrides = (sweep / job / ".hydra" / "overrides.yaml").read_text()
        label = "data.modalities=[audio,video]" if "[audio,video]" in overrides else "data.modalities=[audio]"
        by_label.setdefault(label, []).append(
            json.loads((sweep / job / "metrics.json").read_text())["accuracy"]
        )
    for label, seeds in by_label.items():
        assert table.loc[label, "accuracy_std"] == pytest.approx(pd.Series(seeds).std(ddof=1), abs=1e-4)
    assert "± " in (sweep / "report.md").read_text() and "F1 per emotion" in (sweep / "report.md").read_text()
    assert (sweep / "report.png").is_file() and (sweep / "report_per_class.png").is_file()
    assert "accuracy" in result.stdout


@pytest.mark.slow
def test_clear_errors_for_common_mistakes(tmp_path):
    missing = run_cli(
        "train.py",
        f"data.root={tmp_path / 'nope'}",
        "model=tiny",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'a'}",
        check=False,
    )
    assert (
        missing.returncode != 0
        and "no dataset at data.root" in missing.stderr
        and "data=synthetic" in missing.stderr
    )
    # The design card's command on a machine with no dataset: the data root is checked before any weight download.
    card = run_cli(
        "train.py",
        "model=effnet_lstm",
        f"data.root={tmp_path / 'nope'}",
        f"hydra.run.dir={tmp_path / 'card'}",
        check=False,
        env={"HF_HUB_OFFLINE": "1"},
    )
    last = card.stderr.strip().splitlines()[-1]
    assert card.returncode == 1 and last.startswith(f"error: no dataset at data.root={tmp_path / 'nope'}")
    bad_ckpt = run_cli(
        "evaluate.py", f"ckpt_path={tmp_path / 'gone.ckpt'}", f"hydra.run.dir={tmp_path / 'b'}", check=False
    )
    assert bad_ckpt.returncode != 0 and "does not exist" in bad_ckpt.stderr
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    not_ours = run_cli("evaluate.py", f"ckpt_path={other}", f"hydra.run.dir={tmp_path / 'c'}", check=False)
    assert not_ours.returncode != 0 and "not a cremad-lit checkpoint" in not_ours.stderr
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint at all\n")
    for path, what in ((truncated, "truncated, damaged or another kind of file"), (foreign, "another kind")):
        result = run_cli(
            "evaluate.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / path.stem}", check=False
        )
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert last.startswith(f"error: {path} (") and what in last
    unknown = run_cli("train.py", "model=efficientnet_b7_lstm", check=False)
    assert (
        unknown.returncode != 0
        and "efficientnet_b7_lstm" in unknown.stderr
        and "effnet_lstm" in unknown.stderr
    )
