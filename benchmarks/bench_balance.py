"""Modality balance on the synthetic set whose voice is the easy modality: each balance= method, 3 seeds, actor-disjoint.

    make bench-balance          # or: python benchmarks/bench_balance.py   (~15 min on 2 CPU cores; resumes)

`data=synthetic_imbalanced` (24 actors, every facial cue at 30% strength; the voice as in the demo) with the demo model
(`experiment=demo`), each method of conf/balance/ and the two unimodal models, seeds 0-2 (each seed its own actor split),
two single-threaded jobs at a time as `make demo` runs them. Per method: the fused test accuracy (mean ± std over seeds,
and a 95% interval over the test speakers of all seeds pooled), each modality's accuracy inside the fused model (the
probe: the other modality at its training mean), OGM-GE's imbalance ratio, and the training speed relative to plain
joint training (clips/s, from each run's history.csv).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

from cremad_lit.uncertainty import accuracy_interval, paired_difference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "logs" / "bench-balance"
METHODS = ["none", "aux_heads", "ogm_ge", "mmpareto", "modality_dropout", "pmr"]
SEEDS = "0,1,2"
COMMON = ["experiment=demo", "data=synthetic_imbalanced", "paths.data_dir=data", "logger=none"]


def sweep(name: str, *overrides: str) -> Path:
    """One Hydra multirun as a user runs it (skipped when all its runs have their metrics)."""
    folder = OUT / name
    expected = len(SEEDS.split(",")) * (len(METHODS) if name == "methods" else 2)
    if len(list(folder.glob("*/metrics.json"))) == expected:
        return folder
    with open(OUT / f"{name}.log", "w") as log:
        subprocess.run(
            [sys.executable, "train.py", "--multirun", "hydra/launcher=parallel", *COMMON, *overrides,
             f"seed={SEEDS}", f"hydra.sweep.dir={folder}"],
            cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    return folder


def runs_of(folder: Path) -> pd.DataFrame:
    rows = []
    for metrics_file in sorted(folder.glob("*/metrics.json")):
        run = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        settings = dict(line.strip("- '\"").split("=", 1) for line in overrides.splitlines() if "=" in line)
        history = pd.read_csv(run / "history.csv")
        predictions = pd.read_csv(run / "predictions.csv", dtype={"clip_id": str, "speaker": str})
        rows.append(
            {
                "method": settings.get("balance", settings.get("data.modalities")),
                "seed": settings["seed"],
                "accuracy": metrics["accuracy"],
                **(metrics.get("modality_balance") or {}),
                "clips_per_s": history["speed/clips_per_s"].mean(),
                "predictions": predictions.assign(speaker=predictions["speaker"] + "-" + settings["seed"]),
            }
        )
    return pd.DataFrame(rows)


def cell(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    methods = runs_of(sweep("methods", f"balance={','.join(METHODS)}"))
    alone = runs_of(sweep("unimodal", "data.modalities=[audio],[video]"))
    plain_speed = methods.loc[methods["method"] == "none", "clips_per_s"].mean()
    table = [
        "| model | fused accuracy (3 seeds) | 95% interval (speakers) | minus none, paired | audio only, inside "
        "| video only, inside | imbalance audio/video | training time vs none |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    plain = pd.concat(list(methods.loc[methods["method"] == "none", "predictions"]))
    for method in METHODS:
        group = methods[methods["method"] == method]
        pooled = pd.concat(list(group["predictions"]))
        interval = accuracy_interval(pooled)
        paired = paired_difference(pooled, plain) if method != "none" else None
        gain = f"{paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]" if paired else ""
        table.append(
            f"| `balance={method}` | {cell(group['accuracy'])} | [{interval['low']:.3f}, {interval['high']:.3f}] | "
            f"{gain} | {cell(group['acc_only_audio'])} | {cell(group['acc_only_video'])} | "
            f"{cell(group['imbalance_audio_video'])} | {plain_speed / group['clips_per_s'].mean():.2f}x |"
        )
    for modality, label in (
        ("[audio]", "audio alone (its own model)"),
        ("[video]", "video alone (its own model)"),
    ):
        group = alone[alone["method"] == modality]
        interval = accuracy_interval(pd.concat(list(group["predictions"])))
        table.append(
            f"| {label} | {cell(group['accuracy'])} | [{interval['low']:.3f}, {interval['high']:.3f}] | | | | | |"
        )
    body = "\n".join(
        [
            "## Modality balance on the imbalanced synthetic set (`make bench-balance`)",
            "",
            f"Machine: {machine()}. `train.py -m experiment=demo data=synthetic_imbalanced balance=...` and the two "
            "unimodal models, seeds 0, 1, 2 (each its own actor split: 16 training, 4 validation, 4 test actors). "
            "Inside: the fused head with the other modality's embeddings at their training mean. Time: the training "
            "steps' clips/s of plain joint training over the method's (two jobs at a time on 2 cores).",
            "",
            *table,
        ]
    )
    print(body)
    print(f"wrote {write_section('balance', body)}")


if __name__ == "__main__":
    main()
