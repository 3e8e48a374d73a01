"""Exploratory data analysis of a CREMA-D tree (the paper's Section III-C), as charts and one report page.

    python -m cremad_lit.eda data.root=/path/to/CREMA-D
    python -m cremad_lit.eda data=synthetic                    # the built-in dataset (generated if missing)

Writes into its run dir: summary.json (clip and actor counts, counts per statement, emotion, intensity, gender),
counts.csv, a bar and a pie chart per variable, emotion x intensity and emotion x gender cross-tabs, and report.md.
Names only: nothing is decoded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from cremad_lit.data.cache import write_json
from cremad_lit.data.catalog import build_catalog
from cremad_lit.pipeline import check_data_root
from cremad_lit.plots import plot_counts, plot_crosstab

log = logging.getLogger(__name__)
VARIABLES = ("statement", "emotion", "intensity", "gender")
CROSSTABS = (("emotion", "intensity"), ("emotion", "gender"))


def summarise(clips: pd.DataFrame) -> dict:
    return {
        "n_clips": int(len(clips)),
        "n_actors": int(clips["actor_id"].nunique()),
        "unique": {v: sorted(clips[v].astype(str).unique().tolist()) for v in VARIABLES},
        "counts": {
            v: {str(k): int(n) for k, n in clips[v].value_counts().sort_index().items()} for v in VARIABLES
        },
        "actors_by_gender": {
            str(k): int(n) for k, n in clips.groupby("gender")["actor_id"].nunique().items()
        },
    }


def write_eda(clips: pd.DataFrame, out: str | Path, root: str = "") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(clips)
    write_json(out / "summary.json", summary)
    rows = [
        {"variable": v, "value": k, "clips": n} for v in VARIABLES for k, n in summary["counts"][v].items()
    ]
    pd.DataFrame(rows).to_csv(out / "counts.csv", index=False)

    lines = [
        f"# CREMA-D EDA: {root}",
        "",
        f"**{summary['n_clips']:,} clips** from **{summary['n_actors']} actors** "
        f"({', '.join(f'{n} {g}' for g, n in summary['actors_by_gender'].items())}).",
        "",
    ]
    for variable in VARIABLES:
        counts = clips[variable].value_counts().sort_index()
        bar = plot_counts(counts, out / f"{variable}_bar.png", f"Clips per {variable}")
        pie = plot_counts(counts, out / f"{variable}_pie.png", f"Share of clips per {variable}", kind="pie")
        lines += [
            f"## {variable.capitalize()} ({len(counts)} unique values)",
            "",
            "| value | clips | share |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {k} | {n:,} | {n / len(clips):.1%} |" for k, n in counts.items()]
        lines += ["", f"![{variable} bar]({bar.name}) ![{variable} pie]({pie.name})", ""]
    for rows_var, cols_var in CROSSTABS:
        table = pd.crosstab(clips[rows_var], clips[cols_var])
        table.to_csv(out / f"crosstab_{rows_var}_{cols_var}.csv")
        image = plot_crosstab(
            table, out / f"crosstab_{rows_var}_{cols_var}.png", f"{rows_var} x {cols_var} (clips)"
        )
        lines += [
            f"## {rows_var.capitalize()} x {cols_var}",
            "",
            table.to_markdown() if _has_tabulate() else f"```\n{table}\n```",
            "",
            f"![{rows_var} x {cols_var}]({image.name})",
            "",
        ]
    (out / "report.md").write_text("\n".join(lines))
    return summary


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


@hydra.main(version_base="1.3", config_path="../conf", config_name="eda")
def main(cfg: DictConfig) -> None:
    if cfg.data.get("generate"):  # data=synthetic: write whatever clips are missing
        from cremad_lit.data.synthetic import generate

        generate(cfg.data.root, **cfg.data.generate)
    check_data_root(cfg.data)
    clips = build_catalog(cfg.data.root)
    out = Path(cfg.paths.output_dir)
    summary = write_eda(clips, out, str(cfg.data.root))
    print(
        f"{summary['n_clips']} clips, {summary['n_actors']} actors; EDA report: {(out / 'report.md').resolve()}"
    )


if __name__ == "__main__":
    main()
