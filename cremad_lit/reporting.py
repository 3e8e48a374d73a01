"""Run records -> results tables: mean ± std, intervals over speakers, paired comparisons (`write_report`).

Usage and options: commands/report.py (`python -m cremad_lit report`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from cremad_lit.data.labels import EMOTIONS
from cremad_lit.io import remove_dead_writers_files, write_text
from cremad_lit.plots import plot_grouped_bars
from cremad_lit.record import find_runs
from cremad_lit.uncertainty import LEVEL, RESAMPLES, accuracy_interval, paired_difference

RESAMPLES_TEXT = f"{RESAMPLES} resamples"

# WAR (weighted average recall = accuracy) first, then UAR (unweighted average recall = mean per-class recall), the
# field's two headline numbers; stored under metrics.json's older names too, which every run since 0.1 has.
METRICS = ("accuracy", "recall_macro", "f1_macro", "precision_macro")
BALANCE_KEYS = ("acc_only_audio", "acc_only_video", "imbalance_audio_video")
METRIC_NAMES = {
    "accuracy": "WAR (accuracy)",
    "recall_macro": "UAR (macro recall)",
    "f1_macro": "macro F1",
    "precision_macro": "macro precision",
}
REPLICATE_KEYS = ("seed", "split.fold", "split.inner_fold")
# Overrides that say where things are or how a run was chosen (its label says that), not what was run.
LOCATION_KEYS = (
    "selection",
    "hydra.",
    "paths.",
    "data.root",
    "data.manifest",
    "data.cache",
    "data.num_workers",
    "data.prepare_workers",
    "logger",
)
HUMAN_CHANNELS = ("voice", "face", "audiovisual")
SELECTION_LABELS = {
    "inner": "inner fold: for choosing only, not a result",
    "nested": "chosen by nested selection on its training speakers",
}
SELECTING_HERE = (
    "These rows share their test speakers: picking the best of them by these numbers selects on those speakers, "
    "and the picked number is then optimistic. Fix the choice beforehand, or choose with `python -m cremad_lit "
    "select` (nested), and confirm it on a lockbox (`split.lockbox`, opened once).\n\n"
)


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []
    pairs = (o.split("=", 1) for o in overrides if "=" in o)
    return {key.lstrip("+~"): value for key, value in pairs if not key.lstrip("+~").startswith(LOCATION_KEYS)}


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per metrics.json under `root`: its settings, replicate values, metrics and per-class F1."""
    rows = []
    for run in find_runs(root):
        run_dir, metrics, task = run.dir, run.metrics, run.task
        settings = _overrides(run_dir)
        if task == "member":  # one member of an ensemble (members/*/), alone: the ensemble's own row has it
            continue
        if task == "baseline":
            settings.setdefault("method", metrics.get("method", "egemaps_logreg"))
        row = {
            "task": task,
            "settings": {k: v for k, v in settings.items() if k not in REPLICATE_KEYS},
            "run": str(run_dir.relative_to(root)),
            **{k: settings[k] for k in REPLICATE_KEYS if k in settings},
        }
        row.update({m: metrics[m] for m in METRICS})
        row.update({f"f1_{e}": f1 for e, f1 in metrics["per_class_f1"].items()})
        row["n_test"] = metrics["n_test"]
        row["per_corpus"] = metrics.get("per_corpus")  # a mix: its corpora's numbers (per_corpus_markdown)
        for key in BALANCE_KEYS:  # audio-visual runs: each modality inside the fused model (balance.py)
            if key in (metrics.get("modality_balance") or {}):
                row[key] = metrics["modality_balance"][key]
        predictions = run_dir / "predictions.csv"
        with_speakers = predictions.is_file() and "speaker" in pd.read_csv(predictions, nrows=0).columns
        row["predictions"] = str(predictions) if with_speakers else ""
        row["split_by"] = metrics.get("split_by", "actor")
        row["lockbox_opened_before"] = (metrics.get("lockbox") or {}).get("opened_before", 0)
        row["selected"] = selection_level(metrics)
        for channel in HUMAN_CHANNELS:
            if metrics.get("human_baseline"):
                row[f"human_{channel}"] = metrics["human_baseline"][channel]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {root}: point at a multirun (or run) directory")
    runs = pd.DataFrame(rows)
    for (
        key
    ) in REPLICATE_KEYS:  # a replicate axis some runs lack (inner folds beside outer runs) is its own value
        if key in runs:
            runs[key] = runs[key].fillna("-")
    config = labels(runs)
    # A lockbox seen before this number was made: the number is no longer an estimate on unseen people.
    config = [
        f"{c} [lockbox opened {n} time(s) before]" if n else c
        for c, n in zip(config, runs["lockbox_opened_before"], strict=True)
    ]
    config = [
        f"{c} [{SELECTION_LABELS[s]}]" if s else c for c, s in zip(config, runs["selected"], strict=True)
    ]
    runs.insert(0, "config", config)
    return runs.drop(columns="settings")


def selection_level(metrics: dict) -> str:
    """At what level a run's recipe was chosen: "inner" (a run that only serves a nested choice), "nested" (the
    recipe a nested selection chose for this fold, tested on speakers no choice saw), or "" (not recorded: a
    recipe fixed beforehand, or one a person picks by looking at this table)."""
    if (metrics.get("protocol") or {}).get("nested"):
        return "inner"
    return (metrics.get("selection") or {}).get("level", "")


def class_names(runs: pd.DataFrame) -> list[str]:
    """The classes of the runs' per-class F1 columns: the six first, then any others (8-class RAVDESS runs)."""
    found = [c[3:] for c in runs.columns if c.startswith("f1_") and c != "f1_macro"]
    return [e for e in EMOTIONS if e in found] + sorted(e for e in found if e not in EMOTIONS)


def labels(runs: pd.DataFrame) -> list[str]:
    """Per run: the task (when tasks differ) and only the settings that differ between runs."""
    keys = sorted({k for settings in runs["settings"] for k in settings})
    varying = [k for k in keys if len({s.get(k) for s in runs["settings"]}) > 1]
    mixed_tasks = runs["task"].nunique() > 1
    result = []
    for task, settings in zip(runs["task"], runs["settings"], strict=True):
        parts = [task] if mixed_tasks and task != "train" else []
        parts += [f"{k}={settings.get(k, 'default')}" for k in varying]
        result.append(" ".join(parts) or ("all runs" if not mixed_tasks else task))
    return result


def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = list(METRICS) + [f"f1_{e}" for e in class_names(runs)]
    grouped = runs.groupby("config", sort=False)[columns]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).fillna(0.0).add_suffix("_std"))
    summary.insert(0, "runs", runs.groupby("config", sort=False).size())
    return summary


def human_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The crowd's accuracy on the same test clips (mean ± std over the runs that had crowd votes)."""
    columns = [f"human_{c}" for c in HUMAN_CHANNELS if f"human_{c}" in runs]
    if not columns:
        return pd.DataFrame()
    first = runs[runs["config"] == runs["config"].iloc[0]]  # each configuration tests the same clips
    return pd.DataFrame(
        {
            "runs": [int(first[c].notna().sum()) for c in columns],
            "accuracy_mean": [first[c].mean() for c in columns],
            "accuracy_std": [first[c].std(ddof=1) if first[c].notna().sum() > 1 else 0.0 for c in columns],
        },
        index=[f"human crowd ({c.removeprefix('human_')})" for c in columns],
    )


def reading(runs: pd.DataFrame, summary: pd.DataFrame) -> str:
    """One line: the best configuration by mean accuracy, and on how many shared seeds/folds it beat every other."""
    best = summary["accuracy_mean"].idxmax()
    score = f"{summary.loc[best, 'accuracy_mean']:.3f} ± {summary.loc[best, 'accuracy_std']:.3f} accuracy"
    if len(summary) < 2:
        return f"Reading: one configuration, {score} over {int(summary.loc[best, 'runs'])} runs."
    line = SELECTING_HERE + f"Reading: `{best}` is best ({score})"
    replicate = [k for k in REPLICATE_KEYS if k in runs]
    if not replicate:
        return line + f", ahead of {len(summary) - 1} other configuration(s) on average."
    scores = runs.pivot_table(index=replicate, columns="config", values="accuracy")
    shared = scores.dropna()
    wins = int((shared[best].to_numpy()[:, None] > shared.drop(columns=best).to_numpy()).all(axis=1).sum())
    return (
        line
        + f", ahead of every other configuration on {wins} of {len(shared)} shared {'/'.join(replicate)} values."
    )


def pooled_predictions(runs: pd.DataFrame, config: str) -> pd.DataFrame | None:
    """Every test prediction of one configuration's runs, or None when a run lacks the speaker column."""
    paths = runs.loc[runs["config"] == config, "predictions"]
    if (paths == "").any() or paths.isna().any():
        return None
    return pd.concat(
        [pd.read_csv(p, dtype={"speaker": str, "clip_id": str}) for p in paths], ignore_index=True
    )


def add_intervals(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    summary = summary.copy()
    for config in summary.index:
        predictions = pooled_predictions(runs, config)
        if predictions is not None:
            interval = accuracy_interval(predictions)
            summary.loc[config, ["accuracy_low", "accuracy_high", "speakers"]] = (
                interval["low"],
                interval["high"],
                interval["speakers"],
            )
    return summary


def choose_reference(runs: pd.DataFrame, summary: pd.DataFrame, reference: str | None) -> str | None:
    """The row others are compared with: the one named (exactly, else the one label containing it), else the
    strongest baseline row."""
    if reference:
        if reference in summary.index:
            return reference
        matches = [c for c in summary.index if reference in c]
        if len(matches) != 1:
            raise ValueError(
                f"--reference {reference!r} matches {matches or 'no row'}; rows: {list(summary.index)}"
            )
        return matches[0]
    baselines = summary.loc[summary.index.isin(runs.loc[runs["task"] == "baseline", "config"])]
    return baselines["accuracy_mean"].idxmax() if len(baselines) else None


def paired_table(runs: pd.DataFrame, summary: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each other row against `reference`: shared folds/seeds better / tied / worse, the mean per-run difference, and
    the pooled difference with its interval over the speakers both were tested on."""
    replicate = [k for k in REPLICATE_KEYS if k in runs]
    rows = {}
    against = pooled_predictions(runs, reference)
    for config in summary.index:
        if config == reference:
            continue
        row = {}
        scores = runs.pivot_table(index=replicate, columns="config", values="accuracy") if replicate else None
        if scores is not None and {config, reference} <= set(scores.columns):  # both have seeds/folds
            shared = scores[[config, reference]].dropna()
            difference = shared[config] - shared[reference]
            row.update(
                shared_runs=len(shared),
                better=int((difference > 0).sum()),
                tied=int((difference == 0).sum()),
                worse=int((difference < 0).sum()),
                mean_run_difference=float(difference.mean()) if len(shared) else float("nan"),
            )
        mine = pooled_predictions(runs, config)
        if mine is not None and against is not None:
            paired = paired_difference(mine, against)
            row.update(
                difference=paired["difference"],
                low=paired["low"],
                high=paired["high"],
                speakers=paired["speakers"],
            )
        rows[config] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def paired_markdown(paired: pd.DataFrame, reference: str) -> str:
    lines = [
        f"Paired with `{reference}` (accuracy difference; {LEVEL:.0%} interval by bootstrap over the shared test speakers):",
        "",
        "| configuration | better / tied / worse runs | mean difference per run | pooled difference | interval | speakers |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config, row in paired.iterrows():
        runs_cell = (
            f"{int(row['better'])} / {int(row['tied'])} / {int(row['worse'])} of {int(row['shared_runs'])}"
            if "better" in row and not pd.isna(row.get("better"))
            else ""
        )
        mean = (
            f"{row['mean_run_difference']:+.3f}"
            if not pd.isna(row.get("mean_run_difference", float("nan")))
            else ""
        )
        if "difference" in row and not pd.isna(row.get("difference")):
            pooled = f"{row['difference']:+.3f}"
            interval = f"[{row['low']:+.3f}, {row['high']:+.3f}]"
            speakers = str(int(row["speakers"]))
        else:
            pooled = interval = speakers = ""
        lines.append(f"| `{config}` | {runs_cell} | {mean} | {pooled} | {interval} | {speakers} |")
    return "\n".join(lines)


def _cell(row, metric: str) -> str:
    mean = row.get(f"{metric}_mean")
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f} ± {row[f'{metric}_std']:.3f}"


def _interval_cell(row) -> str:
    low = row.get("accuracy_low")
    if low is None or pd.isna(low):
        return ""
    return f"[{low:.3f}, {row['accuracy_high']:.3f}] ({int(row['speakers'])})"


def to_markdown(summary: pd.DataFrame) -> str:
    header = (
        "| configuration | runs | "
        + " | ".join(METRIC_NAMES[m] for m in METRICS)
        + f" | WAR {LEVEL:.0%} interval (speakers) |"
    )
    lines = [header, "| --- | ---: |" + " ---: |" * (len(METRICS) + 1)]
    for config, row in summary.iterrows():
        cells = " | ".join(_cell(row, m) for m in METRICS)
        lines.append(f"| `{config}` | {int(row['runs'])} | {cells} | {_interval_cell(row)} |")
    return "\n".join(lines)


def balance_markdown(runs: pd.DataFrame) -> str:
    """Audio-visual rows: the fused model's accuracy beside its accuracy with one modality only, mean ± std."""
    if "imbalance_audio_video" not in runs or not runs["imbalance_audio_video"].notna().any():
        return ""
    rows = runs[runs["imbalance_audio_video"].notna()].groupby("config", sort=False)
    lines = [
        "## Each modality inside the fused model\n",
        "The fused head with the other modality's embeddings replaced by their training mean (mean ± std over the "
        "runs); imbalance: OGM-GE's ratio of the summed true-class probabilities, audio only over video only (1: "
        "balanced, above 1: the voice dominates).\n",
        "| configuration | runs | fused accuracy | audio only | video only | imbalance audio/video |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config, group in rows:
        cells = " | ".join(
            f"{group[c].mean():.3f} ± {group[c].std(ddof=1) if len(group) > 1 else 0:.3f}"
            for c in ("accuracy", *BALANCE_KEYS)
        )
        lines.append(f"| `{config}` | {len(group)} | {cells} |")
    return "\n".join(lines) + "\n\n"


def per_corpus_markdown(runs: pd.DataFrame) -> str:
    """Runs on a mix (data=mix): each corpus's WAR and UAR (mean ± std over the runs) and the WAR's interval over
    that corpus's test speakers, from the pooled predictions' rows of that corpus."""
    if "per_corpus" not in runs or not runs["per_corpus"].notna().any():
        return ""
    lines = [
        "## Per corpus\n",
        "Each corpus of a mix alone: WAR and UAR (over the classes its test clips have), mean ± std over the runs; "
        "the interval is over that corpus's test speakers.\n",
        "| configuration | corpus | runs | WAR | interval | UAR | clips |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    mixed = runs[runs["per_corpus"].notna()]
    for config, group in mixed.groupby("config", sort=False):
        predictions = pooled_predictions(runs, config)
        for corpus in sorted({c for per in group["per_corpus"] for c in per}):
            values = pd.DataFrame([per[corpus] for per in group["per_corpus"] if corpus in per])
            cells = [
                f"{values[k].mean():.3f} ± {values[k].std(ddof=1) if len(values) > 1 else 0:.3f}"
                for k in ("war", "uar")
            ]
            interval = ""
            if predictions is not None and "corpus" in predictions:
                found = accuracy_interval(predictions[predictions["corpus"] == corpus])
                interval = f"[{found['low']:.3f}, {found['high']:.3f}] ({found['speakers']} speakers)"
            lines.append(
                f"| `{config}` | {corpus} | {len(values)} | {cells[0]} | {interval} | {cells[1]} | "
                f"{int(values['n_test'].sum())} |"
            )
    return "\n".join(lines) + "\n\n"


def per_class_markdown(summary: pd.DataFrame) -> str:
    names = [
        c[3:-5]
        for c in summary.columns
        if c.startswith("f1_") and c.endswith("_mean") and c != "f1_macro_mean"
    ]
    lines = ["| configuration | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for config, row in summary.iterrows():
        if names and row[[f"f1_{e}_mean" for e in names]].notna().any():
            cells = (f"{row[f'f1_{e}_mean']:.2f}" if not pd.isna(row[f"f1_{e}_mean"]) else "" for e in names)
            lines.append(f"| `{config}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    root: str | Path, reference: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, str | None]:
    """report.md/.csv, runs.csv, paired.csv and the plots; returns the table, the paired table and its reference."""
    root = Path(root)
    remove_dead_writers_files(root, recursive=True)  # what killed runs or reports left half written
    runs = collect_runs(root)
    summary = add_intervals(runs, summarise_runs(runs))
    humans = human_rows(runs)
    table = pd.concat([summary, humans]) if len(humans) else summary
    # Each file whole or not at all (a report killed while writing leaves the last one): atomic writes.
    write_text(root / "runs.csv", runs.drop(columns="per_corpus").to_csv(index=False))
    write_text(root / "report.csv", table.to_csv())
    chosen = choose_reference(runs, summary, reference) if len(summary) > 1 else None
    paired = paired_table(runs, summary, chosen) if chosen else None
    paired_section = ""
    if paired is not None and len(paired):
        write_text(root / "paired.csv", paired.to_csv())
        paired_section = paired_markdown(paired, chosen) + "\n\n"
    leaky = (
        " Some runs use a split with speakers on both sides (split.by=clip, or leaky clip lists): LEAKY, not "
        "comparable with speaker-disjoint splits."
        if (runs["split_by"] == "clip").any()
        else ""
    )
    write_text(
        root / "report.md",
        f"# Results: {root}\n\nTest metrics, mean ± std over seeds/folds (runs per row): WAR (weighted average "
        "recall, i.e. accuracy) first, then UAR (unweighted average recall, the mean of the per-class recalls); the "
        "interval is over test "
        f"speakers (bootstrap, {RESAMPLES_TEXT}).{leaky}\n\n{to_markdown(table)}\n\n"
        f"{reading(runs, summary)}\n\n{paired_section}{per_corpus_markdown(runs)}{balance_markdown(runs)}"
        f"![report](report.png)\n\n## F1 per emotion (mean)\n\n{per_class_markdown(summary)}\n\n"
        "![per class](report_per_class.png)\n",
    )
    bars = table[["accuracy_mean"]].rename(columns={"accuracy_mean": "accuracy"})
    errors = table[["accuracy_std"]].rename(columns={"accuracy_std": "accuracy"})
    bars["f1_macro"], errors["f1_macro"] = table["f1_macro_mean"], table["f1_macro_std"]
    plot_grouped_bars(
        bars, root / "report.png", "Test metrics per configuration (mean ± std over runs)", "score", errors
    )
    per_class = summary[[f"f1_{e}_mean" for e in class_names(runs)]].rename(columns=lambda c: c[3:-5])
    plot_grouped_bars(
        per_class, root / "report_per_class.png", "F1 per emotion per configuration (mean over runs)", "F1"
    )
    return table, paired, chosen
