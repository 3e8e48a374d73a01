"""Helpers for the benchmarks: write a named section of docs/benchmarks.md atomically.

python benchmarks/bench_data.py      # (make bench-data) each script replaces its own section
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

from cremad_lit.io import write_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nMeasured by `make bench` (each section says which target wrote it). Ratios compare numbers from one run.\n"


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def section_lines(name: str) -> list[str]:
    """The lines of a section now in docs/benchmarks.md (none if absent): rows not re-run keep what they said."""
    text = DOC.read_text() if DOC.exists() else ""
    section = re.search(f"<!-- {name}:start -->(.*?)<!-- {name}:end -->", text, re.S)
    return section.group(1).splitlines() if section else []


def write_section(name: str, body: str) -> Path:
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text(DOC, text)  # whole or not at all: a benchmark killed while writing leaves the last table
    return DOC


def run_timed(args: list[str], out: Path, label: str, env: dict | None = None) -> None:
    """Run one project command (`args` after the interpreter) from the repo, printing it, and write its own seconds
    to `out`/wall_seconds.txt: a rerun that reads finished runs back still reports what a fresh clone spends."""
    import subprocess
    import sys
    import time

    print(f"== {label}: {' '.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *args],
        cwd=DOC.parent.parent,
        check=True,
        env={**os.environ, "WANDB_SILENT": "true", **(env or {})},
    )
    write_text(Path(out) / "wall_seconds.txt", f"{time.perf_counter() - started:.0f}\n")
