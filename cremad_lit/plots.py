"""Plots a person would rather look at than read: confusion matrices, training curves, count charts.

    from cremad_lit.plots import plot_confusion
    plot_confusion([[5, 1], [0, 6]], ["ANG", "DIS"], "confusion.png")

Every function writes a PNG atomically (temp file + rename) and returns its path. Uses the non-interactive Agg backend.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
# Category labels such as RAVDESS's "01"/"02" look numeric; matplotlib's note about it is noise here.
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
log = logging.getLogger(__name__)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cremad_lit.io import write_atomic  # noqa: E402


def save_figure(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(figure)
    return path


def plot_confusion(
    matrix, labels, path, title: str = "Confusion matrix (rows: true, columns: predicted)"
) -> Path:
    matrix = np.asarray(matrix, dtype=float)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(6.4, 5.4))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if normalised[i, j] > 0.6 else "black"
        axis.text(
            j, i, f"{int(count)}\n{normalised[i, j]:.0%}", ha="center", va="center", fontsize=8, color=colour
        )
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    return save_figure(figure, path)


def plot_curves(history: pd.DataFrame, path, title: str = "Training and validation loss") -> Path:
    """`history` has one row per epoch and columns such as train/loss, val/loss, val/acc."""
    present = [c for c in history if history[c].notna().any()]
    losses = [
        c for c in ("train/loss", "val/loss", "val/loss_only_audio", "val/loss_only_video") if c in present
    ]
    # with an audio-visual net: the fused head's accuracy beside its accuracy with one modality only (balance.py)
    accuracies = [
        c for c in ("train/acc", "val/acc", "val/acc_only_audio", "val/acc_only_video") if c in present
    ]
    figure, axes = plt.subplots(
        1, 2 if accuracies else 1, figsize=(11 if accuracies else 6, 4), squeeze=False
    )
    for column in losses:
        style = "--" if "only" in column else "-"
        axes[0, 0].plot(history["epoch"], history[column], marker="o", linestyle=style, label=column)
    axes[0, 0].set(xlabel="epoch", ylabel="cross-entropy", title=title)
    axes[0, 0].legend()
    if accuracies:
        for column in accuracies:
            style = "--" if "only" in column else "-"
            axes[0, 1].plot(history["epoch"], history[column], marker="o", linestyle=style, label=column)
        axes[0, 1].set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy", ylim=(0, 1))
        axes[0, 1].legend()
    return save_figure(figure, path)


def plot_counts(counts: pd.Series, path, title: str, kind: str = "bar") -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    if kind == "pie":
        axis.pie(
            counts.values,
            labels=[str(i) for i in counts.index],
            autopct="%1.1f%%",
            startangle=90,
            counterclock=False,
        )
        axis.axis("equal")
    else:
        bars = axis.bar([str(i) for i in counts.index], counts.values, color="tab:blue")
        axis.bar_label(bars, fontsize=8)
        axis.set_ylabel("clips")
    axis.set_title(title)
    return save_figure(figure, path)


def plot_crosstab(table: pd.DataFrame, path, title: str) -> Path:
    figure, axis = plt.subplots(figsize=(1.1 * table.shape[1] + 2, 0.5 * table.shape[0] + 1.5))
    axis.imshow(table.values, cmap="Greens")
    for (i, j), value in np.ndenumerate(table.values):
        axis.text(j, i, str(value), ha="center", va="center", fontsize=8)
    axis.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    axis.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    axis.set_title(title)
    return save_figure(figure, path)


def plot_grouped_bars(
    table: pd.DataFrame, path, title: str, ylabel: str, errors: pd.DataFrame | None = None
) -> Path:
    """One group of bars per row of `table`, one bar per column (e.g. metrics per configuration); `errors` (same
    shape) draws error bars, such as the std over runs."""
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(table) + 2), 4))
    width = 0.8 / max(1, table.shape[1])
    for k, column in enumerate(table.columns):
        yerr = errors[column].fillna(0).values if errors is not None else None
        axis.bar(
            np.arange(len(table)) + k * width,
            table[column].values,
            width,
            yerr=yerr,
            capsize=3,
            label=str(column),
        )
    axis.set_xticks(
        np.arange(len(table)) + 0.4 - width / 2,
        [str(i) for i in table.index],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    axis.set(ylabel=ylabel, title=title)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def plot_face_sheet(rows: list[dict], path, title: str = "What the video branch sees") -> Path:
    """A contact sheet: one row per clip (`frames` (T, S, S, 3) uint8, a `label`, `fallback` when no face was
    found and the centre square was used, `landmarks` of an aligned face), the sampled frames side by side. Fallback
    rows get a red frame and say so. Each row is one image (its frames joined with white gaps) on one axis: an axis a
    frame made the sheet of a 16-clip, 8-frame run take seconds."""
    columns = max(len(r["frames"]) for r in rows)
    figure, axes = plt.subplots(
        len(rows), 1, figsize=(0.8 * columns + 1.6, 0.85 * len(rows) + 0.5), squeeze=False
    )
    for axis, row in zip(axes[:, 0], rows, strict=True):
        frames = np.asarray(row["frames"])
        side = frames.shape[1]
        gap = max(side // 20, 1)
        strip = np.full((side, columns * (side + gap) - gap, 3), 255, dtype=np.uint8)
        for j, frame in enumerate(frames):
            strip[:, j * (side + gap) : j * (side + gap) + frame.shape[1]] = frame
        axis.imshow(strip)
        # the clip's five aligned landmarks (eyes, nose, mouth corners), on every frame
        if row.get("landmarks"):
            points = [
                (j * (side + gap) + x * side, y * side)
                for j in range(len(frames))
                for x, y in row["landmarks"]
            ]
            axis.scatter(*zip(*points, strict=True), s=2, c="cyan", linewidths=0)
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_edgecolor("red" if row.get("fallback") else "none")
            spine.set_linewidth(2.5 if row.get("fallback") else 0)
        label = row["label"] + ("\nno face: centre" if row.get("fallback") else "")
        axis.set_ylabel(
            label,
            rotation=0,
            ha="right",
            va="center",
            fontsize=6,
            color="red" if row.get("fallback") else "black",
        )
    figure.suptitle(title, fontsize=8)
    figure.subplots_adjust(hspace=0.08)
    return save_figure(figure, path)


def draw_faces(datamodule, path) -> Path | None:
    """faces.png: what the video branch of a run sees (its DataModule's face_rows); None without cached frames."""
    if "video" not in datamodule.modalities or datamodule.cache is None:
        return None
    rows, title = datamodule.face_rows()
    if not rows:
        log.warning("no cached frames to draw %s from", path)
        return None
    return plot_face_sheet(rows, path, title)
