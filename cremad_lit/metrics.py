"""The metrics every run reports: torchmetrics during training, and the same from a list of predictions.

    from cremad_lit.metrics import results_from_predictions
    results_from_predictions([{"label": 0, "pred": 0, "probs": [...]}, ...], classes)["uar"]

war (weighted average recall) = accuracy; uar (unweighted average recall) = mean per-class recall; macro precision
and F1, per-class F1 and the confusion matrix beside them. The LightningModule (module.py), evaluate's ensembles and the
classical baselines all produce their metrics.json through here.
"""

from __future__ import annotations

import torch
from torchmetrics import ConfusionMatrix, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def make_metrics(num_classes: int, sync: bool = True) -> MetricCollection:
    """`sync=False` for metrics computed from predictions already gathered from every rank."""
    options = {"sync_on_compute": sync}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **options),
            "precision_macro": MulticlassPrecision(num_classes, average="macro", **options),
            "recall_macro": MulticlassRecall(num_classes, average="macro", **options),
            "f1_macro": MulticlassF1Score(num_classes, average="macro", **options),
            "f1_per_class": MulticlassF1Score(num_classes, average="none", **options),
            "confusion": ConfusionMatrix(task="multiclass", num_classes=num_classes, **options),
        }
    )


def metrics_from_values(values: dict, classes) -> dict:
    """Test metrics under the field's names (war: weighted average recall = accuracy; uar: unweighted average recall
    = mean per-class recall) and the older ones (accuracy, recall_macro), which earlier runs and tools read."""
    return {
        "war": float(values["acc"]),
        "uar": float(values["recall_macro"]),
        "accuracy": float(values["acc"]),
        "precision_macro": float(values["precision_macro"]),
        "recall_macro": float(values["recall_macro"]),
        "f1_macro": float(values["f1_macro"]),
        "classes": list(classes),
        "per_class_f1": {e: float(v) for e, v in zip(classes, values["f1_per_class"], strict=True)},
        "confusion_matrix": values["confusion"].int().tolist(),
        "n_test": int(values["confusion"].sum()),
    }


def results_from_predictions(predictions: list[dict], classes) -> dict:
    """Accuracy, macro P/R/F1, per-class F1 and the confusion matrix of per-clip predictions ({label, probs})."""
    metrics = make_metrics(len(classes), sync=False)
    metrics.update(
        torch.tensor([p["probs"] for p in predictions]), torch.tensor([p["label"] for p in predictions])
    )
    return metrics_from_values(metrics.compute(), classes)


def per_corpus(predictions: list[dict], classes) -> dict:
    """{corpus: {war, uar, n_test, classes}} of a mix's predictions (clip ids `corpus/clip`); {} for one corpus. Each
    corpus's UAR is over the classes its test clips have (ASED has no disgust: 5 classes, not 6 with one at zero)."""
    groups: dict[str, list[dict]] = {}
    for p in predictions:
        corpus, found, _ = str(p["clip_id"]).partition("/")
        if not found:
            return {}
        groups.setdefault(corpus, []).append(p)
    if len(groups) < 2:
        return {}
    table = {}
    for corpus, group in sorted(groups.items()):
        labels = torch.tensor([p["label"] for p in group])
        right = torch.tensor([p["pred"] for p in group]) == labels
        present = sorted(set(labels.tolist()))
        recalls = [float(right[labels == c].float().mean()) for c in present]
        table[corpus] = {
            "war": float(right.float().mean()),
            "uar": sum(recalls) / len(recalls),
            "n_test": len(group),
            "classes": [classes[c] for c in present],
        }
    return table
