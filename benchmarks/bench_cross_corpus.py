"""Another corpus and language: the models the lockbox opening trained on RAVDESS 01-15, tested on ASED (Amharic).

    python benchmarks/bench_lockbox.py --open 0.9 --rows linear,ge2e_linear,trio,ge2e_pair   # trains the models
    make bench-cross-corpus          # or: python benchmarks/bench_cross_corpus.py [--rows linear,ge2e_linear]

Each row's `final=all_speakers` model from logs/bench-lockbox/<row>-final/model (RAVDESS actors 01-15, six emotions)
is run by `evaluate.py data=manifest subset=all` on ASED speakers 01-30 (five of the six emotions: no disgust), as a
user evaluates on a corpus of their own. Nothing is chosen on ASED and nothing is retrained: speaker statistics, where
a model uses them, are each ASED speaker's own. ASED's speakers 31-40 are its lockbox (ASED_LOCKBOX, fixed before any
RAVDESS-trained model was run on ASED): left out of the manifest given here, so no model has read them.

Accuracy and UAR (mean recall over the five emotions present), the accuracy's 95% interval by bootstrap over the 30
speakers, the difference paired with the linear model on the same speakers; on all sentences and on the two common
sentences 01-02 alone (ASED's other sentences were written for one emotion: there the words can give it away).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lockbox import ROWS as LOCKBOX_ROWS  # noqa: E402
from bench_lockbox import sweep  # noqa: E402
from common import machine, run_timed, write_section  # noqa: E402

from cremad_lit.io import write_text  # noqa: E402
from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "ased"
LOGS = REPO / "logs" / "bench-cross-corpus"
ASED_LOCKBOX = [f"{speaker:02d}" for speaker in range(31, 41)]  # ASED's own lockbox: never read here
COMMON_SENTENCES = ("01", "02")
ROWS = ["linear", "ge2e_linear", "trio", "trio_network", "trio_ge2e", "ge2e_pair", "ge2e_pair_network"]
REFERENCE = "linear"


def open_manifest() -> Path:
    """ASED's manifest without its lockbox speakers, paths made absolute (written once, atomically)."""
    path = LOGS / "ased-01-30.csv"
    if not path.is_file():
        table = pd.read_csv(ASED / "manifest.csv", dtype=str)
        table = table[~table["speaker"].isin(ASED_LOCKBOX)].copy()
        table["audio_path"] = [str(ASED / p) for p in table["audio_path"]]
        LOGS.mkdir(parents=True, exist_ok=True)
        write_text(path, table.to_csv(index=False))
    return path


def evaluate(row: str, manifest: Path) -> Path | None:
    """The row's RAVDESS-trained model on ASED 01-30 (once; None when the lockbox opening has not trained it)."""
    model = sweep(row, "final") / "model"
    out = LOGS / row
    if (out / "predictions.csv").is_file():
        return out
    if not model.is_dir():
        print(f"== {row}: no model at {model} (run bench_lockbox.py --open first); skipped", flush=True)
        return None
    args = [
        "evaluate.py",
        f"ckpt_path={model}",
        "data=manifest",
        f"data.manifest={manifest}",
        "subset=all",
        "data.num_workers=0",
        "logger=none",
        f"hydra.run.dir={out}",
    ]
    run_timed(args, out, row)
    return out


def predictions(row: str) -> pd.DataFrame | None:
    """The row's predictions on ASED (a member row: that member alone, as evaluate.py writes it in members/<i>/)."""
    _, command, overrides = LOCKBOX_ROWS[row]
    path = LOGS / overrides[0] / "members" / str(overrides[2]) if command == "member" else LOGS / row
    path = path / "predictions.csv"
    return pd.read_csv(path, dtype={"clip_id": str}) if path.is_file() else None


def common_sentences(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["clip_id"].str.split("-").str[1].isin(COMMON_SENTENCES)]


def uar(table: pd.DataFrame) -> float:
    return float((table["label"] == table["pred"]).groupby(table["label"]).mean().mean())


def cells(table: pd.DataFrame | None, reference: pd.DataFrame | None, is_reference: bool) -> list[str]:
    if table is None:
        return ["not run", "", "", ""]
    interval = accuracy_interval(table)
    cells = [
        f"{interval['accuracy']:.3f}",
        f"[{interval['low']:.3f}, {interval['high']:.3f}]",
        f"{uar(table):.3f}",
    ]
    if is_reference or reference is None:
        return [*cells, ""]
    paired = paired_difference(table, reference)
    return [*cells, f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]"]


def table(rows: list[str]) -> str:
    lines = [
        "| model (trained on RAVDESS 01-15, six emotions) | ASED accuracy | 95% interval (30 speakers) | UAR | "
        "vs linear [95%] | sentences 01-02: accuracy | 95% interval | UAR | vs linear [95%] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    reference = predictions(REFERENCE)
    for row in rows:
        found = predictions(row)
        common = None if found is None else common_sentences(found)
        common_reference = None if reference is None else common_sentences(reference)
        every = cells(found, reference, row == REFERENCE)
        spoken = cells(common, common_reference, row == REFERENCE)
        lines.append(f"| {LOCKBOX_ROWS[row][0]} | {' | '.join(every)} | {' | '.join(spoken)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    args = parser.parse_args()
    if not (ASED / "manifest.csv").is_file():
        raise SystemExit(f"ASED not found at {ASED} (set CREMAD_LIT_SHARED)")
    rows = args.rows.split(",")
    manifest = open_manifest()
    for row in rows:
        if LOCKBOX_ROWS[row][1] != "member":
            evaluate(row, manifest)
    clips = len(pd.read_csv(manifest))
    body = (
        "## Another corpus and language: RAVDESS-trained models on ASED (`make bench-cross-corpus`)\n\n"
        f"Machine: {machine()}. The `final=all_speakers` models of the 0.9 lockbox opening (RAVDESS actors 01-15, "
        f"six emotions, nothing re-chosen) evaluated with `evaluate.py data=manifest subset=all` on ASED v1 speakers "
        f"01-30 ({clips} clips, Amharic, five emotions: no disgust, which a six-class model may still predict). "
        f"ASED's speakers {ASED_LOCKBOX[0]}-{ASED_LOCKBOX[-1]} are its own lockbox and were not read. Intervals by "
        "bootstrap over the test speakers; differences paired with the linear model on the same speakers. "
        "Sentences 01-02 are the two said in all five emotions (the voice without the words).\n\n"
        + table(rows)
    )
    write_section("bench-cross-corpus", body)
    print(body)


if __name__ == "__main__":
    main()
