"""Shared fixtures: the real CREMA-D metadata and samples in ../shared, and small generated datasets.

make test        # or: .venv/bin/python -m pytest -m "not slow"
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared"))
META = SHARED / "cremad-meta"
SAMPLES = SHARED / "cremad-samples"
SAMPLE_FLVS = sorted((SAMPLES / "VideoFlash").glob("*.flv"))


@pytest.fixture(scope="session")
def meta_dir() -> Path:
    if not META.is_dir():
        pytest.skip(f"real CREMA-D metadata not found at {META} (set CREMAD_LIT_SHARED)")
    return META


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLE_FLVS:
        pytest.skip(f"real CREMA-D samples not found at {SAMPLES} (set CREMAD_LIT_SHARED)")
    return SAMPLES


@pytest.fixture(scope="session")
def real_names_root(meta_dir, tmp_path_factory) -> Path:
    """A tree holding the 7,442 real video names as empty placeholder files (names only, as the catalog reads)."""
    root = tmp_path_factory.mktemp("real-names")
    (root / "VideoFlash").mkdir()
    for name in (meta_dir / "VideoFlash.txt").read_text().split():
        (root / "VideoFlash" / name).touch()
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """6 actors (3 male, 3 female) x the IEO statement: 96 real flv + wav clips in the official layout."""
    from cremad_lit.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "cremad", actors=6, sentences=1, seed=0, workers=2)


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory) -> Path:
    from cremad_lit.data.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("kaggle") / "cremad",
        actors=2,
        sentences=1,
        seed=1,
        layout="kaggle",
        workers=2,
    )


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a project command the way a user does (a fresh Python process), returning its output."""
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(args)}\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result
