"""The EDA of a corpus: counts, bar and pie charts, cross-tables and one report page (`write_eda`).

Usage and options: commands/eda.py (`python -m cremad_lit eda`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cremad_lit.io import write_json, write_text
from cremad_lit.plots import plot_counts, plot_crosstab

log = logging.getLogger(__name__)
VARIABLES = ("corpus", "statement", "emotion", "intensity", "gender")  # corpus: data=mix only
CROSSTABS = (("emotion", "intensity"), ("emotion", "gender"), ("emotion", "corpus"))


def _variables(clips: pd.DataFrame) -> list[str]:
    """The variables this corpus has (a manifest may have no statement or intensity)."""
    return [v for v in VARIABLES if v in clips and clips[v].notna().any()]


def summarise(clips: pd.DataFrame) -> dict:
    variables = _variables(clips)
    rejected = pd.DataFrame(clips.attrs.get("rejected", []), columns=["path", "reason", "label"])
    return {
        "n_clips": int(len(clips)),
        "n_actors": int(clips["actor_id"].nunique()),
        "unique": {v: sorted(clips[v].dropna().astype(str).unique().tolist()) for v in variables},
        "counts": {
            v: {str(k): int(n) for k, n in clips[v].value_counts().sort_index().items()} for v in variables
        },
        "actors_by_gender": {
            str(k): int(n) for k, n in clips.groupby("gender")["actor_id"].nunique().items()
        },
        "left_out": {
            "files": int(len(rejected)),
            "by_label": {
                str(k): int(n) for k, n in rejected["label"].dropna().value_counts().sort_index().items()
            },
            "by_reason": {str(k): int(n) for k, n in rejected["reason"].value_counts().items()},
        },
    }


def write_eda(clips: pd.DataFrame, out: str | Path, root: str = "") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(clips)
    write_json(out / "summary.json", summary)
    variables = _variables(clips)
    rows = [
        {"variable": v, "value": k, "clips": n} for v in variables for k, n in summary["counts"][v].items()
    ]
    write_text(out / "counts.csv", pd.DataFrame(rows).to_csv(index=False))

    lines = [
        f"# EDA: {root}",
        "",
        f"**{summary['n_clips']:,} clips** from **{summary['n_actors']} actors** "
        f"({', '.join(f'{n} {g}' for g, n in summary['actors_by_gender'].items())}).",
        "",
    ]
    left_out = summary["left_out"]
    if left_out["files"]:
        lines += [f"**{left_out['files']} files left out**:", ""]
        lines += [f"- {reason}: {n}" for reason, n in left_out["by_reason"].items()]
        if left_out["by_label"]:
            lines += [
                "",
                "Left out per original label: "
                + ", ".join(f"{k} {n}" for k, n in left_out["by_label"].items()),
            ]
        lines += [""]
    for variable in variables:
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
        if cols_var not in variables:
            continue
        table = pd.crosstab(clips[rows_var], clips[cols_var])
        write_text(out / f"crosstab_{rows_var}_{cols_var}.csv", table.to_csv())
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
    write_text(out / "report.md", "\n".join(lines))
    return summary


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
