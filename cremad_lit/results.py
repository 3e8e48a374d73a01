"""Test results into the run dir (metrics.json, confusion.png, predictions.csv) and into W&B when it is on.

from cremad_lit.results import write_results
write_results(run_dir, module.test_results, module.test_predictions, trainer.loggers, task="train",
              tested_on=datamodule.tested_on("test"), model=checkpoint, checkpoint=checkpoint, classes=module.classes)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from cremad_lit.data.crowd_votes import compare_with_model, find_summary_table, human_baseline
from cremad_lit.data.labels import EMOTIONS
from cremad_lit.io import write_json, write_text
from cremad_lit.metrics import per_corpus
from cremad_lit.plots import plot_confusion, plot_grouped_bars
from cremad_lit.record import record

log = logging.getLogger(__name__)


def scores_line(metrics: dict) -> str:
    """The line every command that tests prints (train, evaluate, baseline)."""
    return (
        f"accuracy (WAR) {metrics['accuracy']:.4f}, UAR {metrics['uar']:.4f}, macro F1 {metrics['f1_macro']:.4f} "
        f"on {metrics['n_test']} clips"
    )


def where_line(run_dir: Path, *files: str) -> str:
    """Where a command's results are: its run dir, then each file a person opens first."""
    what = {"metrics.json": "metrics", "confusion.png": "confusion matrix", "curves.png": "curves"}
    return f"run dir: {Path(run_dir).resolve()}" + "".join(
        f"\n  {what[f]}: {Path(run_dir) / f}" for f in files
    )


def write_results(
    run_dir: str | Path,
    results: dict,
    predictions: list[dict],
    loggers=(),
    *,
    task: str,
    tested_on: dict,
    classes,
    model=None,
    checkpoint=None,
    extra: dict | None = None,
    data_root: str | None = None,
    speakers: dict | None = None,
) -> dict:
    """Write predictions.csv, confusion.png (and the human baseline when the root has the votes), then metrics.json:
    the run record (record.py) of `task`, its results, what they were `tested_on`, the `model` they measure and the
    network's `checkpoint`, and `extra`.

    `speakers` (clip_id -> speaker) adds a speaker column, which the report's intervals over speakers resample.
    metrics.json comes last, each file whole (written atomically): a run folder with metrics.json holds every result,
    so a run killed while writing them is read as unfinished (select, report, the benchmarks) and run again."""
    run_dir = Path(run_dir)
    metrics = record(task, results, tested_on, model=model, checkpoint=checkpoint, **(extra or {}))
    corpora = per_corpus(predictions, classes) if tested_on.get("dataset") == "mix" else {}
    if corpora:  # a mix (data=mix): every number per corpus too
        metrics["per_corpus"] = corpora
    votes = find_summary_table(data_root) if data_root else None
    if votes is not None and predictions and tuple(classes) == EMOTIONS:
        baseline = human_baseline(votes, [p["clip_id"] for p in predictions])
        metrics["human_baseline"] = baseline
        comparison = compare_with_model(baseline, results["confusion_matrix"])
        write_text(run_dir / "human_vs_model.csv", comparison.to_csv())
        title = f"Model recall vs crowd accuracy on the same {baseline['n_clips']} clips"
        plot_grouped_bars(comparison, run_dir / "human_vs_model.png", title, "share recognised")
    table = pd.DataFrame(predictions)
    if len(table):
        table["label"] = table["label"].map(lambda i: classes[i])
        table["pred"] = table["pred"].map(lambda i: classes[i])
        probabilities = pd.DataFrame(table.pop("probs").tolist(), columns=[f"p_{e}" for e in classes])
        table = pd.concat([table, probabilities], axis=1)
        if speakers:
            table.insert(1, "speaker", table["clip_id"].map(speakers))
        if corpora:
            table.insert(1, "corpus", table["clip_id"].str.partition("/")[0])
        write_text(run_dir / "predictions.csv", table.to_csv(index=False))
    confusion_png = plot_confusion(results["confusion_matrix"], list(classes), run_dir / "confusion.png")
    write_json(run_dir / "metrics.json", metrics)
    for logger in loggers:
        _log_to_wandb(logger, metrics, predictions, confusion_png, classes)
    return metrics


def _log_to_wandb(logger, metrics: dict, predictions: list[dict], confusion_png: Path, classes) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import wandb

    run = logger.experiment
    per_class = wandb.Table(columns=["emotion", "f1", "support", "recall"])
    for i, emotion in enumerate(classes):
        support = sum(metrics["confusion_matrix"][i])
        recall = metrics["confusion_matrix"][i][i] / support if support else 0.0
        per_class.add_data(emotion, metrics["per_class_f1"][emotion], support, recall)
    payload = {"test/confusion_matrix_image": wandb.Image(str(confusion_png)), "test/per_class": per_class}
    if predictions:
        payload["test/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=[p["label"] for p in predictions],
            preds=[p["pred"] for p in predictions],
            class_names=list(classes),
        )
    run.log(payload)
    for key in ("war", "uar", "accuracy", "precision_macro", "recall_macro", "f1_macro", "n_test"):
        if key in metrics:
            run.summary[f"test/{key}"] = metrics[key]
    for corpus, values in metrics.get("per_corpus", {}).items():
        for key in ("war", "uar", "n_test"):
            run.summary[f"test/{corpus}/{key}"] = values[key]
    run.summary["test/metrics_json"] = json.dumps({k: metrics[k] for k in ("accuracy", "f1_macro")})
