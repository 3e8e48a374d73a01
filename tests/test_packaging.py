"""The built wheel is enough: installed without the repository (no conf/ beside it), a command composes its config,
and the wheel alone trains and evaluates (`python -m cremad_lit train|evaluate`)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO, TINY, common, run_cli


@pytest.mark.slow
def test_the_wheel_installed_elsewhere_runs_a_command(real_names_root, synthetic_root, tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("cremad_lit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cremad_lit/conf/eda.yaml" in names and "cremad_lit/conf/data/cremad.yaml" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    # From an empty folder, with the installed copy first on the path (the editable one of this checkout after it).
    work = tmp_path / "work"
    work.mkdir()

    def installed(command: str, *args: str):
        return run_cli(
            "-c",
            "import os, runpy, sys, cremad_lit; "
            "assert cremad_lit.__file__.startswith(os.environ['PYTHONPATH']), cremad_lit.__file__; "
            f"sys.argv = ['cremad_lit', '{command}', *sys.argv[1:]]; runpy.run_module('cremad_lit', run_name='__main__')",
            *args,
            cwd=work,
            python_path=str(target),
        )

    result = installed("eda", f"data.root={real_names_root}", "hydra.run.dir=eda")
    assert "7442 clips" in result.stdout
    assert json.loads((work / "eda" / "summary.json").read_text())["n_clips"] == 7442
    # train and evaluate are commands of the package: no train.py needed
    installed(
        "train",
        *common(synthetic_root, tmp_path),
        *TINY,
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "data.modalities=[audio]",
        "data.cache=off",  # decoded as read: the clips of two batches and the test actors, no cache to fill
        "logger=none",
        "hydra.run.dir=run",
    )
    trained = json.loads((work / "run" / "metrics.json").read_text())
    installed("evaluate", f"ckpt_path={trained['checkpoint']}", "hydra.run.dir=eval")
    assert json.loads((work / "eval" / "metrics.json").read_text())["accuracy"] == pytest.approx(
        trained["accuracy"]
    )
