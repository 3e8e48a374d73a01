"""Turn a multirun directory into a results table: mean +- std of each metric per configuration, plus every run.

    python train.py -m model=effnet_lstm,resnet_vit_lstm seed=0,1,2        # prints its multirun dir
    python -m cremad_lit.report logs/train/multiruns/<time>

Runs are grouped by their command-line overrides, leaving out the replicate axes (seed, split.fold), so seeds and
folds become the spread. Writes report.csv, report.md, runs.csv and report.png into DIR and prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from cremad_lit import EMOTIONS
from cremad_lit.plots import plot_grouped_bars

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
REPLICATE_KEYS = ("seed", "split.fold")


def _overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []


def collect_runs(root: str | Path) -> pd.DataFrame:
    rows = []
    for metrics_file in sorted(Path(root).glob("**/metrics.json")):
        run_dir = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        overrides = _overrides(run_dir)
        replicate = {
            o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[1]
            for o in overrides
            if o.split("=", 1)[0].lstrip("+~") in REPLICATE_KEYS
        }
        config = (
            " ".join(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in REPLICATE_KEYS)
            or "(defaults)"
        )
        row = {"config": config, "run": str(run_dir.relative_to(root)), **replicate}
        row.update({m: metrics[m] for m in METRICS})
        row.update({f"f1_{e}": metrics["per_class_f1"][e] for e in EMOTIONS})
        row["n_test"] = metrics["n_test"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(
            f"no metrics.json under {root}: point at a multirun (or run) directory of train.py"
        )
    return pd.DataFrame(rows)


def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = list(METRICS) + [f"f1_{e}" for e in EMOTIONS]
    grouped = runs.groupby("config", sort=False)[columns]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).fillna(0.0).add_suffix("_std"))
    summary.insert(0, "runs", runs.groupby("config", sort=False).size())
    return summary


def to_markdown(summary: pd.DataFrame) -> str:
    header = "| configuration | runs | " + " | ".join(METRICS) + " |"
    lines = [header, "| --- | ---: |" + " ---: |" * len(METRICS)]
    for config, row in summary.iterrows():
        cells = " | ".join(f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in METRICS)
        lines.append(f"| `{config}` | {int(row['runs'])} | {cells} |")
    return "\n".join(lines)


def write_report(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    runs = collect_runs(root)
    summary = summarise_runs(runs)
    runs.to_csv(root / "runs.csv", index=False)
    summary.to_csv(root / "report.csv")
    (root / "report.md").write_text(
        f"# Results: {root}\n\nmean ± std over seeds/folds\n\n{to_markdown(summary)}\n\n![report](report.png)\n"
    )
    plot_grouped_bars(
        summary[["accuracy_mean", "f1_macro_mean"]].rename(columns=lambda c: c.replace("_mean", "")),
        root / "report.png",
        "Test metrics per configuration (mean over runs)",
        "score",
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Summarise a train.py multirun directory.")
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    summary = write_report(args.directory)
    print(to_markdown(summary))
    print(f"\nwritten: {Path(args.directory).resolve() / 'report.md'} (and report.csv, runs.csv, report.png)")


if __name__ == "__main__":
    main()
